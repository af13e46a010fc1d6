"""Nothing leaves the machine: the main job and a Haystack and a LlamaIndex pipeline, run the
way a user runs them (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``, ``HF_DATASETS_OFFLINE`` and
``HAYSTACK_TELEMETRY_ENABLED`` unset), open no connection beyond loopback.

How: each job runs in a subprocess whose ``PYTHONPATH`` starts with a folder holding a
``sitecustomize.py``, which ``site`` imports at start-up, before any other code. It wraps
``socket.socket.connect``/``connect_ex``, ``socket.getaddrinfo`` and ``gethostbyname[_ex]``:
a non-loopback target is appended to a log file and refused (so nothing gets out even when
the check fails). The tests assert the log is empty. The control cases show that the hook
records real attempts (a name lookup, a TCP connect, Haystack's telemetry when a user opts
in) and lets loopback through, so the empty log means something. Pure Python, so it runs in
CI; where ``strace`` is installed and allowed, the main job also runs under
``strace -f -e trace=connect``, which also sees connections made below Python (Rust, C).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HAYSTACK_TELEMETRY_ENABLED")
TIMEOUT_S = 600

SITECUSTOMIZE = '''
"""Record (and refuse) every connection or name lookup that is not loopback."""
import ipaddress
import json
import os
import socket

_LOG = os.environ["MEDEIR_EGRESS_LOG"]


def _record(kind, target):
    with open(_LOG, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"kind": kind, "target": repr(target), "pid": os.getpid()}) + "\\n")


def _local_host(host):
    if host is None or host == "" or host == b"":
        return True  # bind/passive lookups
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _local_address(family, address):
    if family == getattr(socket, "AF_UNIX", object()) or isinstance(address, (str, bytes)):
        return True  # a Unix socket path
    if family not in (socket.AF_INET, socket.AF_INET6):
        return False
    return _local_host(address[0])


_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
_getaddrinfo, _gethostbyname, _gethostbyname_ex = socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex


def connect(self, address):
    if not _local_address(self.family, address):
        _record("connect", address)
        raise ConnectionRefusedError(f"egress check: connection to {address!r} refused")
    return _connect(self, address)


def connect_ex(self, address):
    if not _local_address(self.family, address):
        _record("connect_ex", address)
        return 111  # ECONNREFUSED
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if not _local_host(host):
        _record("getaddrinfo", host)
        raise socket.gaierror(socket.EAI_NONAME, f"egress check: lookup of {host!r} refused")
    return _getaddrinfo(host, *args, **kwargs)


def gethostbyname(host):
    if not _local_host(host):
        _record("gethostbyname", host)
        raise socket.gaierror(socket.EAI_NONAME, f"egress check: lookup of {host!r} refused")
    return _gethostbyname(host)


def gethostbyname_ex(host):
    if not _local_host(host):
        _record("gethostbyname_ex", host)
        raise socket.gaierror(socket.EAI_NONAME, f"egress check: lookup of {host!r} refused")
    return _gethostbyname_ex(host)


socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex = getaddrinfo, gethostbyname, gethostbyname_ex
'''

HAYSTACK_SNIPPET = '''
import json

import haystack  # most user code imports haystack first: its telemetry client exists before ours loads
from haystack import Document, Pipeline
from haystack.components.writers import DocumentWriter
from haystack.telemetry import _telemetry
from haystack_integrations.components.retrievers.qdrant import QdrantEmbeddingRetriever
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

from medeir_rag.integrations.haystack import MedeirDocumentEmbedder, MedeirTextEmbedder

doc_embedder = MedeirDocumentEmbedder(progress_bar=False, meta_fields_to_embed=["title"])
store = QdrantDocumentStore(location=":memory:", embedding_dim=doc_embedder.embedding_dimension,
                            similarity="cosine", progress_bar=False)
indexing = Pipeline()
indexing.add_component("embedder", doc_embedder)
indexing.add_component("writer", DocumentWriter(document_store=store))
indexing.connect("embedder", "writer")
indexing.run({"embedder": {"documents": [
    Document(content="Metformin lowers hepatic glucose output.", meta={"title": "Metformin"}),
    Document(content="Inhaled corticosteroids control asthma.", meta={"title": "Asthma"}),
]}})
query = Pipeline()
query.add_component("embedder", MedeirTextEmbedder(progress_bar=False))
query.add_component("retriever", QdrantEmbeddingRetriever(document_store=store, top_k=1))
query.connect("embedder.embedding", "retriever.query_embedding")
top = query.run({"embedder": {"text": "first-line drug for type 2 diabetes"}})["retriever"]["documents"][0]
print(json.dumps({"telemetry_client": _telemetry.telemetry is not None, "top": top.content}))
'''

LLAMA_INDEX_SNIPPET = '''
import json

from llama_index.core import Document, Settings, VectorStoreIndex

from medeir_rag.integrations.llama_index import MedeirEmbedding, MedeirTokenWindowSplitter

Settings.llm = None  # retrieval only, as in the README
Settings.embed_model = MedeirEmbedding()
Settings.node_parser = MedeirTokenWindowSplitter()
index = VectorStoreIndex.from_documents([
    Document(text="Metformin lowers hepatic glucose output.", metadata={"title": "Metformin"}),
    Document(text="Inhaled corticosteroids control asthma.", metadata={"title": "Asthma"}),
])
(hit,) = index.as_retriever(similarity_top_k=1).retrieve("first-line drug for type 2 diabetes")
print(json.dumps({"top": hit.node.get_content()}))
'''

CONTROL_SNIPPET = '''
import socket

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
port = listener.getsockname()[1]
socket.create_connection(("127.0.0.1", port)).close()  # loopback: allowed, not recorded
socket.create_connection(("localhost", port)).close()
raw = socket.socket()
raw.settimeout(1)
for attempt in (lambda: socket.getaddrinfo("example.org", 443),
                lambda: raw.connect(("203.0.113.7", 9)),  # TEST-NET-3: never routed
                lambda: raw.connect_ex(("203.0.113.8", 9))):
    try:
        attempt()
    except OSError:
        pass
print("done")
'''


@pytest.fixture
def sandbox(tmp_path):
    """``run(argv) -> (completed process, egress records)`` in a user-like environment."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "egress.jsonl"

    def run(argv: list[str], *, hooked: bool = True, extra_env: dict[str, str] | None = None):
        env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}
        path = [str(hook)] if hooked else []
        env["PYTHONPATH"] = os.pathsep.join([*path, str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["MEDEIR_EGRESS_LOG"] = str(log)
        env["HOME"] = str(home)  # no ~/.haystack or ~/.cache of the real user
        env.update(extra_env or {})
        completed = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        log.unlink(missing_ok=True)
        return completed, records

    return run


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def medeir(*args: str) -> list[str]:
    return [sys.executable, "-m", "medeir_rag.cli", *args]


# -----------------------------------------------------------------------------
# the check can fail


def test_control_the_hook_records_lookups_and_connections_but_not_loopback(sandbox):
    completed, records = sandbox(python(CONTROL_SNIPPET))
    assert completed.returncode == 0 and completed.stdout.strip() == "done", completed.stderr
    assert [(r["kind"], r["target"]) for r in records] == [
        ("getaddrinfo", "'example.org'"),
        ("connect", "('203.0.113.7', 9)"),
        ("connect_ex", "('203.0.113.8', 9)"),
    ]


def test_control_opted_in_haystack_telemetry_is_kept_and_caught(sandbox):
    pytest.importorskip("haystack")
    # a user who sets HAYSTACK_TELEMETRY_ENABLED=True keeps telemetry; the hook then sees it
    completed, records = sandbox(python(HAYSTACK_SNIPPET), extra_env={"HAYSTACK_TELEMETRY_ENABLED": "True"})
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1])["telemetry_client"] is True
    assert records and all("posthog" in r["target"] for r in records), records


def test_control_an_explicit_hub_model_is_looked_up_and_caught(sandbox, tmp_path):
    # only the explicit hf: form reaches the hub; the hook sees the lookup and the error is one line
    completed, records = sandbox(medeir("index", "--sample", "--model", "hf:medeir-org/not-a-model",
                                        "--qdrant-path", str(tmp_path / "qdrant"), "--no-progress"))
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert "medeir index: hub model 'medeir-org/not-a-model'" in completed.stderr
    assert records and all("huggingface.co" in r["target"] for r in records), records


# -----------------------------------------------------------------------------
# strace, where available: it also sees connections made below Python (Rust, C)

CONNECT = re.compile(r'connect\(\d+, \{sa_family=AF_INET6?, .*?(?:inet_addr\("(?P<v4>[^"]+)"\)|inet_pton\(AF_INET6, "(?P<v6>[^"]+)")')


def strace_works(tmp_path: Path) -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-f", "-e", "trace=connect", "-o", str(tmp_path / "probe.log"), "true"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def traced(argv: list[str], trace: Path) -> list[str]:
    return ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace), *argv]


def non_loopback_connects(trace: Path) -> list[str]:
    found = []
    for line in trace.read_text().splitlines():
        match = CONNECT.search(line)
        if match:
            address = match.group("v4") or match.group("v6")
            if not (address.startswith("127.") or address == "::1"):
                found.append(line.strip())
    return found


def test_control_strace_sees_a_connection(sandbox, tmp_path):
    if not strace_works(tmp_path):
        pytest.skip("strace is not installed or not allowed to trace here")
    trace = tmp_path / "control.strace"
    completed, _ = sandbox(traced(python(CONTROL_SNIPPET), trace), hooked=False)
    assert completed.returncode == 0, completed.stderr
    assert any("203.0.113.7" in line for line in non_loopback_connects(trace))


# -----------------------------------------------------------------------------
# the jobs


def test_main_job_sends_nothing(sandbox, tmp_path):
    use_strace = strace_works(tmp_path)
    qdrant = str(tmp_path / "qdrant")
    jobs = [
        medeir("index", "--sample", "--qdrant-path", qdrant, "--no-progress"),
        medeir("query", "first-line drug for type 2 diabetes", "--qdrant-path", qdrant, "--json"),
    ]
    for number, argv in enumerate(jobs):
        trace = tmp_path / f"job{number}.strace"
        completed, records = sandbox(traced(argv, trace) if use_strace else argv)
        assert completed.returncode == 0, completed.stderr
        assert records == []  # nothing tried from Python
        if use_strace:
            assert non_loopback_connects(trace) == []  # nor from below it
        if number == 0:
            assert "documents read" in completed.stdout
        else:
            assert len(json.loads(completed.stdout)["results"]) == 5


def test_haystack_pipeline_sends_nothing_and_telemetry_is_off(sandbox):
    pytest.importorskip("haystack_integrations.document_stores.qdrant")
    completed, records = sandbox(python(HAYSTACK_SNIPPET))
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["telemetry_client"] is False  # imported before us, switched off by our import
    assert result["top"] in ("Metformin lowers hepatic glucose output.", "Inhaled corticosteroids control asthma.")
    assert records == []


def test_llama_index_pipeline_sends_nothing(sandbox):
    pytest.importorskip("llama_index.core")
    completed, records = sandbox(python(LLAMA_INDEX_SNIPPET))
    assert completed.returncode == 0, completed.stderr
    top = json.loads(completed.stdout.strip().splitlines()[-1])["top"]
    assert top in ("Metformin lowers hepatic glucose output.", "Inhaled corticosteroids control asthma.")
    assert records == []
