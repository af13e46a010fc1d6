"""Durability of the Qdrant Edge store: ``medeir index`` killed with SIGKILL, resumed, nothing lost or doubled.

2,000 synthetic abstracts (JSON lines written here) are indexed by ``medeir index`` in a
subprocess with the tiny test model saved to disk. The run is killed with SIGKILL at three
random points of its progress (read from the progress bar on stderr); after each kill the
store must open cleanly and hold every point of the documents reported done, each once, and
the next run resumes. At the end every document is present exactly once (count and the set
of doc ids, via scroll). While a process holds the store, a second one is refused at once
with a one-line error and changes nothing. Seeded: the kill points are printed on failure.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest

from medeir_rag.rag.store import StorageLockedError, open_backend

DOCUMENTS = 2000
KILLS = 3
SEED = int(os.environ.get("MEDEIR_DURABILITY_SEED", "13"))
WORDS = (
    "metformin insulin glucose diabetes hypertension stroke infarction amoxicillin otitis resistance obese "
    "radiography infiltrates pneumonia beta blockers mortality asthma corticosteroids kidney cardiovascular "
    "glaucoma optic nerve vaccination influenza elderly patients treated chronic acute risk lowers reduce"
).split()
PROGRESS = re.compile(rb"(\d+)/" + str(DOCUMENTS).encode())


def write_abstracts(path) -> list[str]:
    rng = random.Random(SEED)
    ids = []
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(DOCUMENTS):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(25, 45)))
            ids.append(f"pmid:{100000 + i}")
            handle.write(json.dumps({"id": ids[-1], "title": f"Study {i} of {rng.choice(WORDS)}",
                                     "text": f"{words.capitalize()}."}) + "\n")
    return ids


class IndexRun:
    """``medeir index`` in a subprocess; ``done`` is the last document count its progress bar showed."""

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "HAYSTACK_TELEMETRY_ENABLED": "False", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "medeir_rag.cli.index", *argv], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr = b""
        self.done = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := self.process.stderr.read1(4096):
            self.stderr += chunk
            counts = PROGRESS.findall(self.stderr[-400:])
            if counts:
                self.done = int(counts[-1])

    def wait_for(self, documents: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.done < documents and self.process.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no progress to {documents} documents: {self.stderr[-2000:]!r}")
            time.sleep(0.005)

    def kill(self) -> int:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._reader.join(5)
        return self.done

    def finish(self, timeout: float = 900) -> tuple[int, str]:
        out = self.process.stdout.read()  # stderr is the reader thread's
        self.process.wait(timeout)
        self._reader.join(5)
        return self.process.returncode, out.decode()


def stored(folder) -> dict[str, list[tuple[int, int]]]:
    """``{doc_id: [(chunk_index, num_chunks), ...]}`` read by scroll; the store must open cleanly."""
    backend = open_backend(folder, collection="medeir", create=False)
    try:
        chunks: dict[str, list[tuple[int, int]]] = defaultdict(list)
        ids = []
        for record in backend.scroll("medeir", with_payload=["doc_id", "chunk_index", "num_chunks"]):
            ids.append(record.id)
            chunks[record.payload["doc_id"]].append((record.payload["chunk_index"], record.payload["num_chunks"]))
        assert len(ids) == len(set(ids)) == backend.count("medeir")
        return chunks
    finally:
        backend.close()


def complete_documents(chunks: dict[str, list[tuple[int, int]]]) -> set[str]:
    """Documents whose every chunk is stored exactly once (and no chunk twice anywhere)."""
    done = set()
    for doc_id, parts in chunks.items():
        indices = sorted(i for i, _ in parts)
        assert len(indices) == len(set(indices)), f"{doc_id} has a chunk twice"
        if indices == list(range(parts[0][1])):
            done.add(doc_id)
    return done


def test_sigkill_at_random_points_then_resume_loses_and_doubles_nothing(tiny_model_dir, tmp_path):
    started = time.monotonic()
    corpus = tmp_path / "abstracts.jsonl"
    all_ids = write_abstracts(corpus)
    folder = tmp_path / "store"
    argv = [str(corpus), "--model", str(tiny_model_dir), "--qdrant-path", str(folder), "--device", "cpu",
            "--batch-size", "16"]
    rng = random.Random(SEED)
    targets = sorted(rng.sample(range(100, DOCUMENTS - 100), KILLS))
    report = f"seed {SEED}, kill targets {targets}"
    kept = 0
    for number, target in enumerate(targets):
        run = IndexRun(argv)
        run.wait_for(target)
        assert run.process.poll() is None, f"{report}: finished before the kill: {run.stderr[-2000:]!r}"
        if number == 0:  # the running process holds the store: another opener is refused at once
            began = time.perf_counter()
            with pytest.raises(StorageLockedError, match="open in another process"):
                open_backend(folder, collection="medeir")
            assert time.perf_counter() - began < 1.0
        time.sleep(rng.uniform(0, 0.05))  # land anywhere inside a batch
        shown = run.kill()
        chunks = stored(folder)
        done = complete_documents(chunks)
        assert len(done) >= max(shown, kept), f"{report}: {len(done)} complete after a kill at {shown}"
        kept = len(done)

    # a second process, while this one holds the store: one line, exit 1, nothing changed
    holder = open_backend(folder, collection="medeir")
    try:
        before = holder.count("medeir")
        began = time.perf_counter()
        refused = IndexRun(argv)
        code, _ = refused.finish()
        # refused without waiting for the lock (the bound only catches a wait: start-up alone took 30 s at load 10)
        assert code == 1 and time.perf_counter() - began < 120
        lines = [line for line in refused.stderr.decode().splitlines() if line.startswith("medeir index: ")]
        assert len(lines) == 1 and "open in another process" in lines[0], refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr.decode()
        assert holder.count("medeir") == before
    finally:
        holder.close()

    code, out = IndexRun([*argv, "--json", "--no-progress"]).finish()
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["skipped_existing"] >= kept and summary["documents"] == DOCUMENTS
    chunks = stored(folder)
    assert sorted(chunks) == sorted(all_ids)
    assert complete_documents(chunks) == set(all_ids)
    assert summary["points"] == sum(len(parts) for parts in chunks.values())
    assert sorted(p.name for p in folder.iterdir()) == [".medeir.lock", "medeir"]  # no leftover folders
    print(f"{report}: {time.monotonic() - started:.1f} s")
