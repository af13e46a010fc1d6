"""The ``medeir`` console command's entry point: ``--help`` and ``--version`` import no torch.

Why a top-level module and not ``medeir_rag.cli``: ``import medeir_rag`` registers the
``medeir`` model type with transformers' Auto classes (so that ``import medeir_rag`` then
``SentenceTransformer(path)`` works), and registering means importing transformers and
torch, seconds of work. Python runs ``medeir_rag/__init__.py`` before any ``medeir_rag.*``
module, so a light entry point has to live outside the package.

- ``medeir --version`` and ``medeir --help`` (or no arguments) are answered here from the
  standard library: the version and the command table are read from the package's source
  files as literals (``ast.literal_eval``), without importing them. ``medeir_rag/cli/__init__.py``
  keeps the one ``SUBCOMMANDS`` table; it must stay a literal dict.
- Everything else goes to ``medeir_rag.cli.main``, which imports the package.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PACKAGE = "medeir_rag"
VERSION_FLAGS = ("--version", "-V")
HELP_FLAGS = ("-h", "--help")


def package_dir() -> Path:
    """The ``medeir_rag`` source folder, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)  # a top-level name: nothing is imported
    if spec is None or not spec.origin:
        raise ModuleNotFoundError(f"the {PACKAGE} package is not installed")
    return Path(spec.origin).parent


def read_literal(path: Path, name: str):
    """The value of the module-level ``name = <literal>`` in the Python file ``path``."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
            return ast.literal_eval(node.value)
    raise LookupError(f"{path}: no module-level `{name} = <literal>`")


def version() -> str:
    """``medeir_rag.__version__``, read from ``medeir_rag/__init__.py``."""
    return read_literal(package_dir() / "__init__.py", "__version__")


def subcommands() -> dict[str, tuple[str, str | None, str]]:
    """``medeir_rag.cli.SUBCOMMANDS``, read from ``medeir_rag/cli/__init__.py``."""
    return read_literal(package_dir() / "cli" / "__init__.py", "SUBCOMMANDS")


def usage(commands: Mapping[str, Sequence]) -> str:
    """The text of ``medeir --help``."""
    lines = ["usage: medeir <command> [options]", "       medeir --version", "", "commands:"]
    lines += [f"  {name:<18} {entry[2]}" for name, entry in commands.items()]
    lines += ["", "run `medeir <command> --help` for the options of one command"]
    return "\n".join(lines)


def answer_light(argv: Sequence[str], commands: Mapping[str, Sequence] | None = None) -> int | None:
    """Print the help or the version and return 0 when ``argv`` asks for one; else ``None``."""
    if len(argv) == 1 and argv[0] in VERSION_FLAGS:
        print(f"{PACKAGE} {version()}")
        return 0
    if not argv or argv[0] in HELP_FLAGS:
        print(usage(subcommands() if commands is None else commands))
        return 0
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """The ``medeir`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    answered = answer_light(argv)
    if answered is not None:
        return answered
    try:
        from medeir_rag.cli import main as full_main  # imports torch and transformers
    except KeyboardInterrupt:
        print("medeir: interrupted", file=sys.stderr)
        return 130
    return full_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
