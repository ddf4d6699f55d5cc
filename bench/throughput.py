"""emodist's training loop against transformers.Trainer on the same work, on this machine.

    python bench/throughput.py [--examples 4096] [--repeats 3] [--data-dir DIR] [--packed] [--record]

The same model (`minilm`: all-MiniLM-L6-v2 from PyPI), the same GoEmotions train subset (emodist's seeded
`data.max_train_examples` subset, read once by both), the same hyperparameters (the minilm variant's:
batch 32, AdamW with lr 1e-4 for the body and 5e-3 for the pooler and classifier, weight decay 0.01 except
biases and norms, linear schedule with 6% warmup, gradient clipping at 1.0, max_length 128), one epoch,
float32 (emodist's `train.mixed_precision=auto` would pick bf16 on a CPU with AVX512-BF16; the Trainer's
default is float32 everywhere), one process each. The Trainer is set up the way its documentation shows a
user: its default collator (DataCollatorWithPadding), `use_cpu` without a GPU, the two learning rates through
`optimizers=(AdamW(param_groups, fused=True), None)` (fused: the Trainer's default `adamw_torch_fused`);
it runs twice: in its best documented setting for this work, length-grouped batches
(`train_sampling_strategy="group_by_length"`, the headline, as emodist groups by length too), and with
its default random batches (a second row). `--packed` adds a fourth side: emodist with random batches
packed without padding (`data.packing=true data.group_by_length=false`), reported against emodist's
length-grouped batches. `--trainer-compile` adds the Trainer with length grouping and its `torch_compile`
option (inductor, default mode), compilation included in its loop time as a user waits for it.

Each run is its own process; the sides alternate, `--repeats` times. Reported per run: train examples/s
and real (unpadded) tokens/s over the training loop (setup and evaluation excluded, on both sides), peak
RSS of the process that trained and evaluated (from wait4: emodist's train.py, the Trainer's worker; not the
bench's own scoring of emodist's exported model afterwards), dev micro-F1 on the whole dev split at 0.5 and at the best single
threshold (both scored by the same code from each model's probabilities). The last line is the ratio of
the medians against each Trainer setting, the headline last. `--record` writes the table into
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
DEFAULT_DATA = Path(os.environ.get("EMODIST_GOEMOTIONS", ROOT.parent / "shared" / "data" / "goemotions"))
MARK = "throughput-vs-trainer"
TRAINERS = {"trainer-grouped": "group_by_length", "trainer": "random"}
"""The Trainer's sides: its best setting for this work (the headline) and its default sampling."""
COMPILED = "trainer-compiled"
"""`--trainer-compile`'s side: the Trainer with length grouping and `torch_compile=True` (inductor)."""
SIDES = ("emodist", *TRAINERS)
EMODIST_SETTINGS = ("train.eval_every_steps=0", "train.save_every_steps=0", "track.wandb=off", "track.plots=false",
                    "train.mixed_precision=no")
"""emodist's side: the loop alone (no evaluation or checkpoint in it), in float32 as the Trainer computes."""
PACKED = ("data.packing=true", "data.group_by_length=false")
"""The settings of `--packed`'s side, emodist-packed: random batches, packed."""


def data_settings(examples: int, eval_examples: int | None) -> list[str]:
    """The settings both sides share: the train subset, one epoch, and the dev subset (all of dev by default)."""
    return [f"data.max_train_examples={examples}", "train.epochs=1",
            *([f"data.max_eval_examples={eval_examples}"] if eval_examples else [])]


def variant_config(data_dir: Path, settings: list[str]):
    from emodist import config

    return config.load("minilm", None, settings,
                       cli={"data.data_dir": ("--data-dir", str(data_dir)), "data.dataset": ("--dataset", "goemotions")})


# --- the two workers (each runs in a process of its own) ---------------------------------------------

def run_emodist(data_dir: Path, settings: list[str], work: Path, side: str = "emodist") -> dict:
    run_dir = work / f"{side}-run"
    command = [sys.executable, str(ROOT / "launch" / "train.py"), "--variant", "minilm", "--data-dir", str(data_dir),
               "--output-dir", str(run_dir), "--overwrite", *EMODIST_SETTINGS, *settings]
    with open(work / f"{side}.log", "w") as log:
        rss_mib, code = peak_rss_mib(subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    if code:
        sys.exit(f"throughput: emodist's launch/train.py failed (exit {code}); its output is in {work / f'{side}.log'}")
    perf = json.loads((run_dir / "summary.json").read_text())["perf"]
    from emodist import data
    from emodist.serve.inference import Classifier

    cfg = variant_config(data_dir, settings)
    emotions = data.load(cfg.data, seed=cfg.train.seed)
    dev = emotions.splits["dev"]
    served = Classifier.load(run_dir / "model", max_length=cfg.data.max_length, precision="fp32")  # as the Trainer's
    probabilities = served.probabilities(dev.texts)
    return {"examples_per_s": perf["train_samples_per_s"], "tokens_per_s": perf["train_tokens_per_s"],
            "train_seconds": perf["train_seconds"], "peak_rss_mib": rss_mib,
            **dev_scores(dev.targets, probabilities, emotions.labels)}


def run_trainer(data_dir: Path, settings: list[str], work: Path, sampling: str, compiled: bool = False) -> dict:
    import datasets
    import numpy as np
    import torch
    from scipy.special import expit
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from emodist import data, models

    cfg = variant_config(data_dir, settings)
    emotions = data.load(cfg.data, seed=cfg.train.seed)
    source = models.base_path(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    labels = emotions.labels
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(labels), problem_type="multi_label_classification",
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})

    def dataset(split):
        part = emotions.splits[split]
        raw = datasets.Dataset.from_dict({"text": part.texts, "labels": part.targets.tolist()})
        return raw.map(lambda b: tokenizer(b["text"], truncation=True, max_length=cfg.data.max_length),
                       batched=True, remove_columns=["text"])

    train, dev = dataset("train"), dataset("dev")
    head, optim = cfg.model.head_modules, cfg.optim
    groups = {}
    for name, param in model.named_parameters():
        in_head = any(part in head for part in name.split("."))
        groups.setdefault((in_head, param.ndim < 2), []).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": optim.head_lr if in_head else optim.lr,
          "weight_decay": 0.0 if no_decay else optim.weight_decay} for (in_head, no_decay), params in groups.items()],
        lr=optim.lr, fused=True)
    steps = -(-len(train) // cfg.train.micro_batch_size)
    args = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=cfg.train.micro_batch_size,
        per_device_eval_batch_size=cfg.train.eval_batch_size, num_train_epochs=1, learning_rate=optim.lr,
        weight_decay=optim.weight_decay, lr_scheduler_type="linear", warmup_steps=round(optim.warmup_ratio * steps),
        max_grad_norm=optim.max_grad_norm, seed=cfg.train.seed, use_cpu=not torch.cuda.is_available(),
        save_strategy="no", eval_strategy="no", logging_steps=50, report_to="none", disable_tqdm=True,
        train_sampling_strategy=sampling, torch_compile=compiled)

    class LoopClock(TrainerCallback):  # the loop alone, as emodist's meter times it
        def on_train_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_train_end(self, *_, **__):
            self.seconds = time.perf_counter() - self.start

    clock = LoopClock()
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                      optimizers=(optimizer, None), callbacks=[clock])
    trainer.train()
    prediction = trainer.predict(dev)
    tokens = int(np.sum([len(ids) for ids in train["input_ids"]]))
    return {"examples_per_s": len(train) / clock.seconds, "tokens_per_s": tokens / clock.seconds,
            "train_seconds": clock.seconds, **dev_scores(prediction.label_ids, expit(prediction.predictions), labels)}


def dev_scores(targets, probabilities, labels: list[str]) -> dict:
    """Dev micro-F1 at 0.5 and at the best single threshold (the same code for both sides). After one epoch
    of a few thousand examples few probabilities reach 0.5 yet, so the best threshold is what compares the
    two models' quality."""
    from emodist.scoring import thresholds
    from emodist.scoring.metrics import multilabel_metrics

    best = thresholds.tune(targets, probabilities, labels)["global"]
    return {"dev_f1_micro_05": multilabel_metrics(targets, probabilities, labels)["f1_micro"],
            "dev_f1_micro": multilabel_metrics(targets, probabilities, labels, best)["f1_micro"],
            "best_threshold": best}


# --- the driver ----------------------------------------------------------------------------------------

def peak_rss_mib(child: subprocess.Popen) -> tuple[float, int]:
    """(peak RSS in MiB of `child` and the children it waited for: wait4's ru_maxrss; its exit code)."""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, child.returncode


class SideFailed(SystemExit):
    """A side's run failed: the bench ends with this message (exit code 1) and keeps its work directory."""


def measure(side: str, args, work: Path) -> dict:
    """Run one side in a child process; its result plus its peak RSS: the process that trained and evaluated
    (emodist's train.py, which the emodist worker starts; the Trainer's worker itself), not the bench's own
    scoring of emodist's exported model, which the worker does after train.py has ended."""
    out = work / f"{side}.json"
    command = [sys.executable, __file__, "--worker", side, "--out", str(out), "--examples", str(args.examples),
               "--data-dir", str(args.data_dir), *(f"--set={o}" for o in args.set),
               *([f"--eval-examples={args.eval_examples}"] if args.eval_examples else [])]
    started = time.perf_counter()
    rss_mib, code = peak_rss_mib(subprocess.Popen(command, cwd=ROOT))
    if code != 0:
        raise SideFailed(f"throughput: the {side} run failed (exit {code}): see its messages above; its files are "
                         f"kept in {work}")
    result = json.loads(out.read_text())
    return {"peak_rss_mib": rss_mib, **result, "wall_seconds": time.perf_counter() - started}


def table(rows: list[tuple[str, int, dict]]) -> str:
    lines = ["| run | repeat | examples/s | real tokens/s | train loop s | peak RSS MiB | dev micro-F1 (best threshold) "
             "| dev micro-F1 (0.5) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for side, repeat, r in rows:
        lines.append(f"| {side} | {repeat} | {r['examples_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
                     f"{r['train_seconds']:.1f} | {r['peak_rss_mib']:.0f} | {r['dev_f1_micro']:.4f} "
                     f"({r['best_threshold']:.2f}) | {r['dev_f1_micro_05']:.4f} |")
    return "\n".join(lines)


def summarize(rows: list[tuple[str, int, dict]]) -> dict:
    """Medians per side; emodist's ratios against each Trainer setting, and emodist-packed's against emodist."""
    sides = dict.fromkeys(side for side, _, _ in rows)
    median = {side: {k: statistics.median(r[k] for s, _, r in rows if s == side)
                     for k in ("examples_per_s", "tokens_per_s", "peak_rss_mib", "dev_f1_micro")}
              for side in sides}
    out = {"median": median, "against": {side: ratios(median["emodist"], median[side])
                                         for side in (*TRAINERS, COMPILED) if side in median}}
    if "emodist-packed" in median:
        out["packed"] = ratios(median["emodist-packed"], median["emodist"])
    return out


def ratios(side: dict, other: dict) -> dict:
    return {"ratio": side["examples_per_s"] / other["examples_per_s"],
            "f1_gap": side["dev_f1_micro"] - other["dev_f1_micro"], "rss_ratio": side["peak_rss_mib"] / other["peak_rss_mib"]}


def verdict(s: dict) -> str:
    """One line per Trainer setting, the headline (its best setting) last; before them, with --packed, packed
    random batches against length-grouped ones."""
    lines = []
    if "packed" in s:
        r = s["packed"]
        lines.append(f"emodist packed random batches / length-grouped batches: {r['ratio']:.2f}x examples/s, dev "
                     f"micro-F1 gap {r['f1_gap']:+.4f}, peak RSS {r['rss_ratio']:.2f}x; medians")
    for side in (COMPILED, *reversed(TRAINERS)):
        if side not in s["against"]:
            continue
        r = s["against"][side]
        target = " (target >= 1.3x)" if side == "trainer-grouped" else ""
        setting = TRAINERS.get(side, "group_by_length, torch_compile")
        lines.append(f"emodist / Trainer ({setting}): {r['ratio']:.2f}x examples/s{target}, dev micro-F1 "
                     f"gap {r['f1_gap']:+.4f} (target within 0.01), peak RSS {r['rss_ratio']:.2f}x (target <= 1); "
                     "medians")
    return "\n".join(lines)


def record_results(rows, summary, args, wall: float) -> None:
    from results import machine, record

    command = f"python bench/throughput.py --examples {args.examples} --repeats {args.repeats}" + (
        " --packed" if args.packed else "") + (" --trainer-compile" if args.trainer_compile else "") + "".join(
        f" --set={o}" for o in args.set) + (f" --eval-examples {args.eval_examples}" if args.eval_examples else "")
    record(MARK, f"### emodist vs transformers.Trainer, minilm, {args.examples} GoEmotions train examples, 1 epoch\n\n"
                 f"- command: `{command}`\n- machine: {machine()}\n"
                 f"- wall time: {wall / 60:.1f} min; recorded {time.strftime('%Y-%m-%d')}\n"
                 f"- result:\n" + "".join(f"  - {line}\n" for line in verdict(summary).splitlines())
                 + f"\n{table(rows)}",
           heading="## Training throughput against the HF Trainer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=4096, help="train examples (default 4096)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs of runs (default 3)")
    parser.add_argument("--eval-examples", type=int, help="score on a seeded dev subset of this size (default: all)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="GoEmotions in its original layout")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an emodist setting for its side (e.g. --set data.pad_to_multiple_of=1)")
    parser.add_argument("--packed", action="store_true",
                        help="add emodist with random batches packed without padding (data.packing) as a fourth side")
    parser.add_argument("--trainer-compile", action="store_true",
                        help="add the Trainer with length grouping and torch_compile=True as a side")
    parser.add_argument("--record", action="store_true", help="write the results into bench/RESULTS.md")
    parser.add_argument("--worker", choices=(*SIDES, "emodist-packed", COMPILED), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.worker:  # a child of the bench, its arguments checked by the bench
        return worker(args)
    from emodist.runtime import errors

    return errors.run_main(lambda: run(args))


def check(args: argparse.Namespace) -> None:
    """UsageError for a bad argument, before any work starts: no temporary directory, no side run yet."""
    import checks

    from emodist import config

    checks.at_least(1, ("--examples", args.examples), ("--repeats", args.repeats),
                    ("--eval-examples", args.eval_examples))
    for packed in ((), *([PACKED] if args.packed else [])):  # the settings of each emodist side, --set among them
        config.load("minilm", overrides=[*data_settings(args.examples, args.eval_examples), *EMODIST_SETTINGS,
                                         *args.set, *packed])
    checks.goemotions(args.data_dir, ("train", "dev"))


def worker(args: argparse.Namespace) -> int:
    """One side's run, in a process of its own; its result goes to --out."""
    work = args.out.parent
    settings = data_settings(args.examples, args.eval_examples)
    if args.worker.startswith("emodist"):
        packed = PACKED if args.worker == "emodist-packed" else ()
        result = run_emodist(args.data_dir, [*settings, *args.set, *packed], work, args.worker)
    else:
        result = run_trainer(args.data_dir, settings, work, TRAINERS.get(args.worker, "group_by_length"),
                             compiled=args.worker == COMPILED)
    args.out.write_text(json.dumps(result))
    return 0


def run(args: argparse.Namespace) -> int:
    check(args)
    started = time.perf_counter()
    rows = []
    sides = (*SIDES, *(["emodist-packed"] if args.packed else []), *([COMPILED] if args.trainer_compile else []))
    work = Path(tempfile.mkdtemp(prefix="emodist-throughput-"))
    try:
        for repeat in range(1, args.repeats + 1):
            turn = repeat % len(sides)
            for side in sides[turn:] + sides[:turn]:  # each side first in turn
                result = measure(side, args, work)
                rows.append((side, repeat, result))
                print(f"{side:15} repeat {repeat}: {result['examples_per_s']:.1f} examples/s, "
                      f"{result['tokens_per_s']:.0f} tokens/s, peak RSS {result['peak_rss_mib']:.0f} MiB, "
                      f"dev micro-F1 {result['dev_f1_micro']:.4f} (best threshold {result['best_threshold']:.2f}), "
                      f"{result['dev_f1_micro_05']:.4f} at 0.5", flush=True)
    except SideFailed:
        raise  # its message names `work`, which stays for its logs
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    summary = summarize(rows)
    print(table(rows))
    if args.record:
        record_results(rows, summary, args, time.perf_counter() - started)
    print(verdict(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
