"""CPU training speed on a quiet and on a busy machine: OpenMP's wait policy and the thread count.

    python bench/threads.py [--busy 0 1 2] [--steps 100] [--real-steps 30] [--repeats 1] [--record]

Each run is `accelerate launch launch/train.py --variant minilm`: --steps optimizer steps on the `--smoke`
model and data, and --real-steps on the real MiniLM with 2,048 GoEmotions train examples of up to 64
tokens (skipped when the data set is absent), beside 0, 1 or 2 busy processes (a Python loop each, standing for another user's
job). Three settings:

- `emodist`: what a user gets (idle OpenMP threads sleep: OMP_WAIT_POLICY=PASSIVE, set by the launch script)
- `spinning`: libgomp's own default, idle threads spin ~3 ms before they sleep (GOMP_SPINCOUNT=300000,
  the value libgomp uses when OMP_WAIT_POLICY is unset)
- `1 thread`: `train.cpu_threads=1` with the spinning default, the workaround the default must match

`--spin-counts N ...` adds a setting `spinN` for each N: idle threads spin N times before they sleep
(GOMP_SPINCOUNT=N), the middle ground between the two policies.

The measure is the training phase's seconds from the run's summary.json (`perf.phase_seconds.train`),
which leaves out start-up; the wall time of the whole command is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
DATA = Path(os.environ.get("EMODIST_GOEMOTIONS", ROOT.parent / "shared" / "data" / "goemotions"))
SETTINGS = {
    "emodist": ({}, []),
    "spinning": ({"GOMP_SPINCOUNT": "300000"}, []),
    "1 thread": ({"GOMP_SPINCOUNT": "300000"}, ["train.cpu_threads=1"]),
}


def workloads(steps: int, real_steps: int) -> dict[str, list[str]]:
    found = {"smoke": ["--smoke", f"train.max_steps={steps}"]}
    if (DATA / "train.tsv").is_file():
        found["goemotions"] = ["--data-dir", str(DATA), "data.max_train_examples=2048", "data.max_eval_examples=256",
                               "data.max_length=64", f"train.max_steps={real_steps}"]
    common = ["train.eval_every_steps=0", "--wandb", "off", "track.plots=false"]
    return {name: args + common for name, args in found.items()}


def run_once(args: list[str], env: dict, out: Path) -> tuple[float, float]:
    """(training seconds, wall seconds) of one training run."""
    started = time.perf_counter()
    done = subprocess.run(["accelerate", "launch", "--num_processes", "1", str(ROOT / "launch" / "train.py"),
                           "--variant", "minilm", "--output-dir", str(out), *args],
                          env={**os.environ, **env}, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"threads: a run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    perf = json.loads((out / "summary.json").read_text())["perf"]
    return perf["phase_seconds"]["train"], wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy processes beside each run")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of a smoke run (default 100)")
    parser.add_argument("--real-steps", type=int, default=30, help="optimizer steps of a GoEmotions run (default 30)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell, alternating settings (default 1)")
    parser.add_argument("--record", action="store_true", help="write the table into bench/RESULTS.md")
    parser.add_argument("--spin-counts", type=int, nargs="*", default=[], metavar="N",
                        help="add a setting whose idle threads spin N times before they sleep (GOMP_SPINCOUNT=N)")
    args = parser.parse_args(argv)
    from emodist.runtime import errors

    return errors.run_main(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    import checks

    checks.at_least(0, ("--busy", args.busy), ("--spin-counts", args.spin_counts))
    checks.at_least(1, ("--steps", args.steps), ("--real-steps", args.real_steps), ("--repeats", args.repeats))
    settings = {**{f"spin{n}": ({"GOMP_SPINCOUNT": str(n)}, []) for n in args.spin_counts}, **SETTINGS}
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"):
        os.environ.pop(name, None)  # each setting states its own
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled")
    rows = []
    with tempfile.TemporaryDirectory(prefix="emodist-threads-") as tmp:
        for workload, train_args in workloads(args.steps, args.real_steps).items():
            for busy in args.busy:
                hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
                try:
                    cells = {name: [] for name in settings}
                    for repeat in range(args.repeats):
                        order = list(settings) if repeat % 2 == 0 else list(reversed(settings))
                        for name in order:
                            env, extra = settings[name]
                            out = Path(tmp) / f"{workload}-{busy}-{name.replace(' ', '')}-{repeat}"
                            cells[name].append(run_once(train_args + extra, env, out))
                finally:
                    for hog in hogs:
                        hog.kill()
                        hog.wait()
                row = [workload, busy] + [min(train for train, _ in cells[name]) for name in settings]
                walls = [min(wall for _, wall in cells[name]) for name in settings]
                rows.append(row)
                print(f"{workload:10} busy {busy}: " + ", ".join(
                    f"{name} {train:.1f} s (wall {wall:.0f} s)" for name, train, wall in zip(settings, row[2:], walls, strict=True)),
                    flush=True)
    table = ("| workload | busy processes | " + " | ".join(f"{name} (s)" for name in settings) + " |\n|---|---:|"
             + "---:|" * len(settings) + "\n"
             + "\n".join(f"| {w} | {b} | " + " | ".join(f"{t:.1f}" for t in times) + " |" for w, b, *times in rows))
    print(table)
    if args.record:
        from results import machine, record

        record("cpu-threads", f"### Training seconds on a quiet and a busy machine (`bench/threads.py`)\n\n"
                              f"- command: `python bench/threads.py --busy {' '.join(map(str, args.busy))} --steps "
                              f"{args.steps} --real-steps {args.real_steps} --repeats {args.repeats}"
                              + (f" --spin-counts {' '.join(map(str, args.spin_counts))}" if args.spin_counts else "")
                              + f"`\n- machine: {machine()}\n"
                              f"- recorded {time.strftime('%Y-%m-%d')}; {args.steps} optimizer steps (smoke) or "
                              f"{args.real_steps} (goemotions); the training phase only, the fastest of "
                              f"{args.repeats} run(s)\n\n{table}",
               heading="## CPU threads under load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
