"""One line for an error every rank meets (emodist/runtime/errors.py `report`, emodist/runtime/ranks.py).

Each rank is a real process running `errors.run_main`, with the environment torch's elastic agent gives its
workers; the test holds the agent's store. The ranks that are not the main one wait for the main rank's
post, not for a time: their wait here is 120 s, and each case expects them done well before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from torch.distributed import TCPStore

from emodist.runtime import errors

RANK = """
import sys
from emodist.runtime import errors
errors.REPORT_WAIT_S = float(sys.argv[3])
def body():
    raise (RuntimeError if sys.argv[1] == "bug" else errors.UsageError)(sys.argv[2])
sys.exit(errors.run_main(body))
"""


@pytest.fixture
def agent(tmp_path):
    """start(rank, message, kind="usage", wait_s=120.0, agent_store=True) -> the rank's process, as the elastic
    agent starts its workers (its store held by this test)."""
    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)

    def start(rank: int, message: str, kind: str = "usage", wait_s: float = 120.0, agent_store: bool = True):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(store.port), "TORCHELASTIC_ERROR_FILE": str(tmp_path / f"error-{rank}.json"),
               "TORCHELASTIC_RESTART_COUNT": "0"}
        if agent_store:
            env["TORCHELASTIC_USE_AGENT_STORE"] = "True"
        return subprocess.Popen([sys.executable, "-c", RANK, kind, message, str(wait_s)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    start.error_file = lambda rank: json.loads((tmp_path / f"error-{rank}.json").read_text())["message"]
    return start


def ended(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=60)  # far less than the 120 s a rank would wait for nothing
    return process.returncode, stderr


def test_an_error_every_rank_meets_is_printed_once_by_the_main_rank(agent):
    other = agent(1, "optim.lr: must be positive")  # started first: it waits for the main rank's post
    main = agent(0, "optim.lr: must be positive")
    assert ended(main) == (errors.EXIT_USAGE, "emodist: error: optim.lr: must be positive\n")
    assert ended(other) == (errors.EXIT_USAGE, "")
    # whichever rank the launcher sees end first, its summary's root cause is the line the terminal shows
    assert agent.error_file(1) == agent.error_file(0) == "emodist: error: optim.lr: must be positive"


def test_a_bug_every_rank_meets_is_one_line_though_each_rank_has_its_own_traceback_file(agent):
    other = agent(1, "a bug", kind="bug")
    main = agent(0, "a bug", kind="bug")
    code, stderr = ended(main)
    assert code == errors.EXIT_INTERNAL
    assert stderr.startswith("emodist: error: internal error, a bug in emodist rather than in your input "
                             "(RuntimeError: a bug); its traceback is in ")
    assert ended(other) == (errors.EXIT_INTERNAL, "")


def test_another_error_on_another_rank_is_printed_too_naming_the_rank(agent):
    other = agent(1, "/scratch/node2: not writable")
    main = agent(0, "optim.lr: must be positive")
    assert ended(main) == (errors.EXIT_USAGE, "emodist: error: optim.lr: must be positive\n")
    assert ended(other) == (errors.EXIT_USAGE, "emodist: error on rank 1: /scratch/node2: not writable\n")


def test_an_error_only_another_rank_meets_is_printed_by_it_once_its_wait_is_over(agent):
    other = agent(1, "/scratch/node2: not writable", wait_s=1.0)  # the main rank never posts
    assert ended(other) == (errors.EXIT_USAGE, "emodist: error on rank 1: /scratch/node2: not writable\n")
    assert agent.error_file(1) == "emodist: error on rank 1: /scratch/node2: not writable"


def test_without_the_agents_store_another_rank_prints_at_once(agent):
    """Workers started without torch's agent (say by srun alone) have no store to wait on: no wait at all."""
    other = agent(1, "optim.lr: must be positive", agent_store=False)
    assert ended(other) == (errors.EXIT_USAGE, "emodist: error on rank 1: optim.lr: must be positive\n")
