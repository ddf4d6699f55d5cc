"""One error type for mistakes a user can fix, and the one way entry scripts report it.

    try: ...
    except UsageError as err: return report(err)

A `UsageError` message is complete on its own: what is wrong, where (file:line, config key) and how
to fix it. Entry scripts print it without a traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import time

# Exit codes of launch/train.py (a launcher such as torchrun may report any failure as 1)
EXIT_USAGE = 2
"""Refused: bad input, a combination that cannot work, a checkpoint that does not fit the run."""
EXIT_DIVERGED = 3
"""The loss became NaN or infinite; the last good checkpoint is kept."""
EXIT_PREEMPTED = 75
"""Stopped by a signal (SIGTERM, SIGUSR1, SIGINT) after saving a checkpoint: run again with --resume auto
(75 is sysexits' EX_TEMPFAIL, "try again later")."""


class UsageError(ValueError):
    """A problem in the user's input (config, data files, command line, model choice)."""

    exit_code = EXIT_USAGE


class Diverged(UsageError):
    """Training produced a non-finite loss."""

    exit_code = EXIT_DIVERGED


class Preempted(Exception):
    """The run stopped on a signal after saving `checkpoint` (exit code EXIT_PREEMPTED)."""

    exit_code = EXIT_PREEMPTED

    def __init__(self, signal_name: str, step: int, checkpoint):
        super().__init__(f"stopped by {signal_name} at step {step}: saved {checkpoint}; run the same command "
                         "with --resume auto to continue")
        self.checkpoint = checkpoint


def is_global_main_process() -> bool:
    """True on global rank 0 (or when not launched distributed). Works before accelerate starts."""
    return int(os.environ.get("RANK", "0")) == 0


# How long another rank waits for the main rank to print a refusal before printing its own
REPORT_GRACE_S = 10.0


def report(err: UsageError) -> int:
    """Print `err` once, from the main rank (N processes do not print it N times); return its exit code.

    A refusal usually reaches every rank. The other ranks wait before they print and exit: a launcher
    such as torchrun stops all ranks as soon as one exits, which could silence the main rank. When the
    main rank has printed and exited first, the launcher stops them before they print; a problem only
    they met is still printed, naming the rank.
    """
    if is_global_main_process():
        print(f"emodist: error: {err}", file=sys.stderr, flush=True)
    else:
        time.sleep(REPORT_GRACE_S)
        print(f"emodist: error on rank {os.environ.get('RANK')}: {err}", file=sys.stderr, flush=True)
    return err.exit_code
