"""Stop signals: a scheduler's SIGTERM or SIGUSR1 (or a Ctrl-C, or a terminal's hangup) becomes a checkpoint
and a clean stop.

    with StopSignals() as stop:   # in the entry script, before the model loads
        ...                       # loading: SIGTERM / SIGUSR1 are remembered, Ctrl-C interrupts at once
        stop.training = True      # the loop: every signal stops the run at the next step boundary

This module imports nothing heavy, so an entry script installs the handlers before torch loads: a job that
is signalled while its 7B model loads is not lost, it stops after its first step with a checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal

from emodist.runtime import errors


class StopSignals:
    """SIGTERM, SIGUSR1 and SIGINT ask for a stop at the next step boundary instead of killing the process.

    Whichever rank receives one, all ranks agree at the next optimizer step (`after_step`), save a
    checkpoint and raise `Preempted`. Further signals while that happens change nothing, but for a second
    Ctrl-C once the training is done: the final evaluation and export stop then, and `--resume auto` does them.

    accelerate's launcher turns a Ctrl-C or kill sent to it alone into SIGTERM to the training process (and
    kills it 5 s later): under that launcher the line that acknowledges a SIGTERM says so, since the user may
    never have sent one. (A scheduler's SIGTERM looks the same from here, so the stop line names only the signal.)
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGHUP)
    """SIGHUP: the terminal of an ssh session that dropped; by default it killed the run with the steps since its
    last checkpoint. Left alone under `nohup` (which ignores it)."""

    def __init__(self, training: bool = True) -> None:
        self.received: str | None = None
        self.launcher = _accelerate_launched()
        self.training = training
        """False while the run loads: a Ctrl-C then interrupts at once (nothing to save yet), while SIGTERM and
        SIGUSR1 (a scheduler's, which must not lose the job) are kept until the first step stops the run."""
        self.finishing = False
        """Training is over: a signal now lets the final evaluation and export complete."""
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        _note_the_terminal()
        for sig in self.SIGNALS:
            if not _ignored(sig):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGHUP:
            _leave_the_terminal()
        if signum == signal.SIGINT and not self.training:
            raise KeyboardInterrupt
        if signum == signal.SIGINT and self.finishing and self.received is not None:  # asked twice: it stops now
            raise KeyboardInterrupt("interrupted (Ctrl-C) while finishing: the last checkpoint holds all of the "
                                    "training; the same command with --resume auto evaluates and exports it")
        if self.received is None and errors.is_global_main_process():
            if self.finishing:
                what = ("the training is done: finishing its evaluation and export first (a second Ctrl-C stops "
                        "now, and --resume auto finishes later)")
            elif self.training:
                what = "stopping at the next step boundary, after saving a checkpoint"
            else:
                what = "the run is still loading: it stops after its first training step, with a checkpoint"
            # os.write: a print here could re-enter the stream the interrupted code was writing to
            with contextlib.suppress(OSError):
                os.write(2, f"emodist: received {self._described(signum)}: {what}\n".encode())
        self.received = self.received or signal.Signals(signum).name

    def _described(self, signum: int) -> str:
        name = signal.Signals(signum).name
        if signum == signal.SIGTERM and self.launcher:
            return f"{name} (under accelerate launch, also what a Ctrl-C to the launcher becomes)"
        return name

    def __exit__(self, *exc) -> None:
        self.restore()

    def restore(self) -> None:
        """Put back the handlers that were there before (once: a second call changes nothing)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _ignored(sig: signal.Signals) -> bool:
    """Whether `sig` is ignored (SIGHUP under `nohup`): a run started that way is not to be stopped by it."""
    return sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN


_ON_A_TERMINAL: set[int] = set()
"""Which of standard output and error were a terminal when the handlers went in: after a hangup `isatty` no
longer says (the kernel has hung the terminal up: EIO)."""


def _note_the_terminal() -> None:
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                _ON_A_TERMINAL.add(fd)


def _leave_the_terminal() -> None:
    """After a hangup, standard output and error on the terminal that hung up fail with EIO: point them at
    /dev/null so that the stop and its checkpoint go on (a file or a pipe they were sent to stays)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in _ON_A_TERMINAL:
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    os.close(devnull)


def _accelerate_launched() -> bool:
    """Whether this process's parent is `accelerate launch` (`accelerate launch ...` or `python -m
    accelerate.commands.launch ...`; its multi-process launcher runs torch's agent in the same process)."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as cmdline:
            words = cmdline.read().split(b"\0")[:3]
    except OSError:
        return False
    return b"accelerate.commands.launch" in words or (any(w.endswith(b"/accelerate") for w in words)
                                                     and b"launch" in words)


def interrupt_on_sigterm() -> None:
    """For the commands with no checkpoint to save (predict, export): a SIGTERM (a scheduler's, `kill`,
    `timeout`) stops them as a Ctrl-C does, so what they undo on the way out is undone: a staged export is
    removed (a killed one stayed beside the run, as large as the model) and a prediction file cut back to
    its whole records."""
    def stop(signum, frame):
        if signum == signal.SIGHUP:
            _leave_the_terminal()
        raise KeyboardInterrupt(f"stopped ({signal.Signals(signum).name})")

    _note_the_terminal()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if not _ignored(sig):
            signal.signal(sig, stop)
