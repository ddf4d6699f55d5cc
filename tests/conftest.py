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


def launch(*args: str, timeout: int = 600, accelerate: bool = True, config_file: str | None = None,
           num_processes: int = 1, launcher_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run launch/train.py as a user would (`accelerate launch ...`), returning the finished process.

    `config_file`: a file of accelerate_configs/ (the topology); `launcher_args`: more `accelerate launch` flags.
    """
    script = str(ROOT / "launch" / "train.py")
    if accelerate:
        command = [sys.executable, "-m", "accelerate.commands.launch"]
        if config_file:
            command += ["--config_file", str(ROOT / "accelerate_configs" / config_file)]
        command += ["--num_processes", str(num_processes), *launcher_args]
        if num_processes > 1 and "--main_process_port" not in launcher_args:
            command += ["--main_process_port", "0"]  # a free port: runs beside this one must not collide
        command += [script, *args]
    else:
        command = [sys.executable, script, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The lines emodist itself printed as errors (a launcher may add its own report after them)."""
    return [line for line in result.stderr.splitlines() if line.startswith("emodist: error:")]


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def rescore_dev(run_dir: Path) -> tuple[dict, object]:
    """(dev metrics with the BCE `loss`, the model) of the run's exported `model/`, reloaded in this process.

    The dev split is rebuilt from the run's own config.yaml; batches and autocast are the run's.
    """
    import torch
    import torch.nn.functional as F
    from scipy.special import expit

    from emodist import config, data, metrics, modeling

    cfg = config.load(config_file=str(run_dir / "config.yaml"))
    dev = data.load(cfg.data, seed=cfg.train.seed).splits["dev"]
    summary = read_summary(run_dir)
    model, tokenizer = modeling.load_trained(run_dir / "model")
    collate = data.collator(tokenizer)
    parts = []
    batch = cfg.train.eval_batch_size
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=summary["mixed_precision"] == "bf16"):
        for start in range(0, len(dev), batch):
            features = [tokenizer(t, truncation=True, max_length=cfg.data.max_length)
                        for t in dev.texts[start:start + batch]]
            parts.append(model(**collate(features)).logits.float())
    logits = torch.cat(parts)
    scores = metrics.multilabel_metrics(dev.targets, expit(logits.numpy()), summary["labels"])
    scores["loss"] = float(F.binary_cross_entropy_with_logits(logits, torch.from_numpy(dev.targets)))
    return scores, model
