"""The wandb tracker survives its service being stopped, as `scancel` stops every process of a job step."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from emodist.console import Console
from emodist.tracking import WandbTracker


@pytest.fixture
def own_environment():
    """wandb.init in this process exports the service's address (WANDB_SERVICE...) for child processes:
    after this test that service is dead, so the launches of later tests must not inherit it."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


def test_a_stopped_wandb_service_costs_a_warning_not_the_run(tmp_path, capsys, own_environment):
    import wandb

    run = wandb.init(mode="offline", dir=str(tmp_path), settings=wandb.Settings(silent=True))
    tracker = WandbTracker(run, Console(True))
    tracker.log({"step": 1, "train/loss": 0.5})
    service = [p for p in psutil.Process().children(recursive=True) if p.name().startswith("wandb")]
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
