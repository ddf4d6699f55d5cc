"""SLURM: every template submitted for real (`sbatch --wait`) in smoke mode, on real SLURM daemons.

The `slurm` tests need a SLURM that answers with at least two idle nodes: CI starts the local one
(`slurm/local-cluster.sh start`: two emulated nodes on this machine); elsewhere they skip and say so.
The lint tests (bash -n, shellcheck) run everywhere.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, metrics_so_far, read_metrics, read_summary, wandb_files, wandb_run

SLURM_DIR = ROOT / "slurm"
SCRIPTS = sorted([*SLURM_DIR.glob("*.sh"), *SLURM_DIR.glob("*.sbatch")])
# The smallest run that still trains, evaluates, checkpoints and exports
SMOKE = "--smoke train.max_steps=20 train.log_every_steps=5 train.eval_every_steps=10 train.save_every_steps=10"
# Long enough to be signalled mid-run: logs every step, a checkpoint every 20
PREEMPTIBLE = "--smoke train.max_steps=60 train.log_every_steps=1 train.eval_every_steps=30 train.save_every_steps=20"
SINGLE_RUN_TEMPLATES = {  # template: (variant, what the run must report)
    "distilbert.sbatch": ("distilbert", {"num_nodes": 1, "num_processes": 1}),
    "gemma.sbatch": ("gemma-lora", {"num_nodes": 1, "num_processes": 1}),
    "mistral-qlora.sbatch": ("mistral-qlora", {"num_nodes": 1, "num_processes": 1, "quantization": "nf4"}),
    "mistral.sbatch": ("mistral-lora", {"num_nodes": 2, "num_processes": 2, "distributed_type": "DEEPSPEED",
                                        "zero_stage": 3}),
}
STUDY = ["distilbert", "minilm"]


# --- lint: everywhere -----------------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_bash_n_and_shellcheck(script: Path):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck); bash -n passed")
    result = subprocess.run(["shellcheck", "--shell=bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("template", sorted(SLURM_DIR.glob("*.sbatch")), ids=lambda p: p.name)
def test_a_template_run_outside_a_job_says_to_submit_it(template: Path):
    """`bash slurm/distilbert.sbatch` said `/slurm/launch.sh: No such file or directory`, study and sweep an
    unbound variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "EMODIST_"))}
    result = subprocess.run(["bash", str(template)], cwd=template.anchor, env=env, capture_output=True, text=True,
                            timeout=60)  # from anywhere, not only the repository
    assert result.returncode == 2 and result.stdout == ""
    assert re.fullmatch(r"emodist-slurm: error: not inside a SLURM job: submit (a template, e\.g\. sbatch "
                        r"slurm/distilbert\.sbatch|it, sbatch slurm/study\.sbatch|it, python launch/sweep\.py SPEC"
                        r"\.yaml --slurm)\n", result.stderr), result.stderr


def test_every_template_is_submitted_by_a_test():
    templates = {p.name for p in SLURM_DIR.glob("*.sbatch")}
    assert templates == {*SINGLE_RUN_TEMPLATES, "study.sbatch", "sweep.sbatch"}


# --- on a real SLURM ------------------------------------------------------------------------------------

def idle_nodes() -> int | None:
    """Idle nodes of the SLURM that answers here; None when none answers."""
    if shutil.which("sinfo") is None:
        return None
    try:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None
    return result.stdout.split().count("idle") if result.returncode == 0 else None


@pytest.fixture(scope="module")
def slurm(ahead) -> None:
    if ahead.started(AHEAD):
        return  # checked when the jobs were queued; they hold the nodes now
    nodes = idle_nodes()
    if nodes is None:
        pytest.skip("no SLURM answers here (sinfo): start the local one with `sudo slurm/local-cluster.sh start`")
    if nodes < 2:
        pytest.skip(f"SLURM answers with {nodes} idle node(s); these tests need 2")


AHEAD = "slurm-jobs"


def start_ahead(items, ahead, tmp_path_factory):
    """tests/conftest.py's `_work_ahead`: when a selected test waits for the `jobs` and a SLURM with 2 idle nodes
    answers, queues their submission behind the smoke runs: the cluster then runs them beside the tests
    before this module. The queue holds them until they end (mistral.sbatch is a two-node run, and two-process
    tests wait for the queue to drain). Returns what cancels them if the session ends first."""
    if not any("jobs" in item.fixturenames for item in items) or (idle_nodes() or 0) < 2:
        return None
    root = tmp_path_factory.mktemp("slurm")
    submitted: dict[str, Job] = {}

    def run_jobs() -> dict[str, Job]:
        submitted.update(submit_jobs(root))
        for job in submitted.values():
            job.wait()
        return submitted

    ahead.call(AHEAD, run_jobs)
    return lambda: cancel_jobs(submitted)


class Job:
    """A template submitted from the repository root with `sbatch --wait`, as a user does."""

    def __init__(self, template: str, root: Path, *sbatch_args: str, **settings: str):
        self.template, self.logs, self.run_dir = template, root / "logs", root / "run"
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMODIST_") or k == "EMODIST_CACHE"}
        env.update(EMODIST_RUN_DIR=str(self.run_dir), **settings)
        command = ["sbatch", "--parsable", "--wait", f"--output={self.logs}/%x-%j.out", *sbatch_args,
                   str(SLURM_DIR / template)]
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.id = self.proc.stdout.readline().strip().split(";")[0]  # printed at submission
        self.stderr = ""

    def wait(self, timeout: int = 1200) -> int:
        """The job's exit status (`sbatch --wait` returns it)."""
        if self.proc.returncode is None:
            _, self.stderr = self.proc.communicate(timeout=timeout)
        return self.proc.returncode

    @property
    def log(self) -> str:
        """Everything the job (all its array tasks, requeued runs included) wrote to its output files."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.out")))

    def failure(self) -> str:
        return f"job {self.id} ({self.template}) exited {self.proc.returncode}: {self.stderr[-500:]}\n{self.log[-4000:]}"


class SweepJob(Job):
    """`launch/sweep.py SPEC --slurm --wait` as a user runs it, from a directory of their own (`root`): a 2-trial
    smoke sweep (train.loss bce, asl) as one job array of slurm/sweep.sbatch, into `root`/sweep, under DeepSpeed
    ZeRO-2 (whose accelerate config names its JSON relative to the repository). Its data directory is a
    relative path, read from `root` as `--local` reads it (the synthetic texts in GoEmotions' layout)."""

    def __init__(self, root: Path):
        self.template, self.run_dir, self.logs = "sweep.sbatch", root / "sweep", root / "sweep" / "logs"
        self.root, self.spec = root, root / "tiny.yaml"
        write_synthetic_goemotions(root / "emotions")
        self.spec.write_text(yaml.safe_dump({
            "variant": "minilm", "smoke": True, "max_parallel": 2,
            "fixed": {"train.max_steps": 10, "train.eval_every_steps": 5, "train.save_every_steps": 5,
                      "track.plots": False, "data.dataset": "goemotions", "data.data_dir": "emotions"},
            "parameters": {"train.loss": ["bce", "asl"]}}, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMODIST_") or k == "EMODIST_CACHE"}
        env["EMODIST_ACCELERATE_CONFIG"] = "accelerate_configs/deepspeed_zero2.yaml"
        self.proc = subprocess.Popen(self.command("--wait"), cwd=root, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.printed = [self.proc.stdout.readline(), self.proc.stdout.readline()]  # the sweep, then its array
        found = re.search(r"job array (\d+)", self.printed[1])
        self.id, self.stderr = found.group(1) if found else "", ""

    def command(self, *flags: str) -> list[str]:
        return [sys.executable, str(ROOT / "launch" / "sweep.py"), str(self.spec), "--slurm", *flags,
                "--output-dir", str(self.run_dir)]


def write_synthetic_goemotions(directory: Path) -> None:
    """The synthetic data set's splits as GoEmotions files (text, label ids, comment id) and emotions.txt."""
    from emodist.data.synthetic import synthetic

    emotions = synthetic()
    directory.mkdir(parents=True)
    (directory / "emotions.txt").write_text("\n".join(emotions.labels) + "\n", encoding="utf-8")
    for split, part in emotions.splits.items():
        rows = (f"{text}\t{','.join(str(i) for i in target.nonzero()[0])}\t{split}{n}"
                for n, (text, target) in enumerate(zip(part.texts, part.targets, strict=True)))
        (directory / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def signal_once_training_runs(job: Job, at_step: int = 5) -> None:
    """What `#SBATCH --signal=B:USR1@300` does before the time limit, sent once training is under way."""
    deadline = time.monotonic() + 600
    while not any(r.get("step", 0) >= at_step for r in metrics_so_far(job.run_dir)):
        if job.proc.poll() is not None or time.monotonic() > deadline:
            return  # the test reports it: no "received SIGUSR1" in the log
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job.id], check=True)


def submit_jobs(root: Path) -> dict[str, Job]:
    """Every job of this module, submitted at once: the cluster runs them side by side, as a user's would.

    `preempted` is a second distilbert.sbatch job with the same settings (and an offline wandb run), signalled
    mid-run by a helper thread; `capped` is another, signalled too, that may not be requeued
    (EMODIST_MAX_REQUEUES=0).
    """
    submitted = {}
    for template in SINGLE_RUN_TEMPLATES:
        args = PREEMPTIBLE if template == "distilbert.sbatch" else SMOKE
        submitted[template] = Job(template, root / template, EMODIST_TRAIN_ARGS=args)
    submitted["preempted"] = Job("distilbert.sbatch", root / "preempted", EMODIST_TRAIN_ARGS=PREEMPTIBLE,
                                 WANDB_MODE="offline")
    submitted["capped"] = Job("distilbert.sbatch", root / "capped", EMODIST_TRAIN_ARGS=PREEMPTIBLE,
                              EMODIST_MAX_REQUEUES="0")
    for name in ("preempted", "capped"):
        threading.Thread(target=signal_once_training_runs, args=(submitted[name],), daemon=True).start()
    submitted["sweep"] = SweepJob(root)
    submitted["study.sbatch"] = Job("study.sbatch", root / "study", "--array=0-1", EMODIST_TRAIN_ARGS=SMOKE,
                                    EMODIST_STUDY_VARIANTS=" ".join(STUDY), EMODIST_STUDY_DIR=str(root / "study" / "run"))
    return submitted


def cancel_jobs(submitted: dict[str, Job]) -> None:
    """A failed test or an ended session leaves nothing running."""
    for job in submitted.values():
        if job.proc.poll() is None:
            subprocess.run(["scancel", job.id], check=False)
            job.proc.kill()


@pytest.fixture(scope="module")
def jobs(slurm, ahead, tmp_path_factory, cache_dir) -> dict[str, Job]:
    """The jobs of `submit_jobs`: queued at the session's start (`start_ahead`), or submitted now."""
    submitted = ahead.get(AHEAD) if ahead.started(AHEAD) else submit_jobs(tmp_path_factory.mktemp("slurm"))
    yield submitted
    cancel_jobs(submitted)


@pytest.mark.slurm
@pytest.mark.parametrize("template", sorted(SINGLE_RUN_TEMPLATES))
def test_template_trains_in_smoke_mode(jobs, template):
    variant, expected = SINGLE_RUN_TEMPLATES[template]
    job = jobs[template]
    assert job.wait() == 0, job.failure()
    summary = read_summary(job.run_dir)
    assert summary["variant"] == variant
    assert {key: summary[key] for key in expected} == expected
    assert summary["train"]["steps"] == (60 if template == "distilbert.sbatch" else 20)
    assert (job.run_dir / "model" / "config.json").is_file()
    # the launcher derived the topology from the allocation and said so
    nodes = expected["num_nodes"]
    assert f"{nodes} node(s)" in job.log
    ranks = sorted(re.findall(r"node (node\d+): machine rank (\d+) of (\d+)", job.log))
    assert [(int(rank), int(of)) for _, rank, of in ranks] == [(r, nodes) for r in range(nodes)]
    assert len({name for name, _, _ in ranks}) == nodes  # each rank on its own SLURM node


@pytest.mark.slurm
def test_preempted_job_is_requeued_resumes_and_ends_like_the_uninterrupted_run(jobs):
    job, reference = jobs["preempted"], jobs["distilbert.sbatch"]
    assert job.wait() == 0, job.failure()
    assert reference.wait() == 0, reference.failure()
    log = job.log
    # one signal, one requeue, one resume from the checkpoint the stop wrote
    assert log.count("emodist-slurm: received SIGUSR1") == 1, log
    assert log.count("emodist: received SIGUSR1: stopping at the next step boundary") == 1, log  # training heard it
    assert log.count("requeueing job") == 1
    assert "restart 1" in log and "restart 2" not in log
    stopped_at = [int(step) for step in re.findall(r"stopped by SIGUSR1 at step (\d+)", log)]
    assert len(stopped_at) == 1 and 5 <= stopped_at[0] < 60
    assert log.count("resumed from") == 1
    assert f"resumed from {job.run_dir / 'checkpoints' / f'step-{stopped_at[0]}'}" in log
    # and the end is the uninterrupted run's
    resumed, uninterrupted = read_summary(job.run_dir), read_summary(reference.run_dir)
    assert resumed["train"]["steps"] == uninterrupted["train"]["steps"] == 60
    assert resumed["dev"] == uninterrupted["dev"] and resumed["test"] == uninterrupted["test"]
    assert _losses(job.run_dir) == _losses(reference.run_dir)
    # wandb: the requeued session logged into the same run as the first, from where the first stopped
    sessions = wandb_files(job.run_dir)
    assert len(sessions) == 2, sessions
    logged = [wandb_run(job.run_dir, path) for path in sessions]
    run_id = json.loads((job.run_dir / "wandb" / "emodist-run.json").read_text())["id"]
    assert [session["run"]["id"] for session in logged] == [run_id, run_id]
    history = [(r["step"], r.get("train/loss")) for session in logged for r in session["history"]]
    assert history == [(r["step"], r.get("train/loss")) for r in read_metrics(job.run_dir)]
    assert max(r["step"] for r in logged[0]["history"]) == stopped_at[0]


@pytest.mark.slurm
def test_a_job_past_its_requeue_cap_stops_with_its_checkpoint_and_is_not_requeued(jobs):
    job = jobs["capped"]
    assert job.wait() == 75, job.failure()  # EX_TEMPFAIL: stopped, resumable
    log = job.log
    assert log.count("emodist-slurm: received SIGUSR1") == 1, log
    [step] = [int(step) for step in re.findall(r"stopped by SIGUSR1 at step (\d+)", log)]
    assert "not requeued: 0 restarts reached EMODIST_MAX_REQUEUES=0" in log
    assert "requeueing job" not in log and "restart 1" not in log
    assert (job.run_dir / "checkpoints" / f"step-{step}" / "state.json").is_file()
    assert not (job.run_dir / "summary.json").exists()


def _losses(run_dir: Path) -> list[tuple]:
    return [(r["step"], r.get("train/loss"), r.get("eval/f1_micro")) for r in read_metrics(run_dir)]


@pytest.mark.slurm
def test_study_trains_each_variant_then_its_report_job_compares_them(jobs):
    job = jobs["study.sbatch"]
    assert job.wait() == 0, job.failure()
    study = job.run_dir.parent / "run"
    for variant in STUDY:
        assert read_summary(study / variant)["variant"] == variant
    report_job = (study / "report.jobid").read_text().strip()
    deadline = time.monotonic() + 300
    while _job_alive(report_job):
        assert time.monotonic() < deadline, f"report job {report_job} did not end in 5 minutes"
        time.sleep(1)
    comparison = study / "comparison" / "comparison.csv"
    assert comparison.exists(), f"report job {report_job} wrote no comparison: {list(study.glob('report-*.out'))}"
    rows = {row["variant"]: row for row in csv.DictReader(comparison.open())}
    assert sorted(rows) == sorted(STUDY)
    for variant, row in rows.items():
        summary = read_summary(study / variant)
        assert float(row["test_f1_macro"]) == summary["test"]["f1_macro"]
        assert int(row["num_processes"]) == summary["num_processes"]
    assert "| distilbert |" in (study / "comparison" / "report.md").read_text()


@pytest.mark.slurm
def test_a_sweep_runs_as_one_job_array_each_task_its_own_trial_and_is_not_resubmitted(jobs):
    job = jobs["sweep"]
    assert job.id and "2 task(s), 2 at once" in job.printed[1], job.printed
    assert job.wait() == 0, job.failure()
    for index, loss in enumerate(("bce", "asl")):
        run_dir = job.run_dir / f"00{index}-loss={loss}"
        summary = read_summary(run_dir)
        assert summary["train"]["steps"] == 10 and summary["variant"] == "minilm" and summary["zero_stage"] == 2
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["train"]["loss"] == loss and config["track"]["group"] == "tiny"
        assert config["data"]["data_dir"] == "emotions" and summary["dataset"] == "goemotions"
        assert f"(array task {index})" in job.log  # slurm/launch.sh's first line in each task
        assert f"sweep tiny, trial {index}: {run_dir}" in job.log
    again = subprocess.run(job.command(), cwd=job.root, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 to run" in again.stdout and "job array" not in again.stdout, again.stderr


def _job_alive(job_id: str) -> bool:
    result = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True)
    return result.returncode == 0 and bool(result.stdout.strip())


@pytest.mark.slurm
@pytest.mark.parametrize(("template", "settings", "message"), [
    ("distilbert.sbatch", {"EMODIST_ACCELERATE_CONFIG": "accelerate_configs/nope.yaml"},
     "EMODIST_ACCELERATE_CONFIG=accelerate_configs/nope.yaml: no such file"),
    ("gemma.sbatch", {"EMODIST_PROCS_PER_NODE": "two"}, "EMODIST_PROCS_PER_NODE=two: expected a whole number"),
    # checked at the start, not when the preemption signal comes (an unbound-variable error then lost the requeue)
    ("distilbert.sbatch", {"EMODIST_MAX_REQUEUES": "twenty"}, "EMODIST_MAX_REQUEUES=twenty: expected a whole number from 0"),
    ("distilbert.sbatch", {"EMODIST_PORT": "99999"}, "EMODIST_PORT=99999: expected a TCP port, 1 to 65535"),
    # a second --output-dir won, and the job then watched (and requeued for) a run directory training never wrote
    ("distilbert.sbatch", {"EMODIST_TRAIN_ARGS": "--smoke\n--output-dir=elsewhere"},  # a second line is read too
     "EMODIST_TRAIN_ARGS: --output-dir=elsewhere: the run directory is EMODIST_RUN_DIR's to set"),
    ("study.sbatch", {"EMODIST_STUDY_VARIANTS": "distilbert minilm"},
     "the array has 4 tasks for 2 variants (distilbert minilm): submit with sbatch --array=0-1"),
])
def test_bad_settings_fail_the_job_in_one_line(slurm, tmp_path, template, settings, message):
    job = Job(template, tmp_path, **settings)
    assert job.wait() == 2, job.failure()
    errors = [line for line in job.log.splitlines() if line.startswith("emodist-slurm: error:")]
    assert errors and all(message in line for line in errors), job.log
    assert not job.run_dir.exists()
