"""Where code runs and how reproducibly: the default device and the one seeding function.

Every layer (inference, eval, the training stages) asks here, so "cuda when a GPU is
visible, else cpu" and "seed Python, NumPy and torch" are written once. Imports nothing
from medeir_rag; torch is imported when a function is called.
"""

from __future__ import annotations

import random


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
