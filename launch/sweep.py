"""Run a sweep: every trial of a spec (a grid, or seeded random draws, over any config keys) as a normal emodist
run directory under one sweep directory, all in one wandb group.

    python launch/sweep.py SPEC.yaml --local             # the trials one after another, here
    python launch/sweep.py SPEC.yaml --slurm [--wait] [-- SBATCH_ARG ...]   # one SLURM job array
    python launch/sweep.py SPEC.yaml --list              # the trials: finished, at step N, or to run; runs nothing
    python launch/compare.py runs/sweeps/NAME --rank-by dev_tuned.f1_macro  # rank them; the winner's config

The spec format is in emodist/sweep/spec.py (and the README's Sweeps section). Running a sweep again skips its
finished trials and resumes the others from their checkpoints (--resume auto); under SLURM each array task is
requeue-safe the same way (slurm/sweep.sbatch). Exit codes: 0 every trial finished (or, --slurm, the array was
submitted), 1 a trial failed, 2 refused (one line says why), 130 interrupted (run it again to continue).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emodist.runtime import errors


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    sbatch_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s SPEC (--local | --slurm [--wait] | --list) [--output-dir DIR] "
                                           "[-- SBATCH_ARG ...]")
    parser.add_argument("spec", type=Path, help="the sweep spec (YAML)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--local", action="store_true", help="train the unfinished trials here, one after another")
    mode.add_argument("--slurm", action="store_true", help="submit the unfinished trials as one SLURM job array")
    mode.add_argument("--list", action="store_true", help="show the trials and which are finished; run nothing")
    parser.add_argument("--wait", action="store_true", help="--slurm: return when the array has ended (sbatch --wait)")
    parser.add_argument("--output-dir", type=Path, help="the sweep directory (default: the spec's output_dir, else "
                                                        "runs/sweeps/<name>)")
    args = parser.parse_args(argv)
    if (args.wait or sbatch_args) and not args.slurm:
        parser.error("--wait and sbatch arguments after -- go with --slurm")
    return args, sbatch_args


def main(argv: list[str] | None = None) -> int:
    args, sbatch_args = parse_args(argv)
    return errors.run_main(lambda: sweep(args, sbatch_args))


def sweep(args: argparse.Namespace, sbatch_args: list[str]) -> int:
    from emodist.sweep import runner, spec

    loaded = spec.load(args.spec, args.output_dir)
    if args.list:
        runner.started(loaded)  # another sweep's directory: its trials are not this spec's to call finished
        for trial in loaded.trials:
            print(f"{trial.name:<60} {runner.state(loaded, trial):<14} {' '.join(trial.overrides)}")
        return 0
    if args.slurm:
        runner.check_slurm()  # before the sweep directory is written
    runner.prepare(loaded)
    todo = runner.pending(loaded)
    where = loaded.output_dir
    print(f"emodist-sweep: {loaded.name}: {len(loaded.trials)} trial(s) in {where}, {len(todo)} to run", flush=True)
    if not todo:
        return _finished(loaded)
    if args.slurm:
        cap = min(loaded.max_parallel, len(todo))
        runner.submit_slurm(loaded, sbatch_args, wait=args.wait, submitted=lambda job: print(
            f"emodist-sweep: job array {job}: {len(todo)} task(s), {cap} at once; logs in {where / 'logs'}", flush=True))
        return _finished(loaded) if args.wait else 0
    try:
        failed = runner.run_local(loaded)
    except KeyboardInterrupt:
        print("emodist-sweep: interrupted: run the same command again to continue (finished trials are skipped, "
              "the others resume from their checkpoints)", file=sys.stderr)
        return errors.EXIT_INTERRUPTED
    if failed:
        print(f"emodist-sweep: {len(failed)} trial(s) failed: {', '.join(failed)}: see their messages above; run "
              "the same command again to retry them", file=sys.stderr)
        return 1
    return _finished(loaded)


def _finished(loaded) -> int:
    print(f"emodist-sweep: every trial finished: rank them with python launch/compare.py {loaded.output_dir} "
          f"--rank-by {loaded.metric}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
