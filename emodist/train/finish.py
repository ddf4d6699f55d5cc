"""The end of a run: final dev and test evaluation, thresholds tuned on dev, the exported model,
summary.json, the end tables and plots/.
"""

from __future__ import annotations

import math
import time

import torch
from scipy.special import expit

from emodist import data as data_mod
from emodist.models import BuiltModel
from emodist.report import roofline, telemetry
from emodist.runtime import files
from emodist.scoring import thresholds
from emodist.serve import model_dir
from emodist.train import evaluation, saving
from emodist.train.evaluation import log_scores, run_eval
from emodist.train.loop import diverged_at
from emodist.train.state import Session


def finish(s: Session, built: BuiltModel, data: data_mod.EmotionData) -> dict:
    """Final dev and test evaluation at 0.5, thresholds tuned on dev toward train.threshold_objective and the
    dev and test scores with them (`dev_tuned`, `test_tuned`), export, thresholds.json (run directory and model/),
    summary.json, the end tables, plots/."""
    dev, dev_logits, dev_targets = run_eval(s, "dev", prefix="eval")
    if not math.isfinite(dev["loss"]):  # the last step's weights: nothing to tune thresholds on or export
        raise diverged_at(s, "dev loss")
    test, test_logits, test_targets = run_eval(s, "test", prefix="test")
    tuned = thresholds.tune(dev_targets, expit(dev_logits), s.labels, s.cfg.train.threshold_objective,
                            bootstrap=s.cfg.train.threshold_bootstrap, seed=s.cfg.train.seed)
    if untrained := data_mod.untrained_labels(data):  # said beside the labels the dev scores call unlearned
        tuned["no_train_positives"] = untrained
    tuned["max_length"] = s.cfg.data.max_length  # tuned at this length: predict reads as many tokens
    # which finish: an export carries it, so a push of an earlier finish's export is told apart (tuned thresholds,
    # on a grid of 0.01, often come out the same after more training)
    tuned["finished"] = f"step {s.step}, {time.strftime('%Y-%m-%dT%H:%M:%S')}"
    cut = thresholds.for_labels(tuned, s.labels)
    dev_tuned = evaluation.score(dev_logits, dev_targets, s.labels, cut)  # what model selection reads (sweeps)
    test_tuned = evaluation.score(test_logits, test_targets, s.labels, cut)
    log_scores(s, "dev_tuned", dev_tuned)
    log_scores(s, "test_tuned", test_tuned)
    saving.check_in_place(s)  # the final checkpoint checked it, but the evaluations took a while
    with s.phases.measure("save"):
        kept = model_dir.export_model(s.accelerator, s.model, built.tokenizer, s.run_dir / "model", s.cfg)
    summary = summarize(s, built, data, dev, test, perf_totals(s, built))
    summary.update(dev_tuned=dev_tuned, test_tuned=test_tuned, thresholds=tuned)
    if s.accelerator.is_main_process:
        for directory in (s.run_dir, s.run_dir / "model"):
            thresholds.save(directory / thresholds.FILE, tuned)
        if s.cfg.track.plots:
            draw_plots(s, summary)
        files.write_json(s.run_dir / "summary.json", summary)  # last: a run is finished exactly when it exists
        s.console.final(summary)
        if (unlearned := thresholds.warning(tuned)) is not None:
            s.console.print(f"emodist: warning: {unlearned}")
        if kept:
            s.console.print(f"emodist: note: kept {', '.join(kept)} in {s.run_dir / 'model'}: files emodist did not "
                            "write, from before this finish")
        if stale := sorted(p.name for p in s.run_dir.glob("export*") if p.is_dir()):  # exported before this finish
            one = len(stale) == 1
            s.console.print(f"emodist: note: {', '.join(stale)} {'holds' if one else 'hold'} the model of an earlier "
                            f"finish of this run, not this one: delete {'it' if one else 'them'} and export again "
                            f"(launch/export.py {s.run_dir})")
        s.console.print(f"run directory: {s.run_dir}")
    return summary


def perf_totals(s: Session, built: BuiltModel) -> dict:
    """summary.json's `perf`: throughput over every session of the run, this session's step times, peak
    memory per rank (over the run, and over this session's training steps: what the plan predicts) and seconds
    per phase, MFU."""
    perf = s.meter.totals(s.accelerator)
    perf.update(telemetry.peak_memory(s.accelerator, s.peak_before_steps, s.training_peak))
    planned = s.memory_plan
    perf["planned_peak_bytes"] = planned.peak_bytes if planned else None
    perf["memory_plan"] = {row.name: row.bytes for row in planned.rows} if planned else None
    perf.update(telemetry.mfu(perf, built.params_total, built.params_trainable, built.model.config,
                              s.accelerator.num_processes, s.accelerator.device, cpu_gemm_peak(s, built, perf)))
    perf["phase_seconds"] = {"load": 0.0, "tokenize": 0.0, **s.phases.seconds, "train": s.meter.elapsed()}
    return perf


def cpu_gemm_peak(s: Session, built: BuiltModel, perf: dict) -> float | None:
    """On CPUs, this process's GEMM rate at the model's shapes for the run's mean micro-batch, in the dtype the
    steps multiply in (emodist.report.roofline; measured once per machine and shapes); None on GPUs."""
    if s.accelerator.device.type != "cpu" or not perf["train_samples"]:
        return None
    rows = s.cfg.train.micro_batch_size
    tokens = 16 * max(1, round(rows * perf["train_padded_tokens"] / perf["train_samples"] / 16))  # near ones share
    gemms = roofline.model_gemms(built.model, tokens, rows, s.cfg.model.head_modules)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(s.accelerator.mixed_precision, built.model.dtype)
    return roofline.cached_gemm_rate(gemms, dtype, files.cache_root(s.cfg.data.cache_dir),
                                     write=s.accelerator.is_main_process)


def draw_plots(s: Session, summary: dict) -> None:
    """plots/ of the run; a plot that fails costs a warning, not the finished run."""
    from emodist.report import plots

    try:
        plots.run(s.run_dir, summary)
    except Exception as err:  # noqa: BLE001 - the model is written, and summary.json is written next
        s.console.print(f"emodist: warning: plots/ not drawn ({type(err).__name__}: {err}); "
                        "summary.json and metrics.jsonl hold every number")


def summarize(s: Session, built: BuiltModel, data: data_mod.EmotionData, dev: dict, test: dict,
              perf: dict) -> dict:
    cfg, acc = s.cfg, s.accelerator
    shared = data_mod.shared_with_train(data.splits)
    return {
        "variant": cfg.variant,
        "base_model": cfg.model.name_or_path,
        "base_model_source": built.source,
        "method": cfg.model.method,
        "quantization": cfg.model.quantization,
        "smoke": cfg.smoke,
        "dataset": data.name,
        "labels": data.labels,
        "num_processes": acc.num_processes,
        "num_nodes": s.topology.num_nodes,
        "distributed_type": s.topology.distributed_type,
        "zero_stage": s.topology.zero_stage,
        "mixed_precision": saving.trained_in(s),
        "params": {"total": built.params_total, "trainable": built.params_trainable},
        "train": {"steps": s.step, "epochs": s.epochs_done,
                  "examples": len(data.splits["train"]), "global_batch_size": cfg.train.global_batch_size,
                  "micro_batch_size": cfg.train.micro_batch_size,
                  "gradient_accumulation_steps": s.plan.accumulation, "final_loss": s.last_loss},
        "splits": {name: {"examples": len(split), "fingerprint": data_mod.split_fingerprint(split),
                          **({"in_train": shared[name]} if name in shared else {})}
                   for name, split in data.splits.items()},
        "dev": dev,
        "test": test,
        "perf": perf,
    }
