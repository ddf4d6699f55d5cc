"""Errors a user can act on, the exit code of each, and the one way entry scripts report them.

    def main(argv=None) -> int:
        args = parse_args(argv)
        return errors.run_main(lambda: work(args), traceback_dir=lambda: run_dir)

Every error emodist expects is an `EmodistError`, one kind per way a run can end:

    EmodistError
    ├── UsageError     2   the command line, the config, the run directory, the model choice
    │   └── DataError  65  a data file that cannot be read as its data set (file:line named)
    ├── Diverged       3   the training loss became NaN or infinite
    ├── NoSpace        74  the disk filled up while writing
    ├── Preempted      75  stopped by a signal after saving a checkpoint (what a SLURM requeue expects)
    └── InternalError  70  anything else: a bug in emodist

Its message is complete on its own: what is wrong, where (file:line, config key) and how to fix it. Entry
scripts print it as one line, without a traceback. Anything else that escapes is a bug in emodist: it is
reported in one line that says so, and its traceback is written to a file that line names
(`EMODIST_DEBUG=1` prints it as well).

Exit codes of every entry script (launch/*.py); a launcher such as torchrun reports any failure as 1:

| code | meaning |
|---|---|
| 0 | done (or nothing to do: the run had already finished) |
| 2 | refused: bad input, a combination that cannot work, a run directory that cannot be used |
| 3 | the training (or dev) loss became NaN or infinite; the checkpoints saved before are kept |
| 65 | a data file cannot be read as its data set (a missing file, a malformed row, an unknown label): the message names the file and line |
| 70 | internal error: a bug in emodist; the traceback is in the file the message names |
| 74 | the disk is full (or over quota): the last complete checkpoint is kept |
| 75 | stopped by a signal after saving a checkpoint: run again with --resume auto |
| 130 | interrupted (Ctrl-C) before training started: nothing to resume |
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import json
import os
import reprlib
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from emodist.runtime import ranks

EXIT_USAGE = 2
"""Refused: bad input, a combination that cannot work, a checkpoint that does not fit the run."""
EXIT_DIVERGED = 3
"""The loss became NaN or infinite; the checkpoints saved before are kept."""
EXIT_DATA = 65
"""A data file cannot be read as the data set it should be (sysexits' EX_DATAERR)."""
EXIT_INTERNAL = 70
"""A bug in emodist (sysexits' EX_SOFTWARE): the traceback went to a file."""
EXIT_NO_SPACE = 74
"""The disk filled up while writing (sysexits' EX_IOERR); the last complete checkpoint is kept."""
EXIT_PREEMPTED = 75
"""Stopped by a signal (SIGTERM, SIGUSR1, SIGINT) after saving a checkpoint: run again with --resume auto
(75 is sysexits' EX_TEMPFAIL, "try again later")."""
EXIT_INTERRUPTED = 130
"""Ctrl-C outside training (128 + SIGINT, as shells report it)."""

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
"""A path this process may not write: its permissions, or a read-only file system."""


class EmodistError(Exception):
    """An error emodist expects and reports in one line; its kind (the subclass) gives the exit code."""

    exit_code = EXIT_INTERNAL


class UsageError(EmodistError, ValueError):
    """A problem in the user's input (config, command line, run directory, model choice)."""

    exit_code = EXIT_USAGE


class DataError(UsageError):
    """A data file that cannot be read as its data set; the message names the file and the line."""

    exit_code = EXIT_DATA


class Diverged(EmodistError):
    """Training produced a non-finite loss."""

    exit_code = EXIT_DIVERGED


class NoSpace(EmodistError):
    """The disk filled up while writing; the message names the path, what was needed and what is free."""

    exit_code = EXIT_NO_SPACE


class Preempted(EmodistError):
    """The run stopped on a signal after saving `checkpoint` (exit code EXIT_PREEMPTED)."""

    exit_code = EXIT_PREEMPTED

    def __init__(self, signal_name: str, step: int, checkpoint, resume_command: str):
        super().__init__(f"stopped by {signal_name} at step {step}: saved {checkpoint}; to continue, run "
                         f"{resume_command}")
        self.checkpoint = checkpoint


def is_global_main_process() -> bool:
    """True on global rank 0 (or when not launched distributed). Works before accelerate starts."""
    return int(os.environ.get("RANK", "0")) == 0


REPORT_WAIT_S = 10.0
"""The longest another rank waits for the main rank's error before it prints its own (the wait ends as
soon as the main rank's error is posted: see `report`)."""


def say_last(line: str) -> None:
    """Print the line that ends this process on stderr (and in the launcher's summary: `to_error_file`)."""
    print(line, file=sys.stderr, flush=True)
    to_error_file(line)


def to_error_file(line: str) -> None:
    """Under torchrun (and `accelerate launch` with several processes) the launcher ends a failed run with its
    own summary of the failed ranks: the line goes to this rank's `TORCHELASTIC_ERROR_FILE`, so the summary's
    root cause is this line rather than a link to torch's docs."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:  # if it cannot be written, the summary names the exit code only: the terminal has the line
        with contextlib.suppress(OSError):
            Path(error_file).write_text(json.dumps({"message": line, "timestamp": int(time.time())}))


def report(err: BaseException, same_as: str | None = None) -> int:
    """Print `err` once for all ranks (N processes do not print it N times); return its exit code.

    A refusal usually reaches every rank. The main rank prints it, then posts it for the others
    (emodist/runtime/ranks.py). Another rank waits for that post, not for a time: when the main rank met the
    same error (`same_as`, else the message, compared), it prints nothing and only gives the launcher's
    summary the line; when the main rank's differs, or none is posted within REPORT_WAIT_S (the problem is
    this rank's alone), it prints its own, naming the rank.
    """
    text = str(err)
    line = f"emodist: error: {text}"
    if is_global_main_process():
        say_last(line)
        ranks.post_main_line(same_as or text)
    elif ranks.main_line(REPORT_WAIT_S) == (same_as or text):
        to_error_file(line)
    else:
        say_last(f"emodist: error on rank {os.environ.get('RANK')}: {text}")
    return getattr(err, "exit_code", EXIT_USAGE)


def utf8_text(raw: bytes, source: str, fix: str) -> str:
    """`raw` decoded as UTF-8 (a leading BOM dropped); UsageError naming `source`, the line and the first bad
    byte otherwise, followed by `fix`."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise UsageError(f"{source}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); {fix}") from None


def shown(value) -> str:
    """`repr(value)` cut to a message's size: a YAML file of nested aliases (a few hundred bytes) is a value
    whose full repr took 9 s and 2.8 GB to build into a one-line error of 722 MB."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 2, 120, 120
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 6
    return short.repr(value)


def not_text(value, argument: bool = False) -> str | None:
    """What makes `value` no text a tokenizer reads (None: it is one), for a message: not a str, or a str holding
    a lone surrogate, which UTF-8 cannot encode: half of a JSON pair escape (\\ud83d without \\ude00), or, in a
    command-line `argument`, a byte that was not UTF-8 (Python keeps it as U+DC80-U+DCFF)."""
    if not isinstance(value, str):
        written = repr(value)
        return f"{type(value).__name__} {written if len(written) <= 40 else written[:37] + '...'}, not a text"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(value[err.start])
        if argument and 0xDC80 <= code <= 0xDCFF:
            return f"the byte 0x{code - 0xDC00:02x}, which is not UTF-8"
        return f"\\u{code:04x}, half of a UTF-16 surrogate pair, which is no character on its own"
    return None


def no_space(err: OSError) -> NoSpace:
    """The one-line NoSpace for an OSError that says the disk is full (ENOSPC, EDQUOT)."""
    quota = " (or over its quota)" if err.errno == errno.EDQUOT else ""
    if not err.filename:  # a write through an open file names none: the free space of some other disk would mislead
        return NoSpace(f"no space left on a disk this command writes to{quota}: free some space, or write elsewhere, "
                       "then run again")
    free = free_bytes(Path(err.filename))
    return NoSpace(f"no space left on the disk of {err.filename}{quota}: {format_bytes(free)} free there; free some "
                   "space, or write elsewhere, then run again")


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem holding `path` (its nearest existing parent); None if unknown."""
    import shutil

    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def format_bytes(size: int | None) -> str:
    if size is None:
        return "an unknown amount"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size} B"


def run_main(body: Callable[[], int], traceback_dir: Callable[[], Path | None] = lambda: None,
             interrupted: str = "interrupted (Ctrl-C)") -> int:
    """Run an entry script's `body` and turn whatever escapes it into one line and a documented exit code.

    `traceback_dir`: where an internal error writes its traceback (e.g. the run directory, once known);
    a temporary directory otherwise. `interrupted`: what a Ctrl-C that reaches it says.
    """
    printable_streams()
    try:
        return body()
    except Preempted as stopped:
        if is_global_main_process():
            say_last(f"emodist: {stopped}")
        return EXIT_PREEMPTED
    except EmodistError as err:
        return report(err)
    except KeyboardInterrupt as stop:
        if is_global_main_process():
            say_last(f"emodist: {str(stop) or interrupted}")  # a stop that knows more says it
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout read by `| head`, which stopped reading: it has what it asked for
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail
        return 0
    except OSError as err:
        if err.errno in NO_SPACE_ERRNOS:
            return report(no_space(err))
        if err.errno in NOT_WRITABLE_ERRNOS and err.filename:
            return report(UsageError(f"{err.filename}: {err.strerror}: emodist needs to read or write it; check its "
                                     "permissions, or choose another path"))
        return internal_error(err, traceback_dir())
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, the traceback in a file
        if type(err) is Exception and "No space left" in str(err):  # tokenizers' own for ENOSPC: a bare Exception
            return report(no_space(OSError(errno.ENOSPC, str(err))))
        return internal_error(err, traceback_dir())


def printable_streams() -> None:
    """Standard output and error in an encoding that cannot write every character (PYTHONIOENCODING=ascii, a
    latin-1 locale) write the others as escapes: a label, a path or the banner's `·` ended the command as an
    internal error, a finished run among them."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, LookupError, TypeError, ValueError):  # not a text stream of io's
            if codecs.lookup(stream.encoding).name != "utf-8":
                stream.reconfigure(errors="backslashreplace")


def internal_error(err: BaseException, directory: Path | None) -> int:
    """Write the traceback of `err` to a file, say in one line that this is a bug and where the file is."""
    text = "".join(traceback.format_exception(err))
    rank = os.environ.get("RANK", "0")
    path = None
    for folder in ([directory] if directory is not None else []) + [Path(tempfile.gettempdir())]:
        candidate = folder / f"emodist-traceback-rank{rank}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
        try:
            candidate.write_text(text, encoding="utf-8")
            path = candidate
            break
        except OSError:
            continue
    if os.environ.get("EMODIST_DEBUG", "").lower() in ("1", "true", "yes"):
        print(text, file=sys.stderr, flush=True)
    where = f"its traceback is in {path}" if path else "its traceback could not be written to a file:\n" + text
    summary = f"{type(err).__name__}: {err}".splitlines()[0][:300]
    report(InternalError(f"internal error, a bug in emodist rather than in your input ({summary}); {where}. "
                         "Please report it with that file (EMODIST_DEBUG=1 prints the traceback here)"),
           same_as=summary)  # each rank names its own traceback file: the same bug is still one line
    return EXIT_INTERNAL


class InternalError(EmodistError):
    """What `internal_error` reports: an exception emodist did not expect."""

    exit_code = EXIT_INTERNAL


def out_of_space(err: BaseException, where: Path) -> bool:
    """Whether `err` (any exception a save raised) comes from a full disk: the errno, the words, or no room left."""
    if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
        return True
    if any(words in str(err) for words in ("No space left", "StorageFull", "Disk quota exceeded")):
        return True
    free = free_bytes(where)
    return free is not None and free < 2**20
