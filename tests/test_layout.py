"""The package layout is the architecture: imports run downward, few top-level modules.

Layers, lowest first: ``model``, ``inference``, ``rag``, then ``integrations`` and ``eval``
(side by side: neither imports the other), then ``cli`` (its subcommands call the library,
the evaluation included), then ``training`` (the top-level ``training/`` folder, installed
as ``medeir_rag.training``). A module may import its own layer and the
layers below. ``medeir_rag/__init__.py``, ``errors`` and ``runtime`` are the base every layer
may import; they import nothing from the subpackages (the package ``__init__`` registers the
model classes, so it may import ``model``). ``cli/__init__.py`` dispatches to training stages
by module name only (strings in ``SUBCOMMANDS``), never by import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medeir_rag"
BASE = {"errors", "runtime"}  # top-level modules beside __init__.py
MAX_TOP_LEVEL_MODULES = 4  # __init__, errors, runtime and room for one more
RANK = {"model": 0, "inference": 1, "rag": 2, "integrations": 3, "eval": 3, "cli": 4, "training": 5}


def _sources() -> dict[str, Path]:
    """``layer -> files``: every module of the package and of training/ (assets excluded)."""
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if parts[0] in ("assets", "training"):  # training may be a symlink to ../training
            continue
        files[str(path.relative_to(ROOT))] = path
    for path in sorted((ROOT / "training").rglob("*.py")):
        files[str(path.relative_to(ROOT))] = path
    return files


def _layer(relative: str) -> str:
    parts = Path(relative).parts
    if parts[0] == "training":
        return "training"
    if len(parts) == 2:  # medeir_rag/<module>.py
        return "base"
    return parts[1]


def _imported_layers(path: Path) -> list[tuple[int, str, str]]:
    """``(line, imported module, its layer)`` for every medeir_rag import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "medeir_rag" else [f"medeir_rag.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0 and "training" in path.parts:
            names = ["medeir_rag.training"]
        for name in names:
            parts = name.split(".")
            if parts[0] != "medeir_rag" or len(parts) == 1:
                continue
            found.append((node.lineno, name, parts[1] if parts[1] in RANK else "base"))
    return found


def test_imports_run_downward():
    wrong = []
    for relative, path in _sources().items():
        layer = _layer(relative)
        for line, name, target in _imported_layers(path):
            if target == "base" or target == layer:
                continue
            if layer == "base":
                if relative == "medeir_rag/__init__.py" and target == "model":
                    continue
                wrong.append(f"{relative}:{line} imports {name}: the base modules import no subpackage")
            elif RANK[target] > RANK[layer] or (RANK[target] == RANK[layer] and target != layer):
                wrong.append(f"{relative}:{line} imports {name}: {layer} may not import {target}")
    assert wrong == []


def test_rag_never_imports_eval():
    assert [name for rel, path in _sources().items() if _layer(rel) == "rag"
            for _, name, target in _imported_layers(path) if target == "eval"] == []


def test_few_top_level_modules():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    assert set(top) <= {"__init__"} | BASE, top


@pytest.mark.parametrize("layer", [layer for layer in RANK if layer != "training"])
def test_every_layer_is_a_package(layer):
    assert (PACKAGE / layer / "__init__.py").is_file()
