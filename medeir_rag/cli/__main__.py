"""``python -m medeir_rag.cli``: the ``medeir`` command."""

from medeir_rag.cli import main

raise SystemExit(main())
