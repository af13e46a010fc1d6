"""Write the notebooks of the example scripts and run them: ``python examples/make_notebooks.py``.

The scripts are the source of truth for the code (the tests run them). Each is cut at its
``# %%`` lines: the module docstring becomes a markdown cell, a ``# %% [markdown]`` part a
markdown cell (its ``# `` prefixes removed) and every other part a code cell, unchanged. In a
script that ends with an ``if __name__ == "__main__":`` cell, that cell is replaced by the
notebook cells of ``NOTEBOOK_TAILS``: they run ``main()`` on a slice of the data and show the
results as a table and a plot.

The notebooks are then executed in place (nbclient, a kernel of this Python, working folder
``examples/``, the environment of ``KERNEL_ENV``), so they are committed with their outputs.
Machine paths in the outputs (site-packages, the shared data folder, the repository) are
written relative before saving. ``MEDEIR_NOTEBOOK_LIMIT`` sets how many records they read. ``--no-execute`` only writes the
cells; ``--check`` only checks that every notebook's cells (not its outputs) match its script.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
SCRIPTS = ("llamaindex_pubmed.py", "haystack_pubmed_qa.py", "train_tiny_model.py")
CELL_MARKER = "# %%"
MARKDOWN_MARKER = "# %% [markdown]"
MAIN_GUARD = 'if __name__ == "__main__":'
KERNEL_ENV = {  # offline, quiet: no hub, no telemetry, no progress bars in the saved outputs
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HAYSTACK_TELEMETRY_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "TQDM_DISABLE": "1",
    "PYTHONWARNINGS": "ignore:IProgress not found",  # tqdm.auto without ipywidgets
}
CELL_TIMEOUT = 900  # seconds per cell

NOTEBOOK_TAILS = {
    "llamaindex_pubmed.py": '''
# %% [markdown]
# ## Run it on a slice of PubMed
#
# `LIMIT` abstracts (`MEDEIR_NOTEBOOK_LIMIT`, default 200) of the shared PubMed file, or the sample
# corpus bundled with the package when the shared data folder is missing. Qdrant keeps the index
# in a temporary folder, so that the plot below can read the stored vectors back.

# %%
import os
import tempfile
import warnings

from IPython.display import Image, Markdown, display

warnings.filterwarnings("ignore", message="Payload indexes have no effect")  # local-mode Qdrant
LIMIT = int(os.environ.get("MEDEIR_NOTEBOOK_LIMIT", "200"))
QDRANT_PATH = tempfile.mkdtemp(prefix="medeir-llamaindex-")
hits = main([DEFAULT_DATA, "--limit", str(LIMIT), "--top-k", "5", "--qdrant-path", QDRANT_PATH])

# %%
display(Markdown(results_table(hits)))

# %% [markdown]
# Where the query and its hits sit among all the stored chunks (the two principal axes of the
# chunk vectors; cosine similarity is what the retrieval ranks by, so near in this picture
# roughly means similar).

# %%
Image(embedding_space_png(QDRANT_PATH, hits, DEFAULT_QUERY))
''',
    "haystack_pubmed_qa.py": '''
# %% [markdown]
# ## Run it on a slice of PubMed
#
# `LIMIT` abstracts (`MEDEIR_NOTEBOOK_LIMIT`, default 200) of the shared PubMed file, or the sample
# corpus bundled with the package when the shared data folder is missing.

# %%
import os

from IPython.display import Image, Markdown, display

LIMIT = int(os.environ.get("MEDEIR_NOTEBOOK_LIMIT", "200"))
result = main([DEFAULT_DATA, "--limit", str(LIMIT), "--top-k", "5"])

# %%
display(Markdown(results_table(result["documents"])))

# %% [markdown]
# How far the retrieved chunks stand out: the question's cosine similarity to every chunk in the
# store (the retriever returns the highest ones).

# %%
Image(score_histogram_png(result))

# %%
result["document_store"].close()  # embedded Qdrant: one open client at a time
''',
}


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines:
        lines[-1] = lines[-1].rstrip("\n")
    return lines


def split_cells(script: str) -> list[tuple[str, str]]:
    """``(cell_type, source)`` of each ``# %%`` part, blank lines around it removed."""
    cells = []
    for part in script.split(f"\n{CELL_MARKER}")[1:]:
        header, _, body = part.partition("\n")
        if header.strip() == MARKDOWN_MARKER.removeprefix(CELL_MARKER).strip():
            text = "\n".join(line.removeprefix("#").removeprefix(" ") for line in body.strip("\n").splitlines())
            cells.append(("markdown", text))
        elif not header.strip():
            cells.append(("code", body.strip("\n")))
        else:
            raise ValueError(f"unknown cell marker: {CELL_MARKER}{header}")
    return cells


def code_cells(script: str) -> list[str]:
    """The code of each code cell of the script."""
    return [source for kind, source in split_cells(script) if kind == "code"]


def notebook_cells(name: str, script: str) -> list[tuple[str, str]]:
    """The script's docstring and cells, with its ``__main__`` cell replaced by its notebook tail."""
    cells = [("markdown", ast.get_docstring(ast.parse(script)) or ""), *split_cells(script)]
    if name in NOTEBOOK_TAILS:
        if not cells[-1][1].startswith(MAIN_GUARD):
            raise ValueError(f"{name} must end with an `{MAIN_GUARD}` cell")
        cells = cells[:-1] + split_cells(NOTEBOOK_TAILS[name])
    return cells


def notebook_from_script(name: str, script: str) -> dict:
    """An nbformat 4.5 notebook with no outputs."""
    cells = []
    for number, (kind, source) in enumerate(notebook_cells(name, script)):
        cell = {"cell_type": kind, "id": f"cell-{number}", "metadata": {}, "source": _lines(source)}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def cell_sources(notebook: dict) -> list[tuple[str, str]]:
    """What ``--check`` compares: each cell's type and source, outputs ignored."""
    return [(cell["cell_type"], "".join(cell["source"])) for cell in notebook["cells"]]


def render(notebook: dict) -> str:
    """The notebook as ``nbformat.writes`` would write it."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def execute(notebook: dict, cwd: Path, env: dict[str, str] | None = None, timeout: int = CELL_TIMEOUT) -> dict:
    """Run every cell in a fresh kernel of this Python (not whatever ``python3`` kernel is installed).

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell.
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.reads(render(notebook), as_version=4)
    with tempfile.TemporaryDirectory(prefix="medeir-kernel-") as kernels:
        spec_dir = Path(kernels) / "medeir-python"
        spec_dir.mkdir()
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "medeir (this Python)", "language": "python",
        }))
        specs = KernelSpecManager(kernel_dirs=[kernels], ensure_native_kernel=False)
        km = KernelManager(kernel_name="medeir-python", kernel_spec_manager=specs)
        client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False,
                                resources={"metadata": {"path": str(cwd)}})
        client.execute(env={**os.environ, **KERNEL_ENV, **(env or {})})
    nb.metadata["kernelspec"] = notebook["metadata"]["kernelspec"]  # open with the reader's python3 kernel
    return json.loads(nbformat.writes(nb))


def machine_paths() -> list[tuple[str, str]]:
    """This machine's absolute paths and what committed outputs say instead, most specific first:
    site-packages, the shared data folder beside the repository, the repository itself."""
    repo = EXAMPLES_DIR.parent
    return [(sysconfig.get_paths()["purelib"], "<site-packages>"),
            (str(repo.parent / "shared"), "../shared"),
            (str(repo), ".")]


def scrub_paths(notebook: dict, paths: list[tuple[str, str]] | None = None) -> dict:
    """The notebook with this machine's paths replaced in its text outputs, so that what is
    committed names no folder of the machine that ran it (file names may be patient data)."""
    paths = machine_paths() if paths is None else paths

    def scrub(text: str | list[str]) -> str | list[str]:  # nbformat stores text as a string or a list of lines
        if isinstance(text, list):
            return [scrub(line) for line in text]
        for absolute, shown in paths:
            text = text.replace(absolute, shown)
        return text

    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = scrub(output["text"])
            data = output.get("data", {})
            for kind in [k for k in data if k.startswith("text/")]:
                data[kind] = scrub(data[kind])
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the notebooks' cells match the scripts")
    parser.add_argument("--no-execute", action="store_true", help="write the cells without running them (no outputs)")
    parser.add_argument("names", nargs="*", default=list(SCRIPTS), help=f"scripts (default: {' '.join(SCRIPTS)})")
    args = parser.parse_args(argv)
    stale = []
    for name in args.names:
        script = EXAMPLES_DIR / Path(name).with_suffix(".py").name
        target = script.with_suffix(".ipynb")
        notebook = notebook_from_script(script.name, script.read_text(encoding="utf-8"))
        if args.check:
            committed = json.loads(target.read_text(encoding="utf-8")) if target.is_file() else None
            if committed is None or cell_sources(committed) != cell_sources(notebook):
                stale.append(target.name)
            continue
        if not args.no_execute:
            print(f"running {target.name} ...", flush=True)
            notebook = scrub_paths(execute(notebook, EXAMPLES_DIR))
        target.write_text(render(notebook), encoding="utf-8")
        print(f"wrote {target}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python examples/make_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
