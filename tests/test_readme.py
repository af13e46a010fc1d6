"""Every code block of README.md runs as written: the README itself is parsed at test time.

The rule, by the language on the opening fence:

- ```python blocks run with this interpreter, each in a fresh process in an empty temporary
  folder (so relative paths such as ``./.medeir/...`` land there).
- ```bash blocks run the same way with ``bash -euo pipefail``, the virtualenv's ``bin/``
  first on ``PATH`` (so ``medeir`` is this checkout's command).
- ```text blocks are laid-out prose (command lists, folder trees), never code.
- A python or bash block is left out only when the last non-blank line before its fence is
  ``<!-- not-run: REASON -->`` with a reason (it installs packages, needs a server, or trains
  for hours). Any other language, a fence without one, or a marker that is not followed by a
  python or bash block fails ``test_every_block_is_run_or_marked``: nothing is skipped silently.

Every process gets ``HF_HUB_OFFLINE=1`` and ``HAYSTACK_TELEMETRY_ENABLED=False``; the blocks use
the bundled model. A block passes when it exits 0 and prints no traceback (an embedded Qdrant
client left open prints one at interpreter exit).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
RUN_LANGUAGES = ("python", "bash")
LANGUAGES = (*RUN_LANGUAGES, "text")
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.*?)\s*-->$")
FENCE = re.compile(r"^```(?P<language>\S*)\s*$")
TIMEOUT_S = 600


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    not_run: str | None  # the marker's reason, or None

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.language}"


def parse_readme(text: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of ``text`` and the problems that break the rule above."""
    blocks: list[Block] = []
    problems: list[str] = []
    lines = text.splitlines()
    pending: tuple[int, str] | None = None  # (line, reason) of a not-run marker awaiting its block
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        marker = NOT_RUN.match(stripped)
        fence = FENCE.match(stripped)
        if marker:
            if pending:
                problems.append(f"line {pending[0]}: not-run marker without a block after it")
            pending = (index + 1, marker["reason"])
        elif fence:
            start, language = index + 1, fence["language"]
            end = index + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                problems.append(f"line {start}: unclosed code fence")
            if language not in LANGUAGES:
                problems.append(f"line {start}: fence language {language!r}, expected one of {LANGUAGES}")
            reason = pending[1] if pending else None
            if pending and language not in RUN_LANGUAGES:
                problems.append(f"line {pending[0]}: not-run marker before a {language or 'plain'} block")
            if pending and not reason:
                problems.append(f"line {pending[0]}: not-run marker without a reason")
            blocks.append(Block(start, language, "\n".join(lines[index + 1 : end]) + "\n", reason))
            pending = None
            index = end
        elif stripped and pending:
            problems.append(f"line {pending[0]}: not-run marker not directly before a code block")
            pending = None
        index += 1
    if pending:
        problems.append(f"line {pending[0]}: not-run marker without a block after it")
    return blocks, problems


BLOCKS, PROBLEMS = parse_readme(README.read_text(encoding="utf-8"))
RUN = [b for b in BLOCKS if b.language in RUN_LANGUAGES and b.not_run is None]


def test_every_block_is_run_or_marked():
    assert not PROBLEMS, PROBLEMS
    assert {b.language for b in RUN} == {"python", "bash"}
    assert len([b for b in RUN if b.language == "python"]) >= 4  # load, native encode, LlamaIndex, Haystack
    skipped = [(b.name, b.not_run) for b in BLOCKS if b.not_run is not None]
    assert all(reason for _, reason in skipped), skipped


def test_the_parser_enforces_the_rule():
    text = "\n".join([
        "<!-- not-run: needs a server -->", "```bash", "curl localhost", "```",
        "```python", "print(1)", "```",
        "```", "plain", "```",
        "<!-- not-run: dangling -->", "Some prose.",
        "<!-- not-run:  -->", "```bash", "true", "```",
        "```js", "1", "```",
    ])
    blocks, problems = parse_readme(text)
    assert [(b.line, b.language, b.not_run) for b in blocks] == [
        (2, "bash", "needs a server"), (5, "python", None), (8, "", None), (14, "bash", ""), (17, "js", None),
    ]
    assert blocks[1].code == "print(1)\n"
    assert problems == [
        "line 8: fence language '', expected one of ('python', 'bash', 'text')",
        "line 11: not-run marker not directly before a code block",
        "line 13: not-run marker without a reason",
        "line 17: fence language 'js', expected one of ('python', 'bash', 'text')",
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HAYSTACK_TELEMETRY_ENABLED="False",
        TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


@pytest.mark.parametrize("block", RUN, ids=[b.name for b in RUN])
def test_readme_block_runs(block, tmp_path):
    command = [sys.executable, "-c", block.code] if block.language == "python" else ["bash", "-euo", "pipefail", "-c", block.code]
    done = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    output = f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"{block.name} exited {done.returncode}\n{output}"
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, output
    assert done.stdout.strip() or block.language == "python", output  # commands print results
