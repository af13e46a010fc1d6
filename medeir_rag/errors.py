"""One family of errors for every mistake in medeir's input, and the checks that raise them.

Design choices:

- **One base class.** ``MedeirError`` marks a problem the user can fix (a mistyped path, a
  corrupt file, a bad argument, a collection built with another model). The ``medeir``
  command prints such an error as one line, ``medeir <command>: <message>``, and exits 1;
  any other exception is a bug and keeps its traceback. Ctrl-C exits 130.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/errors.py``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
REPLACEMENT_CHARACTER = "\ufffd"


class MedeirError(Exception):
    """A mistake in medeir's input that the user can fix; the message says what and where."""


class MissingPathError(MedeirError, FileNotFoundError):
    """A file, folder or model directory that was named does not exist."""


class NotAFolderError(MedeirError, NotADirectoryError):
    """A path names a file where a folder is needed (a model directory, the Qdrant folder)."""


class InvalidArgumentError(MedeirError, ValueError):
    """An argument is out of range or does not fit (``chunk_size``, ``top_k``, ``--device``, ...)."""


class InvalidTextError(MedeirError, ValueError):
    """A text cannot be tokenised: it contains a lone surrogate code point."""


class MissingDependencyError(MedeirError, ImportError):
    """An optional package that this job needs is not installed; the message gives the extra."""


# ----------------------------------------------------------------------------
# Lone surrogates


def find_lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in ``text``, or ``None`` (fast when there is none)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def replace_lone_surrogates(text: str) -> tuple[str, int]:
    """``(text with every lone surrogate replaced by U+FFFD, how many were replaced)``."""
    if find_lone_surrogate(text) is None:
        return text, 0
    return _LONE_SURROGATE.subn(REPLACEMENT_CHARACTER, text)


def check_text(text: str, name: str) -> None:
    """Raise ``InvalidTextError`` naming ``name`` when ``text`` holds a lone surrogate."""
    position = find_lone_surrogate(text)
    if position is not None:
        raise InvalidTextError(
            f"{name} contains a lone surrogate U+{ord(text[position]):04X} at character {position} "
            "(usually a JSON \\ud800-style escape without its pair), which cannot be encoded as UTF-8; "
            "remove it or replace it, e.g. with medeir_rag.errors.replace_lone_surrogates"
        )


# ----------------------------------------------------------------------------
# The command line


def one_line(error: BaseException) -> str:
    """The error's message on one line (newlines become ``"; "``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def run_command(prog: str, body: Callable[[], int], interrupted: str = "interrupted") -> int:
    """Run a command's ``body``: a ``MedeirError`` is one line and exit 1, Ctrl-C is exit 130.

    Any other exception propagates with its traceback: it is a bug, not a mistake in the input.
    """
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except MedeirError as error:
        print(f"{prog}: {one_line(error)}", file=sys.stderr)
        return 1


__all__ = [
    "InvalidArgumentError",
    "InvalidTextError",
    "MedeirError",
    "MissingDependencyError",
    "MissingPathError",
    "NotAFolderError",
    "check_text",
    "find_lone_surrogate",
    "one_line",
    "replace_lone_surrogates",
    "run_command",
]
