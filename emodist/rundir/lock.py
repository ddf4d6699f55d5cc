"""One launch per run directory: a lock file that works on shared file systems and that a dead holder
cannot keep.

    lock = RunLock.acquire(Path("runs/x"))     # UsageError, in one line, while another launch works there
    ...
    lock.release()
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from emodist.runtime.errors import NO_SPACE_ERRNOS, NoSpace, UsageError

LOCK = ".emodist-lock"
"""Present in a run directory while a launch works in it."""


class RunLock:
    """One launch per run directory: `LOCK`, created with O_EXCL (atomic on local disks, NFS and Lustre alike,
    where fcntl and flock locks are not reliable), names its holder and is touched every `HEARTBEAT_S`.

    A lock is taken over, with a notice, when its holder is gone: a process of this host that has ended; an
    earlier run of the same SLURM job (a requeue; SLURM ends a job before it requeues it); or a holder on
    another host whose heartbeat is older than `STALE_S` (a dead node). Any other holder is refused in one
    line.
    """

    HEARTBEAT_S = 30.0
    STALE_S = 300.0

    def __init__(self, path: Path, token: str, made_dir: bool = False):
        self.path = path
        self.token = token
        self.made_dir = made_dir
        """Whether this launch created the run directory (it was not there before `acquire`)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="emodist-run-lock", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, run_dir: Path, notify=print) -> RunLock:
        """Create `run_dir` if needed and lock it; UsageError when it cannot be made, written, or is in use."""
        made = not run_dir.exists()
        _make_dir(run_dir)
        path = run_dir / LOCK
        holder = _holder()
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = _read_holder(path)
                stale = _why_stale(other, path)
                if stale is None:
                    raise UsageError(f"--output-dir {run_dir} is in use by another emodist launch ({_describe(other)}): "
                                     "wait for it to end, or choose another --output-dir (if you are sure that none "
                                     f"runs, delete {path})") from None
                if _take_over(path, other):
                    notify(f"emodist: took over the lock of {run_dir}: {stale}")
                continue
            except OSError as err:
                raise UsageError(f"--output-dir {run_dir}: cannot write there ({err.strerror}): choose a writable "
                                 "--output-dir") from None
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(holder, handle)
            except OSError as err:  # a full disk: an empty lock read as "being written" for a minute
                path.unlink(missing_ok=True)
                if err.errno in NO_SPACE_ERRNOS:
                    raise NoSpace(f"no space left on the disk of {run_dir} for its lock ({LOCK}): nothing was started; "
                                  "free some space, then run the same command again") from None
                raise UsageError(f"--output-dir {run_dir}: cannot write its lock ({err.strerror}): choose a writable "
                                 "--output-dir") from None
            return cls(path, holder["token"], made)
        raise UsageError(f"--output-dir {run_dir}: could not take its lock ({path}): another launch is starting there")

    def release(self) -> None:
        self._stop.set()
        if _read_holder(self.path).get("token") == self.token:
            with contextlib.suppress(OSError):  # the directory went away (moved aside): nothing holds it
                self.path.unlink()

    def lost(self) -> str | None:
        """Why the run directory is no longer this launch's (None while it is): its lock is gone, or is another
        launch's. A directory moved or renamed while it trained was made again at its path by the next save,
        which then mixed its checkpoints with those of a new run started there. A lock that does not read now (a
        stale NFS handle, no file descriptor left, one being written) is not taken for that: never raises."""
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if not os.path.isdir(self.path.parent):
                return "it is gone (moved, renamed or deleted)"
            return f"its lock ({LOCK}) is gone: the directory was moved, renamed or replaced"
        except (OSError, ValueError):
            return None
        if not isinstance(holder, dict) or holder.get("token") == self.token:
            return None
        return f"another launch holds it now ({_describe(holder)}): the directory was moved, renamed or replaced"

    def _beat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return


def in_use(run_dir: Path) -> str | None:
    """Who works in `run_dir` now (`pid 123 on host, since ...`), or None when no live launch holds its lock."""
    path = run_dir / LOCK
    if not path.is_file():
        return None
    holder = _read_holder(path)
    return _describe(holder) if holder and _why_stale(holder, path) is None else None


def _make_dir(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--output-dir {run_dir} is a file, not a directory: choose a directory")
    if run_dir.is_symlink() and not run_dir.exists():
        raise UsageError(f"--output-dir {run_dir} is a link to {os.readlink(run_dir)}, which does not exist: create "
                         "that directory, or choose another --output-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--output-dir {run_dir}: cannot create it ({err.strerror}): choose a writable "
                         "--output-dir") from None


def _holder() -> dict:
    import psutil

    return {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
            "pid_started": psutil.Process().create_time(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT", "0")}


def _read_holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _why_stale(holder: dict, path: Path) -> str | None:
    """Why the holder of the lock at `path` is gone, or None while it may still work there."""
    import psutil

    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return "it was released"
    if not holder:
        return "it was unreadable and untouched for a minute" if age > 60 else None
    job = os.environ.get("SLURM_JOB_ID")
    if job and holder.get("slurm_job_id") == job and \
            holder.get("slurm_restart_count") != os.environ.get("SLURM_RESTART_COUNT", "0"):
        return f"it was held by an earlier run of SLURM job {job}, which SLURM ended before requeueing it"
    if holder.get("host") == socket.gethostname():
        try:
            alive = abs(psutil.Process(int(holder["pid"])).create_time() - float(holder["pid_started"])) < 1
        except (psutil.Error, KeyError, TypeError, ValueError):
            alive = False
        return None if alive else f"its process {holder.get('pid')} on this host has ended"
    if age > RunLock.STALE_S:
        return f"its holder on {holder.get('host')} has not been seen for {age / 60:.0f} minutes"
    return None


def _take_over(path: Path, stale: dict) -> bool:
    """Remove the stale lock at `path`, unless another launch replaced it meanwhile; True if removed."""
    moved = path.with_name(f"{LOCK}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, moved)
    except OSError:
        return False
    if _read_holder(moved).get("token") != stale.get("token"):  # a live lock, taken just now: put it back
        with contextlib.suppress(OSError):
            os.link(moved, path)
        moved.unlink(missing_ok=True)
        return False
    moved.unlink(missing_ok=True)
    return True


def _describe(holder: dict) -> str:
    if not holder:
        return "a lock being written"
    job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('started')}"
