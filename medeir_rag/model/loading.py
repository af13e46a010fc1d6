"""``quiet_loading``: our model loads and saves print no transformers progress bars.

transformers 5 draws a tqdm bar for every ``from_pretrained`` ("Loading weights", in
``transformers.core_model_loading``) and every ``save_pretrained`` ("Writing model shards").
For a 35-tensor model that is noise on stderr each time a command or component loads its
model. Inside ``quiet_loading()`` those bars are off; on leaving, transformers' and
huggingface_hub's progress-bar settings are put back as they were, so the caller's own
bars (and ``SentenceTransformer.encode``'s) are untouched.

A user who asks transformers for loading detail, ``TRANSFORMERS_VERBOSITY=info`` (or
``debug``, or ``transformers.logging.set_verbosity_info()``), keeps the bars.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Turn transformers' progress bars off for the duration of the block (see the module doc)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils import logging as hf_logging

    if hf_logging.get_verbosity() <= logging.INFO or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hub_was_disabled = are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # also turns huggingface_hub's off
    try:
        yield
    finally:
        with warnings.catch_warnings():  # hub warns when HF_HUB_DISABLE_PROGRESS_BARS=1 keeps its own off
            warnings.simplefilter("ignore")
            hf_logging.enable_progress_bar()
        if hub_was_disabled:
            disable_progress_bars()
