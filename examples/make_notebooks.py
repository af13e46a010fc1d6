"""Write the notebook copies of the example scripts: ``python examples/make_notebooks.py``.

The scripts are the source of truth (they are what the tests run). Each is cut at its
``# %%`` lines: the module docstring becomes a markdown cell and every other part a code
cell, unchanged. The notebooks are written as plain nbformat-4 JSON, so nothing beyond the
standard library is needed; ``--check`` fails when a notebook is out of date.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
SCRIPTS = ("llamaindex_pubmed.py", "haystack_pubmed_qa.py")
CELL_MARKER = "# %%\n"


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines:
        lines[-1] = lines[-1].rstrip("\n")
    return lines


def code_cells(script: str) -> list[str]:
    """The code of each ``# %%`` cell, with surrounding blank lines removed."""
    return [part.strip("\n") for part in script.split(CELL_MARKER)[1:]]


def notebook_from_script(script: str) -> dict:
    """An nbformat 4.5 notebook: the docstring as markdown, then one code cell per ``# %%`` part."""
    docstring = ast.get_docstring(ast.parse(script)) or ""
    cells = [{"cell_type": "markdown", "id": "cell-0", "metadata": {}, "source": _lines(docstring)}]
    for number, code in enumerate(code_cells(script), start=1):
        cells.append({
            "cell_type": "code", "execution_count": None, "id": f"cell-{number}", "metadata": {},
            "outputs": [], "source": _lines(code),
        })
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the notebooks are up to date")
    args = parser.parse_args(argv)
    stale = []
    for name in SCRIPTS:
        script = EXAMPLES_DIR / name
        target = script.with_suffix(".ipynb")
        text = render(notebook_from_script(script.read_text(encoding="utf-8")))
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python examples/make_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
