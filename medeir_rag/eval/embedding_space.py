"""``medeir analyze``: what the embedding space looks like, for our model and all-MiniLM-L6-v2.

Design choices:
- **Alignment and uniformity** (Wang & Isola, ICML 2020) on unit vectors:
  ``alignment = E ||f(q) - f(a)||^2`` over positive pairs (lower: pairs closer) and
  ``uniformity = log E exp(-2 ||f(x) - f(y)||^2)`` over all pairs of a set (lower: spread
  more evenly over the sphere). Positive pairs are the MedQuAD QA test question/answer
  pairs (questions embedded as queries, answers as documents, as in retrieval);
  uniformity is reported for the questions, the answers and their mean.
- **Cluster separability**: silhouette score with cosine distance by a category label.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/eval/embedding_space.py``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medeir_rag.eval.beir import default_data_dir, document_text, load_beir, read_jsonl, sha256_file
from medeir_rag.eval.embedding_cache import DEFAULT_CACHE_DIR, EmbeddingCache
from medeir_rag.runtime import default_device

logger = logging.getLogger(__name__)

PROBE_FRACTIONS = (0.01, 0.1, 1.0)
MEDQUAD_DIR = "beir/medquad_qa"
GO_FILE = "pretrain/go_definitions.jsonl.gz"
DEFAULT_OUTPUT_DIR = Path("analysis-results")


@dataclass
class AnalyzeSettings:
    """Everything one ``medeir analyze`` run depends on (the CLI's flags, one field each;
    ``medeir analyze --help`` documents them), so the analysis runs without a command line."""

    data_dir: Path | None = None        # None: $MEDEIR_DATA_DIR, else ../shared/data
    model: str | None = None            # None: the bundled model
    no_model: bool = False
    no_minilm: bool = False
    sample: int = 2000
    min_class_size: int = 20
    test_fraction: float = 0.2
    probe_seeds: int = 3
    projection: str = "pca"             # pca | tsne
    seed: int = 0
    truncate_dim: int | None = None
    device: str | None = None           # None: cuda when available
    output_dir: Path = DEFAULT_OUTPUT_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR
    no_cache: bool = False


# ----------------------------------------------------------------------------
# Metrics (pure numpy / sklearn; inputs are L2-normalised rows)


def alignment(x: np.ndarray, y: np.ndarray, alpha: float = 2.0) -> float:
    """Mean ``||x_i - y_i||^alpha`` over positive pairs (rows of ``x`` and ``y``)."""
    return float(np.mean(np.linalg.norm(x - y, axis=1) ** alpha))


def uniformity(x: np.ndarray, t: float = 2.0) -> float:
    """``log mean exp(-t ||x_i - x_j||^2)`` over all pairs ``i < j``."""
    from scipy.spatial.distance import pdist

    squared = pdist(np.asarray(x, dtype=np.float64), "sqeuclidean")
    # log-mean-exp, stable
    values = -t * squared
    top = values.max()
    return float(top + np.log(np.mean(np.exp(values - top))))


def silhouette(x: np.ndarray, labels: Sequence[str]) -> float:
    """Silhouette score with cosine distance (-1..1, higher = better separated)."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(x, np.asarray(labels), metric="cosine"))


def stratified_subsample(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices holding ``round(fraction * n_c)`` items (at least one) of every class ``c``."""
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, round(fraction * len(members)))
        chosen.append(rng.choice(members, size=min(count, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def linear_probe(
    x: np.ndarray, labels: Sequence[str], *, fractions: Sequence[float] = PROBE_FRACTIONS, seed: int = 0,
    probe_seeds: int = 3, test_fraction: float = 0.2,
) -> dict[str, dict[str, float]]:
    """Held-out accuracy of logistic regression trained on a fraction of the labels.

    Returns ``{"1%": {"accuracy_mean", "accuracy_std", "train_size", "runs"}, ...}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=seed)
    results: dict[str, dict[str, float]] = {}
    for fraction in fractions:
        accuracies, sizes = [], []
        for run in range(1 if fraction >= 1.0 else probe_seeds):
            rng = np.random.default_rng(seed * 1000 + run)
            subset = train_idx[stratified_subsample(y[train_idx], fraction, rng)] if fraction < 1.0 else train_idx
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
            probe.fit(x[subset], y[subset])
            accuracies.append(float(np.mean(probe.predict(x[test_idx]) == y[test_idx])))
            sizes.append(len(subset))
        results[f"{fraction:.0%}"] = {
            "accuracy_mean": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
            "train_size": float(np.mean(sizes)), "test_size": float(len(test_idx)), "runs": float(len(accuracies)),
        }
    return results


# ----------------------------------------------------------------------------
# Data


@dataclass
class LabelledSet:
    """Texts with a category label, embedded with one role."""

    name: str
    texts: list[str]
    labels: list[str]
    role: str  # "query" or "document"
    source_sha256: str
    dropped_classes: dict[str, int]


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted seeded sample of ``min(size, n)`` indices."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n)[: min(size, n)])


def _drop_rare(texts: list[str], labels: list[str], min_size: int) -> tuple[list[str], list[str], dict[str, int]]:
    counts = Counter(labels)
    dropped = {label: n for label, n in counts.items() if n < min_size}
    keep = [i for i, label in enumerate(labels) if label not in dropped]
    return [texts[i] for i in keep], [labels[i] for i in keep], dropped


def medquad_pairs(folder: Path, sample: int, seed: int) -> tuple[list[str], list[str], list[str], str]:
    """(questions, answers, question types, corpus sha256) of the MedQuAD QA test pairs, subsampled."""
    data = load_beir(folder, "test" if (folder / "qrels" / "test.tsv").is_file() else None)
    pairs = [(q, d) for q, docs in data.qrels.items() for d, grade in docs.items() if grade > 0 and d in data.texts]
    pairs = [pairs[i] for i in _sample(len(pairs), sample, seed)]
    questions = [data.queries[q] for q, _ in pairs]
    answers = [document_text(data.titles[d], data.texts[d]) for _, d in pairs]
    qtypes = [str(data.query_metadata[q].get("qtype", "unknown")) for q, _ in pairs]
    return questions, answers, qtypes, sha256_file(data.corpus_file)


def go_terms(path: Path, sample: int, seed: int) -> tuple[list[str], list[str], str]:
    """(term name + definition, namespace) of a seeded sample of GO terms, and the file's sha256."""
    records = [(document_text(r.get("title"), r.get("text")), str(r["ontology"])) for r in read_jsonl(path)]
    chosen = [records[i] for i in _sample(len(records), sample, seed)]
    return [t for t, _ in chosen], [label for _, label in chosen], sha256_file(path)


# ----------------------------------------------------------------------------
# Plots


def _projection(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, metric="cosine", init="pca", random_state=seed,
                    perplexity=min(30.0, max(2.0, (len(x) - 1) / 3))).fit_transform(x)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x)


def plot_projections(
    embeddings: dict[str, dict[str, np.ndarray]], sets: list[LabelledSet], path: Path, method: str, seed: int
) -> None:
    """One scatter per (set, model), coloured by category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(embeddings)
    figure, axes = plt.subplots(len(sets), len(models), figsize=(5.5 * len(models), 4.8 * len(sets)), squeeze=False)
    for row, labelled in enumerate(sets):
        labels = np.asarray(labelled.labels)
        classes = [c for c, _ in Counter(labelled.labels).most_common()]
        colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(classes), 2)))
        for col, model in enumerate(models):
            points = _projection(embeddings[model][labelled.name], method, seed)
            axis = axes[row][col]
            for colour, label in zip(colours, classes, strict=False):
                mask = labels == label
                axis.scatter(points[mask, 0], points[mask, 1], s=5, alpha=0.6, color=colour, label=label)
            axis.set_title(f"{model}: {labelled.name} ({method.upper()})", fontsize=10)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_metrics(metrics: dict[str, dict[str, Any]], sets: list[LabelledSet], path: Path) -> None:
    """Bar charts: alignment, uniformity, silhouette per set, probe accuracy per set and fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(metrics)
    panels: list[tuple[str, dict[str, float]]] = [
        ("alignment (lower is better)", {m: metrics[m]["alignment"] for m in models}),
        ("uniformity (lower is better)", {m: metrics[m]["uniformity"] for m in models}),
    ]
    for labelled in sets:
        panels.append((f"silhouette, {labelled.name}", {m: metrics[m]["silhouette"][labelled.name] for m in models}))
    figure, axes = plt.subplots(1, len(panels) + len(sets), figsize=(3.6 * (len(panels) + len(sets)), 3.6))
    width = 0.8 / max(len(models), 1)
    for axis, (title, values) in zip(axes, panels, strict=False):
        axis.bar(range(len(models)), [values[m] for m in models], color=[f"C{i}" for i in range(len(models))])
        axis.set_xticks(range(len(models)), models, rotation=20, fontsize=7)
        axis.set_title(title, fontsize=9)
    for axis, labelled in zip(axes[len(panels):], sets, strict=True):
        fractions = list(metrics[models[0]]["probe"][labelled.name])
        for i, model in enumerate(models):
            probe = metrics[model]["probe"][labelled.name]
            axis.bar(np.arange(len(fractions)) + i * width, [probe[f]["accuracy_mean"] for f in fractions], width,
                     yerr=[probe[f]["accuracy_std"] for f in fractions], label=model, color=f"C{i}")
        axis.set_xticks(np.arange(len(fractions)) + width * (len(models) - 1) / 2, fractions)
        axis.set_ylim(0, 1)
        axis.set_title(f"probe accuracy, {labelled.name}", fontsize=9)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ----------------------------------------------------------------------------
# CLI


def table_json(metrics: dict[str, dict[str, Any]], sets: list[LabelledSet]) -> dict[str, Any]:
    """The values the Markdown table shows, per model (``medeir analyze --json``); probes as fractions."""
    return {model: {"alignment": values["alignment"], "uniformity": values["uniformity"],
                    "silhouette": {s.name: values["silhouette"][s.name] for s in sets},
                    "probe": {s.name: {f: values["probe"][s.name][f]["accuracy_mean"] for f in ("1%", "10%", "100%")}
                              for s in sets}}
            for model, values in metrics.items()}


def _markdown(metrics: dict[str, dict[str, Any]], sets: list[LabelledSet]) -> str:
    header = ["model", "alignment ↓", "uniformity ↓"]
    for labelled in sets:
        header += [f"silhouette {labelled.name}"] + [f"probe {f} {labelled.name}" for f in ("1%", "10%", "100%")]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for model, values in metrics.items():
        cells = [f"{values['alignment']:.3f}", f"{values['uniformity']:.3f}"]
        for labelled in sets:
            probe = values["probe"][labelled.name]
            cells.append(f"{values['silhouette'][labelled.name]:.3f}")
            cells += [f"{100 * probe[f]['accuracy_mean']:.1f}" for f in ("1%", "10%", "100%")]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def analyze(args: AnalyzeSettings, argv: Sequence[str] = ()) -> tuple[int, dict[str, Any] | None]:
    """The analysis: writes analysis.json, analysis.md and the plots, prints the table; ``(status, table_json)``.

    ``argv`` is only recorded in analysis.json, so a result says how to repeat it.
    """
    started = time.perf_counter()

    from medeir_rag.eval.baselines import embed, load_medeir, load_minilm
    from medeir_rag.eval.benchmark import package_versions

    data_dir = args.data_dir or default_data_dir()
    device = args.device or default_device()
    cache = EmbeddingCache(None if args.no_cache else args.cache_dir)

    models: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if args.no_model:
        skipped["medeir"] = "--no-model given"
    else:
        try:
            model = load_medeir(args.model, device=device, truncate_dim=args.truncate_dim)
            models[model.name] = model
        except FileNotFoundError as error:
            skipped["medeir"] = f"model not found: {error}"
    if args.no_minilm:
        skipped["minilm"] = "--no-minilm given"
    else:
        minilm = load_minilm(device=device)
        models[minilm.name] = minilm
    if not models:
        print("medeir analyze: no model to analyse (" + "; ".join(skipped.values()) + ")", file=sys.stderr)
        return 1, None

    questions, answers, qtypes, medquad_sha = medquad_pairs(data_dir / MEDQUAD_DIR, args.sample, args.seed)
    go_texts, go_labels, go_sha = go_terms(data_dir / GO_FILE, args.sample, args.seed)
    sets = []
    for name, texts, labels, role, sha in (("medquad_qtype", questions, qtypes, "query", medquad_sha),
                                           ("go_namespace", go_texts, go_labels, "document", go_sha)):
        kept_texts, kept_labels, dropped = _drop_rare(texts, labels, args.min_class_size)
        sets.append(LabelledSet(name, kept_texts, kept_labels, role, sha, dropped))

    metrics: dict[str, dict[str, Any]] = {}
    embeddings: dict[str, dict[str, np.ndarray]] = {}
    for name, model in models.items():
        q = embed(model, questions, "query", cache, source_sha256=medquad_sha)
        a = embed(model, answers, "document", cache, source_sha256=medquad_sha)
        embeddings[name] = {s.name: embed(model, s.texts, s.role, cache, source_sha256=s.source_sha256) for s in sets}
        uniform_q, uniform_a = uniformity(q), uniformity(a)
        metrics[name] = {
            "alignment": alignment(q, a),
            "uniformity": (uniform_q + uniform_a) / 2,
            "uniformity_questions": uniform_q,
            "uniformity_answers": uniform_a,
            "silhouette": {s.name: silhouette(embeddings[name][s.name], s.labels) for s in sets},
            "probe": {s.name: linear_probe(embeddings[name][s.name], s.labels, seed=args.seed,
                                           probe_seeds=args.probe_seeds, test_fraction=args.test_fraction)
                      for s in sets},
        }

    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot_projections(embeddings, sets, args.output_dir / "projection.png", args.projection, args.seed)
    plot_metrics(metrics, sets, args.output_dir / "metrics.png")
    report = {
        "command": " ".join(["medeir analyze", *argv]),
        "versions": package_versions(),
        "device": device,
        "seeds": {"sampling_split_projection": args.seed, "probe_subsample_seeds": args.probe_seeds},
        "models": {name: model.describe() for name, model in models.items()},
        "skipped": skipped,
        "data": {
            "positive_pairs": {"source": str(data_dir / MEDQUAD_DIR), "pairs": len(questions)},
            **{s.name: {"items": len(s.texts), "role": s.role, "classes": dict(Counter(s.labels).most_common()),
                        "dropped_classes": s.dropped_classes} for s in sets},
        },
        "settings": {"sample": args.sample, "min_class_size": args.min_class_size, "test_fraction": args.test_fraction,
                     "probe_fractions": list(PROBE_FRACTIONS), "projection": args.projection},
        "metrics": metrics,
        "plots": ["projection.png", "metrics.png"],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (args.output_dir / "analysis.json").write_text(json.dumps(report, indent=1))
    markdown = _markdown(metrics, sets)
    (args.output_dir / "analysis.md").write_text(markdown)
    print(markdown)
    print(f"wrote {args.output_dir}/analysis.json, analysis.md, projection.png, metrics.png "
          f"in {report['wall_seconds']} s")
    return 0, table_json(metrics, sets)
