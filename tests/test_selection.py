"""No green by skipping: what tests/conftest.py does with skips under EMODIST_CI=1 and with gpu tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT


def pytest_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    """pytest in a subprocess, as CI starts it, with `env` added to this environment."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_a_skip_fails_the_run_under_emodist_ci():
    """The SLURM tests without a cluster (no sinfo on PATH): skipped on a developer machine, failed in CI."""
    no_slurm = {"PATH": os.path.dirname(sys.executable)}  # this venv's tools, and no sinfo
    relaxed = pytest_run("-m", "slurm", "tests/test_slurm.py", **no_slurm, EMODIST_CI="0")
    assert relaxed.returncode == 0, relaxed.stdout[-2000:]
    assert "no SLURM answers here" in relaxed.stdout

    strict = pytest_run("-m", "slurm", "tests/test_slurm.py", **no_slurm, EMODIST_CI="1")
    assert strict.returncode == 1, strict.stdout[-2000:]
    assert "skipped under EMODIST_CI=1, where every selected test must run: Skipped: no SLURM answers here" \
        in strict.stdout
    assert " 0 skipped" in [line for line in strict.stdout.splitlines() if line.startswith("tests: ")][0]


def test_gpu_tests_without_cuda_run_nothing_and_say_so(tmp_path):
    summary = tmp_path / "summary.txt"
    result = pytest_run("-m", "gpu", "tests/test_distributed.py", CUDA_VISIBLE_DEVICES="",
                        EMODIST_TEST_SUMMARY=str(summary))
    assert result.returncode == 5, result.stdout[-2000:]  # pytest's "no tests ran"
    gpu = int(re.search(r"nothing ran: the (\d+) test\(s\) marked gpu need a CUDA device", result.stdout)[1])
    assert gpu >= 1
    line = summary.read_text().strip()
    assert line.startswith("tests: 0 ran, 0 skipped, ")
    assert f"{gpu} marked gpu, and this machine has no CUDA device" in line
