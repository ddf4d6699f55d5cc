"""Rehearse the big paths at their true shapes on a CPU: random weights of the real sizes, every phase timed.

    python bench/rehearse.py gemma-lora [--steps 4] [--record]   # 2.5B, bf16 base, one process
    python bench/rehearse.py gemma-lora-zero3 [--record]         # the same under DeepSpeed ZeRO-3, 2 processes
    python bench/rehearse.py mistral-qlora [--record]            # 7.2B: bf16 shards quantized to 4-bit on load

The base is the variant's `model.smoke_size=real` base (random weights of the real model's sizes, saved once
in 5 GB safetensors shards in the cache and read back the way a user's hub model is). Each case trains LoRA
r=16 with gradient checkpointing on micro batches of 2 texts padded to 64 tokens (a global batch of 2 per
process), a checkpoint every 2 optimizer steps, and then:

1. an uninterrupted run of --steps optimizer steps (its summary holds the memory plan and the measured peak);
2. the same run stopped by SIGTERM once its second step is logged: it saves a checkpoint and exits 75;
3. that run resumed (--resume auto) to the end: its losses after the resume must be (1)'s;
4. launch/export.py merges the adapters into 16-bit shards, and launch/predict.py labels a text with them.

Recorded per case: the base's making (seconds, peak RSS: one copy of the weights), planned and measured
peak (host RSS of the training process: its training steps' peak, which the plan predicts, and the whole
run's), seconds per phase, the checkpoint's and the export's bytes, the largest loss difference after the
resume. --record writes them into bench/RESULTS.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
MARK = "rehearsal"
CASES = {
    "gemma-lora": ("gemma-lora", None, 1),
    "gemma-lora-zero3": ("gemma-lora", "deepspeed_zero3.yaml", 2),
    "mistral-qlora": ("mistral-qlora", None, 1),
}


def settings(steps: int, cache: Path, processes: int = 1) -> list[str]:
    return ["--smoke", "--wandb", "off", "model.smoke_size=real", f"train.max_steps={steps}",
            f"train.global_batch_size={2 * processes}", "train.micro_batch_size=2", "train.eval_batch_size=8", "data.max_length=64",
            "data.pad_to_multiple_of=64", "model.lora.r=16", "model.gradient_checkpointing=true",
            "train.log_every_steps=1", "train.save_every_steps=2", "train.eval_every_steps=0",
            "data.max_eval_examples=8", "track.plots=false", f"data.cache_dir={cache}"]


def command(variant: str, config_file: str | None, processes: int, run_dir: Path, extra: list[str]) -> list[str]:
    script = [str(ROOT / "launch" / "train.py"), "--variant", variant, "--output-dir", str(run_dir), *extra]
    if config_file is None:
        return [sys.executable, *script]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "accelerate_configs" / config_file), "--num_processes", str(processes),
            "--main_process_port", "0", "-q", *script]


def timed(cmd: list[str], log: Path, stop_after_step: int | None = None, metrics: Path | None = None) -> dict:
    """Run `cmd` (SIGTERM to its process group once `metrics` logs `stop_after_step`); its exit code, wall
    seconds and the peak RSS of its largest process (wait4's ru_maxrss covers the biggest descendant)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while stop_after_step is not None and process.poll() is None:
            if metrics.exists() and any(json.loads(line).get("step", 0) >= stop_after_step
                                        for line in metrics.read_text().splitlines() if line.strip()):
                stop_training(process.pid)
                break
            time.sleep(1)
        _, status, usage = os.wait4(process.pid, 0)
    return {"rc": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - started,
            "peak_rss": usage.ru_maxrss * 1024}


def stop_training(pid: int) -> None:
    """SIGTERM to the training processes, as a scheduler's preemption: not to `accelerate launch`, which
    would kill them 5 s later, before a checkpoint of billions of weights is written."""
    import psutil

    top = psutil.Process(pid)
    workers = [p for p in top.children(recursive=True) if any(a.endswith("launch/train.py") for a in p.cmdline())]
    for process in workers or [top]:  # the launcher's own command line names launch/train.py too
        process.send_signal(signal.SIGTERM)


def newest_step(run_dir: Path) -> int:
    return max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step-"))


def losses(run_dir: Path) -> dict[int, float]:
    """The train loss of every logged step (the last line wins: a resumed run logs its own)."""
    found = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "train/loss" in record:
            found[record["step"]] = record["train/loss"]
    return found


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


BUILD = """
import sys
from pathlib import Path
from emodist import config, data, models
cfg = config.load(sys.argv[1], overrides=sys.argv[2:], smoke=True)
texts = data.load(cfg.data, seed=cfg.train.seed).splits["train"].texts
directory = models.smoke_base_dir(cfg, Path("unused"), texts)
print("base:", "reused" if (directory / "config.json").exists() else "made", directory)
models.make_smoke_base(cfg.model.architecture, texts, directory, seed=cfg.train.seed, size="real")
"""


def rehearse(case: str, steps: int, work: Path, cache: Path) -> dict:
    variant, config_file, processes = CASES[case]
    extra = settings(steps, cache, processes)
    whole, stopped = work / f"{case}-whole", work / f"{case}-stopped"
    # the base first, in a process of its own: a user's run reads its base from files, it does not make one
    overrides = [a for a in extra if "=" in a and not a.startswith("--")]
    built = timed([sys.executable, "-c", BUILD, variant, *overrides], work / f"{case}-base.log")
    if built["rc"] != 0:
        raise SystemExit(f"rehearse: {case}'s base could not be built: see {work / f'{case}-base.log'}")
    built["reused"] = "base: reused" in (work / f"{case}-base.log").read_text()
    print(f"rehearse {case}: uninterrupted run of {steps} steps", flush=True)
    first = timed(command(variant, config_file, processes, whole, extra), work / f"{case}-whole.log")
    if first["rc"] != 0:
        raise SystemExit(f"rehearse: {case} failed (exit {first['rc']}): see {work / f'{case}-whole.log'}")
    summary = json.loads((whole / "summary.json").read_text())
    print(f"rehearse {case}: stopped after step 2, then resumed", flush=True)
    kill = timed(command(variant, config_file, processes, stopped, extra), work / f"{case}-stopped.log",
                 stop_after_step=2, metrics=stopped / "metrics.jsonl")
    resume_from = newest_step(stopped)
    resumed = timed(command(variant, config_file, processes, stopped, [*extra, "--resume", "auto"]),
                    work / f"{case}-resumed.log")
    resumed_summary = json.loads((stopped / "summary.json").read_text()) if resumed["rc"] == 0 else {}
    checkpoint = whole / "checkpoints" / f"step-{newest_step(whole)}"
    after = {step: loss for step, loss in losses(stopped).items() if step > resume_from}
    reference = losses(whole)
    print(f"rehearse {case}: export and reload", flush=True)
    export_dir = work / f"{case}-export"
    exported = timed([sys.executable, str(ROOT / "launch" / "export.py"), str(whole), "--output", str(export_dir)],
                     work / f"{case}-export.log")
    reload = timed([sys.executable, str(ROOT / "launch" / "predict.py"), str(export_dir), "so happy and surprised"],
                   work / f"{case}-predict.log")
    perf = summary["perf"]
    return {
        "case": case, "processes": processes, "base_s": built["seconds"], "base_peak_rss": built["peak_rss"],
        "base_reused": built["reused"],
        "planned_peak_bytes": perf["planned_peak_bytes"], "measured_peak_bytes": perf["peak_memory_bytes"],
        "training_rss": perf["training_peak_memory_bytes"],  # the steps' peak: what the plan predicts
        "load_s": perf["phase_seconds"]["load"], "step_s_median": perf.get("step_seconds_median"),
        "train_s": perf["phase_seconds"]["train"], "run_s": first["seconds"],
        "checkpoint_bytes": size_of(checkpoint), "stop_rc": kill["rc"], "resume_rc": resumed["rc"],
        "resume_load_s": resumed_summary.get("perf", {}).get("phase_seconds", {}).get("load"),
        "resumed_from": resume_from,
        "resume_max_loss_diff": max((abs(after[s] - reference[s]) for s in after), default=None),
        "export_rc": exported["rc"], "export_s": exported["seconds"], "export_peak_rss": exported["peak_rss"],
        "export_bytes": size_of(export_dir) if export_dir.exists() else None,
        "reload_rc": reload["rc"], "reload_s": reload["seconds"], "reload_peak_rss": reload["peak_rss"],
    }


def table(rows: list[dict]) -> str:
    gib = 2**30
    lines = ["| case | procs | base made (s, peak RSS) | planned peak | RSS training (plan/RSS) | peak RSS incl. "
             "loading | load s | step s (median) | checkpoint | stop, resume | loss diff after resume | export s | "
             "export | export peak RSS | reload |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        diff = "-" if r["resume_max_loss_diff"] is None else f"{r['resume_max_loss_diff']:.1e}"
        base = "cached" if r["base_reused"] else f"{r['base_s']:.0f} s, {r['base_peak_rss'] / gib:.2f} GiB"
        lines.append(
            f"| {r['case']} | {r['processes']} | "
            f"{base} | "
            f"{r['planned_peak_bytes'] / gib:.2f} GiB | "
            f"{r['training_rss'] / gib:.2f} GiB ({r['planned_peak_bytes'] / r['training_rss']:.2f}) | "
            f"{r['measured_peak_bytes'] / gib:.2f} GiB | "
            f"{r['load_s']:.0f} | {r['step_s_median'] or 0:.1f} | {r['checkpoint_bytes'] / 2**20:.1f} MiB | "
            f"exit {r['stop_rc']} at step {r['resumed_from']}, exit {r['resume_rc']} | {diff} | "
            f"{r['export_s']:.0f} | {(r['export_bytes'] or 0) / gib:.2f} GiB | {r['export_peak_rss'] / gib:.2f} GiB | "
            f"exit {r['reload_rc']} in {r['reload_s']:.0f} s |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="+", choices=[*CASES, "all"])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps of each run (default 4)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("EMODIST_CACHE", Path.home() / ".cache" /
                                                                          "emodist")),
                        help="where the real-size bases are built once (default: emodist's cache)")
    parser.add_argument("--record", action="store_true", help="write the table into bench/RESULTS.md")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cases = list(CASES) if "all" in args.cases else args.cases
    started = time.perf_counter()
    rows = []
    work = Path(tempfile.mkdtemp(prefix="emodist-rehearse-"))  # kept when a case fails: its logs are there
    for case in cases:
        rows.append(rehearse(case, args.steps, work, args.cache))
        print(json.dumps(rows[-1]), flush=True)
    shutil.rmtree(work)
    print(table(rows))
    if args.record:
        from results import machine, record

        record(MARK, f"### `python bench/rehearse.py {' '.join(args.cases)} --steps {args.steps}`\n\n"
                     f"- machine: {machine()}\n- wall time: {(time.perf_counter() - started) / 60:.1f} min; "
                     f"recorded {time.strftime('%Y-%m-%d')}\n\n{table(rows)}",
               heading="## Rehearsal at true shapes (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
