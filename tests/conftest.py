"""Shared test set-up: offline, quiet, and one helper to run the real launcher in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOEMOTIONS = Path(os.environ.get("EMODIST_GOEMOTIONS", ROOT.parent / "shared" / "data" / "goemotions"))

# No test may reach the network or a tracker account.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A tokenization cache shared by the whole session and by the subprocesses it starts."""
    path = tmp_path_factory.mktemp("emodist-cache")
    os.environ["EMODIST_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def goemotions() -> Path:
    if not (GOEMOTIONS / "train.tsv").exists():
        pytest.skip(f"GoEmotions is not at {GOEMOTIONS} (set EMODIST_GOEMOTIONS)")
    return GOEMOTIONS


def launch(*args: str, timeout: int = 600, accelerate: bool = True) -> subprocess.CompletedProcess:
    """Run launch/train.py as a user would (`accelerate launch ...`), returning the finished process."""
    script = str(ROOT / "launch" / "train.py")
    if accelerate:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", script, *args]
    else:
        command = [sys.executable, script, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
