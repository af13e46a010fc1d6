"""Saving medeir models as standard sentence-transformers directories.

Why stock modules: a ``modules.json`` that names only ``sentence_transformers`` classes
(``Transformer`` + ``Pooling`` + ``Normalize``) loads with ``SentenceTransformer(path)``
without ``trust_remote_code``; the custom part is the transformers ``model_type="medeir"``,
registered when ``medeir_rag`` is imported. Haystack and LlamaIndex load such a directory
with their default settings.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/model/export.py``.
"""

from __future__ import annotations

import ast
import json
import re
import tempfile
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from medeir_rag.model.loading import quiet_loading

QUERY_PROMPT = "query: "
DOCUMENT_PROMPT = "passage: "
DEFAULT_PROMPTS = {"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT}

# -----------------------------------------------------------------------------
# Remote code: the model's source, copied into every saved folder

MODEL_DIR = Path(__file__).resolve().parent  # medeir_rag/model: the code a saved folder carries
REMOTE_CODE_ROOTS = ("configuration", "modeling")  # what auto_map names; their medeir_rag.model imports follow
AUTO_MAP = {
    "AutoConfig": "configuration_medeir.MedeirConfig",
    "AutoModel": "modeling_medeir.MedeirModel",
    "AutoModelForMaskedLM": "modeling_medeir.MedeirForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_medeir.MedeirForSequenceClassification",
}
_PACKAGE_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from medeir_rag\.model\.(?P<module>\w+) import", re.MULTILINE)


def remote_code_file(module: str) -> str:
    """The file name a package module gets in a saved folder: ``modeling`` -> ``modeling_medeir.py``."""
    return f"{module}_medeir.py"


def _package_imports(source: str, module: str) -> list[str]:
    """The ``medeir_rag.model`` modules ``source`` imports; anything but ``from medeir_rag.model.<module>
    import`` (a plain ``import medeir_rag``, another subpackage) cannot be made relative and is refused."""
    imported = []
    for node in ast.walk(ast.parse(source)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            if name.split(".")[0] != "medeir_rag":
                continue
            parts = name.split(".")
            if not isinstance(node, ast.ImportFrom) or len(parts) != 3 or parts[1] != "model":
                raise RuntimeError(f"medeir_rag/model/{module}.py line {node.lineno}: cannot copy `{ast.unparse(node)}` "
                                   "into a saved model folder; import from a medeir_rag.model module")
            imported.append(parts[2])
    return imported


def remote_code_sources() -> dict[str, str]:
    """``{file name: source}`` of the self-contained copies of the model code.

    Starts from ``configuration.py`` and ``modeling.py`` and follows their ``medeir_rag``
    imports (``attention.py`` today), rewriting ``from medeir_rag.model.x import`` as
    ``from .x_medeir import``: transformers copies a file's relative imports along with it.
    """
    from medeir_rag import __version__

    sources: dict[str, str] = {}
    pending = list(REMOTE_CODE_ROOTS)
    while pending:
        module = pending.pop(0)
        if remote_code_file(module) in sources:
            continue
        source = (MODEL_DIR / f"{module}.py").read_text(encoding="utf-8")
        pending.extend(_package_imports(source, module))
        source = _PACKAGE_IMPORT.sub(lambda m: f"{m['indent']}from .{m['module']}_medeir import", source)
        if _package_imports(source, module):  # an import the rewrite did not reach (not at a line start)
            raise RuntimeError(f"medeir_rag/model/{module}.py: a medeir_rag import is left after the rewrite")
        header = (f"# Generated from medeir_rag/model/{module}.py (medeir_rag {__version__}) when this model was saved,\n"
                  "# so the folder loads with trust_remote_code=True without medeir_rag installed. Do not edit.\n")
        sources[remote_code_file(module)] = header + source
    return sources


def transformer_folder(path: str | Path) -> Path:
    """The folder holding the transformers ``config.json`` of a saved ST or CrossEncoder folder."""
    from medeir_rag.model.files import read_st_folder

    path = Path(path)
    if (path / "modules.json").is_file():
        return read_st_folder(path, require_st_config=False).transformer_dir
    return path


def write_remote_code(path: str | Path) -> list[Path]:
    """Put the model code and ``config.json``'s ``auto_map`` into a saved folder; return the files.

    ``path`` is a sentence-transformers or CrossEncoder folder (or a bare transformers one).
    Idempotent: writing again replaces the copies with the current package source.
    """
    folder = transformer_folder(path)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("model_type") != "medeir":
        raise ValueError(f"{config_file}: model_type is {config.get('model_type')!r}, not 'medeir'")
    written = []
    for name, source in remote_code_sources().items():
        (folder / name).write_text(source, encoding="utf-8")
        written.append(folder / name)
    config["auto_map"] = dict(AUTO_MAP)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [config_file, *written]


def drop_stray_prompts(path: str | Path) -> list[str]:
    """Remove a ``text`` prompt (what older saves carried for LlamaIndex) from a saved folder's
    ``config_sentence_transformers.json`` when a ``document`` prompt is there; return what went."""
    config_file = Path(path) / "config_sentence_transformers.json"
    if not config_file.is_file():
        return []
    config = json.loads(config_file.read_text(encoding="utf-8"))
    prompts = config.get("prompts") or {}
    dropped = [name for name in ("text",) if name in prompts and "document" in prompts]
    if dropped:
        config["prompts"] = {k: v for k, v in prompts.items() if k not in dropped}
        config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return dropped


# -----------------------------------------------------------------------------
# Saving


def _st_modules():
    """The Transformer/Pooling/Normalize classes, wherever this sentence-transformers keeps them."""
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers releases before the 6.x package split
        from sentence_transformers.models import Normalize, Pooling, Transformer
    return Transformer, Pooling, Normalize


def save_sentence_transformer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    *,
    prompts: dict[str, str] | None = None,
    max_seq_length: int | None = None,
    normalize: bool = True,
) -> Path:
    """Save an encoder (``MedeirModel`` or the encoder inside an MLM) as an ST directory.

    Args:
        model: a ``MedeirModel``; a ``MedeirForMaskedLM`` is unwrapped to its encoder.
        tokenizer: the medical tokenizer.
        path: output directory.
        prompts: named prompts; defaults to ``DEFAULT_PROMPTS``.
        max_seq_length: the window encode uses; defaults to ``max_position_embeddings``.
        normalize: append a ``Normalize`` module (cosine similarity == dot product).
    """
    from sentence_transformers import SentenceTransformer

    Transformer, Pooling, Normalize = _st_modules()
    encoder = getattr(model, "medeir", model)
    path = Path(path)
    max_seq_length = max_seq_length or encoder.config.max_position_embeddings
    with tempfile.TemporaryDirectory() as staging, quiet_loading():
        encoder.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        transformer = Transformer(staging, max_seq_length=max_seq_length)
        modules = [transformer, Pooling(encoder.config.hidden_size, pooling_mode="mean")]
        if normalize:
            modules.append(Normalize())
        st_model = SentenceTransformer(
            modules=modules, prompts=prompts or dict(DEFAULT_PROMPTS), similarity_fn_name="cosine", device="cpu"
        )
        st_model.save(str(path))
    write_remote_code(path)
    return path


def save_cross_encoder(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    *,
    max_length: int = 512,
) -> Path:
    """Save a ``MedeirForSequenceClassification`` (``num_labels=1``) as a ``CrossEncoder`` directory.

    ``max_length`` is the pair window; rerankers rarely need more than 512 tokens, and every
    extra token costs quadratically on each of the ``top_k`` candidates.
    """
    from sentence_transformers import CrossEncoder

    path = Path(path)
    with tempfile.TemporaryDirectory() as staging, quiet_loading():
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        cross_encoder = CrossEncoder(staging, num_labels=model.config.num_labels, max_length=max_length, device="cpu")
        cross_encoder.save(str(path))
    write_remote_code(path)
    return path
