"""One line for an error that every rank meets, with no rank sleeping to order the output.

    ranks.post_main_line(text)             # the main rank, once it has printed its error
    ranks.main_line(wait_s) -> str | None  # another rank: the main rank's error, as soon as it is posted

Under torch's elastic agent (torchrun, and `accelerate launch` with several processes) the agent hosts a
key-value store (a TCPStore at MASTER_ADDR:MASTER_PORT; TORCHELASTIC_USE_AGENT_STORE=True tells the workers)
that every worker reaches from its start, before torch.distributed is set up, and that outlives them all.
The main rank posts its error there; another rank's wait ends as soon as it is posted. Without that store
(one process, or workers started without the agent) there is nothing to wait for: `main_line` says None
at once.

Imports torch only when called, and only under the agent: entry scripts import this before torch.
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import timedelta

KEY = "emodist/error-line"
"""Where the main rank posts its error (under a prefix per restart of the worker group)."""
POLL_S = 0.02
"""How often a waiting rank looks for the main rank's post: the wait ends at most this long after it."""


def _store(wait_s: float):
    """A client of the agent's store, or None where there is none (or it cannot be reached)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    try:
        from torch.distributed import PrefixStore, TCPStore

        store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=timedelta(seconds=wait_s), wait_for_workers=False)
        return PrefixStore(f"restart-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    except (KeyError, ValueError, RuntimeError, OSError):  # the agent is gone: no one to order the output for
        return None


def post_main_line(text: str) -> None:
    """Post the main rank's error text for the other ranks (nothing to do without the agent's store)."""
    store = _store(wait_s=10.0)
    if store is not None:
        with contextlib.suppress(RuntimeError, OSError):  # the agent is gone: no other rank is left to wait
            store.set(KEY, text)


def main_line(wait_s: float) -> str | None:
    """The main rank's error text once it is posted (waiting at most `wait_s`); None when it is not posted in
    that time (the problem is this rank's alone) or when there is no agent's store."""
    store = _store(wait_s)
    if store is None:
        return None
    # the store's own wait would do, but its timeout writes two warnings of torch's socket layer to stderr
    deadline = time.monotonic() + wait_s
    try:
        while not store.check([KEY]):
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_S)
        return store.get(KEY).decode("utf-8")
    except (RuntimeError, OSError):  # the agent is gone
        return None
