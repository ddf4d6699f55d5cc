"""One error type for mistakes a user can fix, and the one way entry scripts report it.

    try: ...
    except UsageError as err: return report(err)

A `UsageError` message is complete on its own: what is wrong, where (file:line, config key) and how
to fix it. Entry scripts print it without a traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys


class UsageError(ValueError):
    """A problem in the user's input (config, data files, command line, model choice)."""


def is_global_main_process() -> bool:
    """True on global rank 0 (or when not launched distributed). Works before accelerate starts."""
    return int(os.environ.get("RANK", "0")) == 0


def report(err: UsageError, exit_code: int = 2) -> int:
    """Print `err` once (rank 0 only, so N processes do not print it N times); return `exit_code`."""
    if is_global_main_process():
        print(f"emodist: error: {err}", file=sys.stderr, flush=True)
    return exit_code
