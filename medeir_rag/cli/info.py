"""``medeir info``: what a bug report needs (versions, device, bundled model, attention backends)."""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Sequence

from medeir_rag.cli import SUBCOMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    """Print what a bug report needs: versions, device, bundled model, attention backends."""
    parser = argparse.ArgumentParser(prog="medeir info", description=SUBCOMMANDS["info"][2])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the same keys) instead of a table")
    args = parser.parse_args(argv)
    import torch
    import transformers

    import medeir_rag
    from medeir_rag.model.attention import flash_attn_available, triton_available
    from medeir_rag.model.files import DEFAULT_MODEL_NAME, DEFAULT_RERANKER_NAME, bundled_model_path

    rows = [
        ("medeir_rag", medeir_rag.__version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("transformers", transformers.__version__),
        ("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"),
        ("flash-attn", "installed" if flash_attn_available() else "not installed"),
        ("triton (FlexAttention)", "installed" if triton_available() else "not installed"),
    ]
    try:
        import sentence_transformers

        rows.append(("sentence-transformers", sentence_transformers.__version__))
    except ImportError:
        rows.append(("sentence-transformers", "not installed"))
    for name in (DEFAULT_MODEL_NAME, DEFAULT_RERANKER_NAME):
        path = bundled_model_path(name)
        rows.append((f"bundled {name}", str(path) if path.is_dir() else "not installed"))
    if args.json:
        print(json.dumps(dict(rows), indent=2))
        return 0
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
