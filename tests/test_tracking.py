"""The wandb tracker survives its service being stopped, as `scancel` stops every process of a job step."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from conftest import wandb_run

from emodist.report.console import Console
from emodist.report.tracking import WandbTracker


def own_services() -> list[psutil.Process]:
    """This process's wandb service and its helpers: not the services of the launches that other tests run
    in the background (the smoke runs'), which are descendants of this process too."""
    mine = [p for p in psutil.Process().children() if p.name().startswith("wandb")]
    return mine + [child for p in mine for child in p.children(recursive=True)]


@pytest.fixture
def own_environment():
    """wandb.init in this process exports the service's address (WANDB_SERVICE...) for child processes:
    after this test that service is dead, so the launches of later tests must not inherit it."""
    import contextlib

    import wandb

    before = dict(os.environ)
    yield
    with contextlib.suppress(Exception):  # this process's wandb forgets the dead service
        wandb.teardown()
    os.environ.clear()
    os.environ.update(before)


def test_a_stopped_wandb_service_costs_a_warning_not_the_run(tmp_path, capsys, own_environment):
    import wandb

    run = wandb.init(mode="offline", dir=str(tmp_path), settings=wandb.Settings(silent=True))
    tracker = WandbTracker(run, Console(True))
    tracker.log({"step": 1, "train/loss": 0.5})
    service = own_services()
    assert service  # the real service process, as a job's signal finds it
    for process in service:
        process.send_signal(signal.SIGTERM)
    psutil.wait_procs(service, timeout=30)

    started = time.monotonic()
    for step in range(2, 40):  # the loop goes on logging while wandb fails underneath
        tracker.log({"step": step, "train/loss": 0.5})
    tracker.finish({"dev": {}, "test": {}}, [], exit_code=75)
    assert time.monotonic() - started < tracker.STOP_TIMEOUT + 5
    assert tracker.run is None
    out = capsys.readouterr().out
    assert out.count("emodist: warning: wandb") == 1 and "metrics.jsonl keeps every record" in out


def test_a_new_service_logs_again_what_the_stopped_one_lost(tmp_path, capsys, own_environment):
    """The stopped service dies without writing what it had buffered (its offline file held no history):
    at the end a new one resumes the same run and logs every record, then the summary."""
    import wandb

    init = {"mode": "offline", "dir": str(tmp_path), "project": "emodist", "settings": wandb.Settings(silent=True)}
    run = wandb.init(**init)
    tracker = WandbTracker(run, Console(True), init={**init, "id": run.id})
    records = [{"step": step, "train/loss": 1 / step} for step in range(1, 30)]
    for record in records[:10]:
        tracker.log(record)
    service = own_services()
    for process in service:
        process.send_signal(signal.SIGTERM)
    psutil.wait_procs(service, timeout=30)
    for record in records[10:]:
        tracker.log(record)
    tracker.finish({"dev": {"f1_micro": 0.5}, "test": {"f1_micro": 0.4}}, [], exit_code=75)

    out = capsys.readouterr().out
    assert "a new wandb service logs its records again when the run ends" in out
    assert "emodist: wandb's service had stopped (a job's signal reaches it too): a new one logged 29 record(s) again" in out
    logged = wandb_run(tmp_path)  # one offline run: the incomplete one was replaced
    assert logged["run"]["id"] == run.id
    assert [(r["step"], r["train/loss"]) for r in logged["history"]] == [(r["step"], r["train/loss"]) for r in records]
    assert logged["summary"]["test/f1_micro"] == 0.4


TRACKED_RUN = """
import sys
from pathlib import Path
from types import SimpleNamespace
from emodist import config
from emodist.report.console import Console
from emodist.report.tracking import start_wandb
cfg = config.load("distilbert", smoke=True, overrides=["track.wandb=" + sys.argv[2]])
topology = SimpleNamespace(num_processes=1, num_nodes=1, distributed_type="NO", zero_stage=None,
                           identity=lambda: {"num_processes": 1})
tracker = start_wandb(cfg, Path(sys.argv[1]), ["joy"], topology, Console(True))
tracker.log({"step": 1, "train/loss": 0.5})
tracker.finish(None, [], 0)
"""
"""A run's tracking in a process of its own (argv: the run directory, track.wandb), logging one record."""


def tracked_run(run_dir, wandb: str, env: dict):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", TRACKED_RUN, str(run_dir), wandb], env=env, capture_output=True,
                          text=True, timeout=150)


def test_a_run_does_not_use_a_wandb_service_it_inherited(tmp_path):
    """A job submitted while its parent held a wandb service inherits WANDB_SERVICE; that service can be gone
    when the job starts (it was, in a CI run: the preempted SLURM job's wandb turned off, both sessions)."""
    gone = f"3-{os.getpid()}-unix-{tmp_path / 'gone' / 'socket'}"  # the address of a service that has ended
    result = tracked_run(tmp_path / "run", "offline", {**os.environ, "WANDB_SERVICE": gone, "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "could not start" not in result.stdout
    assert [r["train/loss"] for r in wandb_run(tmp_path / "run")["history"]] == [0.5]


def test_an_unreachable_wandb_server_is_seen_before_wandb_waits_for_it(tmp_path):
    """With a key but no route to the server (a compute node without internet), wandb.init waited 90 s at every
    launch and requeue before it failed; a TCP probe sees it at once and the run logs offline from the start."""
    from test_hub import free_port

    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "HTTPS_PROXY", "https_proxy")}
    env.update(WANDB_API_KEY="a" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    result = tracked_run(tmp_path / "run", "online", env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "emodist: the wandb server 127.0.0.1 is unreachable from here: logging offline; upload later with " \
           "`wandb sync`" in result.stdout
    assert "online failed" not in result.stdout  # what wandb's own failure, 90 s later, printed
    assert [r["train/loss"] for r in wandb_run(tmp_path / "run")["history"]] == [0.5]


def test_a_wandb_mode_in_capitals_is_the_mode(tmp_path):
    """WANDB_MODE=OFFLINE: emodist read it as offline, wandb refused it (lower case only) in a 4-line warning, and
    the run went untracked without a word more."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"WANDB_MODE": "OFFLINE"}
    result = tracked_run(tmp_path / "run", "auto", env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tracking is off" not in result.stdout + result.stderr and "ValidationError" not in result.stderr
    assert [r["train/loss"] for r in wandb_run(tmp_path / "run")["history"]] == [0.5]
