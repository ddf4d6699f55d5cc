"""A sweep's directory and how its trials run: in sequence here (`--local`), or as one SLURM job array
(`--slurm`, slurm/sweep.sbatch: one array task per unfinished trial, at most `max_parallel` at once).

    SWEEP/                       runs/sweeps/<name> unless the spec or --output-dir says otherwise
      trials.json                the expanded trials: index, name, overrides (written once; a re-run must match)
      sweep.yaml                 the spec the sweep was started from
      <trial name>/              each trial: a normal emodist run directory (launch/compare.py SWEEP reads them)
      logs/                      the SLURM array's output files

A trial is finished when its run directory holds summary.json: a re-run of the same spec skips those, and
every other trial runs with `--resume auto`, so one that stopped (a preempted, requeued or interrupted job)
continues from its newest checkpoint. A directory that holds another sweep, or anything that is not a sweep,
is refused: nothing in it is touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from emodist.runtime import files
from emodist.runtime.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, UsageError
from emodist.sweep.spec import MANIFEST, Sweep, Trial

STOPPED = (EXIT_PREEMPTED, EXIT_INTERRUPTED)
"""launch/train.py's exit statuses for a run stopped by a signal (checkpoint saved) or by Ctrl-C while loading."""
ROOT = Path(__file__).resolve().parents[2]
"""The repository: launch/train.py and slurm/sweep.sbatch are found from here."""


def prepare(sweep: Sweep) -> None:
    """Create the sweep directory with trials.json and sweep.yaml, or check that the one there is this sweep's:
    UsageError naming the first trial that differs (nothing written) otherwise."""
    directory, manifest = sweep.output_dir, sweep.output_dir / MANIFEST
    if started(sweep):
        return
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory} exists and holds no {MANIFEST}: it is not a sweep directory; nothing was "
                         "changed: give the sweep a new name or --output-dir")
    directory.mkdir(parents=True, exist_ok=True)
    files.write_json(manifest, _manifest(sweep))  # first: a directory with it is this sweep's, whatever happens next
    shutil.copyfile(sweep.path, directory / "sweep.yaml")


def _manifest(sweep: Sweep) -> dict:
    return {"name": sweep.name, "variant": sweep.variant, "smoke": sweep.smoke,
            "trials": [dataclasses.asdict(t) for t in sweep.trials]}


def started(sweep: Sweep) -> bool:
    """Whether the sweep directory holds this sweep's trials.json (False: none). UsageError naming the first
    difference when it holds another sweep's, whose trials this spec must not run, list or count as its own."""
    directory, manifest = sweep.output_dir, sweep.output_dir / MANIFEST
    if not manifest.is_file():
        return False
    try:
        there = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"{manifest}: unreadable ({err}): restore it, or start the sweep in a new output_dir") from None
    expected = _manifest(sweep)
    if _settled(there) != _settled(expected):
        raise UsageError(f"{directory} holds another sweep ({_difference(there, expected)}): nothing was changed; "
                         "run its own spec again to continue it, or give this one a new name or --output-dir")
    return True


def _settled(manifest: dict) -> dict:
    """`manifest` with each trial's overrides in one order: a spec rewritten in another order of keys (the same
    settings) is the same sweep; each key is set once, so the order changes nothing."""
    trials = [{**t, "overrides": sorted(t.get("overrides") or [])} if isinstance(t, dict) else t
              for t in manifest.get("trials") or []]
    return {**manifest, "trials": trials}


def _difference(there: dict, expected: dict) -> str:
    for key in ("name", "variant", "smoke"):
        if there.get(key) != expected[key]:
            return f"{key} {there.get(key)!r} there, {expected[key]!r} in this spec"
    theirs, ours = _settled(there)["trials"], _settled(expected)["trials"]
    if sorted(map(str, (t.get("overrides") for t in theirs))) == sorted(map(str, (t["overrides"] for t in ours))):
        return "the same trials, its parameters in another order: trial names follow that order; keep the one it began with"
    for old, new in zip(theirs, ours, strict=False):
        if old != new:
            changed = sorted(set(new["overrides"]) - set(old.get("overrides") or [])) or new["overrides"]
            return f"trial {old.get('name')} there is {new['name']} with {' '.join(changed)} here"
    return f"{len(theirs)} trials there, {len(ours)} in this spec"


def finished(sweep: Sweep, trial: Trial) -> bool:
    return (sweep.output_dir / trial.name / "summary.json").is_file()


def state(sweep: Sweep, trial: Trial) -> str:
    """What `--list` says of `trial`: finished, stopped at its newest checkpoint's step, or to run."""
    from emodist.rundir.checkpoints import latest_checkpoint
    from emodist.rundir.timeline import step_of

    if finished(sweep, trial):
        return "finished"
    checkpoint, _ = latest_checkpoint(sweep.output_dir / trial.name, content=False)
    return f"at step {step_of(checkpoint)}" if checkpoint else "to run"


def pending(sweep: Sweep) -> list[Trial]:
    return [trial for trial in sweep.trials if not finished(sweep, trial)]


def train_command(sweep: Sweep, trial: Trial) -> list[str]:
    """launch/train.py's arguments for `trial` (without the interpreter)."""
    return ["--variant", sweep.variant, "--output-dir", str(sweep.output_dir / trial.name), "--resume", "auto",
            *(["--smoke"] if sweep.smoke else []), *trial.overrides]


def run_local(sweep: Sweep, notify=print) -> list[str]:
    """Train the unfinished trials one after another here; the names of those that failed."""
    failed = []
    todo = pending(sweep)
    for done, trial in enumerate(todo, 1):
        notify(f"emodist-sweep: trial {trial.name} ({done} of {len(todo)} to run, {len(sweep.trials)} in the sweep)")
        returncode = _train(sweep, trial)
        if returncode in STOPPED:  # Ctrl-C or a stop signal: the sweep stops too; the trial resumes on the next run
            raise KeyboardInterrupt
        if returncode != 0:
            notify(f"emodist-sweep: trial {trial.name} failed (exit status {returncode}); going on")
            failed.append(trial.name)
    return failed


def _train(sweep: Sweep, trial: Trial) -> int:
    """Run launch/train.py for `trial`; its exit status. A Ctrl-C reaches the trial too (one process group), and
    a SIGTERM or SIGUSR1 sent to the sweep alone (a scheduler's, `kill`) is passed on to it: it saves a
    checkpoint and stops, and that is waited for (subprocess.run would kill it part way, and a sweep killed
    alone left its trial training on, which the next run of the sweep then found in use)."""
    asked, procs = [], []

    def pass_on(signum, frame):
        asked.append(signum)
        for proc in procs:
            proc.send_signal(signum)

    before = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGTERM, signal.SIGUSR1)}  # before the trial starts
    try:
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "launch" / "train.py"), *train_command(sweep, trial)]))
        if asked:  # it came while the trial started: its handlers may not have been in place yet
            procs[0].send_signal(asked[0])
        returncode = procs[0].wait()
    except KeyboardInterrupt:
        if procs:
            procs[0].wait()
        raise
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    if asked:  # the sweep stops, whatever the trial did with it (one that was finishing ends with 0)
        raise KeyboardInterrupt
    return returncode


def check_slurm() -> None:
    """UsageError, before the sweep directory is written, when no job can be submitted from here: sbatch is not on
    PATH, or `scontrol ping` finds no SLURM controller answering."""
    if shutil.which("sbatch") is None:
        raise UsageError("--slurm: sbatch is not on PATH: run this on a SLURM login node, or run the trials here with "
                         "--local")
    if shutil.which("scontrol") is None:  # sbatch alone (a wrapper, a container): let sbatch itself answer
        return
    try:
        proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return  # a slow controller is not a down one: sbatch waits for it too
    if proc.returncode != 0:
        said = (proc.stdout.strip() or proc.stderr.strip() or "no answer").splitlines()[0]
        raise UsageError(f"--slurm: no SLURM controller answers (`scontrol ping`: {said}); nothing was written: "
                         "start the cluster or run the trials here with --local")


def submit_slurm(sweep: Sweep, sbatch_args: list[str], wait: bool = False, submitted=print) -> str:
    """Submit the unfinished trials as one job array of slurm/sweep.sbatch; its job id, also given to `submitted`
    as soon as sbatch prints it. With `wait`, return when the array has ended (sbatch --wait; UsageError if any
    task failed). `check_slurm` first, before the sweep directory is written."""
    todo = pending(sweep)
    indices = ",".join(str(t.index) for t in todo)
    logs = sweep.output_dir / "logs"
    logs.mkdir(exist_ok=True)
    command = ["sbatch", "--parsable", f"--array={indices}%{sweep.max_parallel}", f"--job-name=emodist-sweep-{sweep.name}",
               f"--output={logs.resolve()}/%x-%A_%a.out", *(["--wait"] if wait else []), *sbatch_args,
               str(ROOT / "slurm" / "sweep.sbatch")]
    # the trials train where this runs, as with --local: relative paths in the spec read the same files
    env = {**os.environ, "EMODIST_SWEEP_DIR": str(sweep.output_dir.resolve()), "EMODIST_HOME": str(ROOT),
           "EMODIST_WORKDIR": os.getcwd()}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    job_id = proc.stdout.readline().strip().split(";")[0]
    if job_id:
        submitted(job_id)
    _, stderr = proc.communicate()
    if not job_id or (proc.returncode and not wait):
        raise UsageError(f"sbatch refused the sweep's array: {stderr.strip().splitlines()[-1] if stderr.strip() else 'no job id'}")
    if wait and proc.returncode:
        raise UsageError(f"job array {job_id}: a task failed (sbatch --wait exit status {proc.returncode}): see "
                         f"{logs}; run the same command again to retry the unfinished trials")
    return job_id

