"""Faults that are not the user's input: a disk that fills up, and a bug. Each ends in one line that says
what happened and what was kept, with its documented exit code, never a traceback on the terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, error_lines, launch

from emodist.rundir import checkpoints
from emodist.runtime import errors

SMOKE = ["--variant", "distilbert", "--smoke", "train.save_every_steps=10", "train.eval_every_steps=10",
         "train.max_steps=40"]  # evaluations (which save a new best) on the same steps as the saves


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(kib) -> a directory on a file system of that size (a tmpfs: needs root, as CI runs)."""
    mounts = []

    def make(kib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small file system needs root (CI runs as root)")
        target = tmp_path / f"disk-{kib}k"
        target.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(target)], check=True)
        mounts.append(target)
        return target

    yield make
    for target in mounts:
        subprocess.run(["umount", "-l", str(target)], check=True)


def assert_no_noise(stderr: str) -> None:
    assert "Traceback" not in stderr and "socket.send" not in stderr, stderr[-3000:]


def test_a_disk_too_small_for_the_first_checkpoint_stops_the_run_with_one_line(small_disk, cache_dir):
    """The tiny model's base (336 KiB) fits, its first checkpoint (1 MiB) does not: the write fails mid-way."""
    run_dir = small_disk(800) / "run"
    result = launch(*SMOKE, "--output-dir", str(run_dir), accelerate=False)
    assert result.returncode == errors.EXIT_NO_SPACE, result.stderr[-3000:]
    [line] = error_lines(result)
    assert re.fullmatch(
        rf"emodist: error: no space left on the disk of {re.escape(str(run_dir / 'checkpoints'))} while saving "
        r"checkpoint step-10: it needs more than the [\d.,]+ (KiB|MiB) it had written, [\d.,]+ (B|KiB) were free; the "
        r"partial checkpoint was removed and no checkpoint was complete yet: free some space, then resume with "
        r"--resume auto", line), line
    assert list((run_dir / "checkpoints").iterdir()) == []
    assert_no_noise(result.stderr)


def test_a_disk_too_small_for_the_next_checkpoint_keeps_the_last_complete_one(small_disk, cache_dir):
    """Room for the base and one checkpoint: the second is refused before a byte is written, step-10 stays
    whole, and wandb (offline, on the same disk) does not flood the terminal."""
    run_dir = small_disk(2000) / "run"
    result = launch(*SMOKE, "--output-dir", str(run_dir), accelerate=False, env={"WANDB_MODE": "offline"})
    assert result.returncode == errors.EXIT_NO_SPACE, result.stderr[-3000:]
    [line] = error_lines(result)
    assert re.fullmatch(
        rf"emodist: error: no room on the disk of {re.escape(str(run_dir / 'checkpoints'))} for checkpoint step-20: "
        r"it needs about [\d.,]+ MiB \(the size of step-10\) and [\d.,]+ KiB are free; nothing was written, step-10 "
        r"is the last complete checkpoint: free some space, then resume with --resume auto", line), line
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-10"]
    assert checkpoints.unusable(run_dir / "checkpoints" / "step-10") is None
    assert_no_noise(result.stderr)


def test_a_bug_is_one_line_naming_the_file_that_holds_its_traceback(tmp_path, cache_dir):
    """An exception emodist does not expect (here injected into the loop) is reported as a bug: exit 70."""
    run_dir = tmp_path / "run"
    inject = ("import runpy, sys\nimport emodist.train.lifecycle as lifecycle\n"
              "def fit(session):\n    raise RuntimeError('an injected fault')\n"
              "lifecycle.fit = fit\n"
              f"sys.argv = ['launch/train.py', *{SMOKE + ['--output-dir', str(run_dir), 'track.plots=false']!r}]\n"
              "runpy.run_path('launch/train.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", inject], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == errors.EXIT_INTERNAL, result.stderr[-3000:]
    [line] = error_lines(result)
    match = re.fullmatch(r"emodist: error: internal error, a bug in emodist rather than in your input \(RuntimeError: "
                         r"an injected fault\); its traceback is in (\S+)\. Please report it with that file "
                         r"\(EMODIST_DEBUG=1 prints the traceback here\)", line)
    assert match, line
    traceback = Path(match.group(1))
    assert traceback.parent == run_dir
    assert "Traceback (most recent call last)" in traceback.read_text()
    assert "RuntimeError: an injected fault" in traceback.read_text()
    assert "Traceback" not in result.stderr
