"""Files written the way a long run needs them: JSON written whole or not at all, free names to move things
aside to, modes that follow the umask (safetensors ignores it), a file's SHA-256, and the cache directory for
what can be rebuilt (tokenized splits, smoke bases)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from pathlib import Path


def write_json(path: Path, payload) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one. A NaN or infinite
    number is written as null (JSON has neither; Python would write NaN, which strict readers refuse)."""
    write_text_atomic(path, json.dumps(finite(payload), indent=2, allow_nan=False) + "\n")


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of the file at `path`, read in blocks (a checkpoint's weights can be gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) so that a reader sees the old file or the new one, never half of one; launches
    writing the same file at once each write their own temporary file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # a full disk, a Ctrl-C: no half-written temporary file stays beside it
        tmp.unlink(missing_ok=True)
        raise


def free_name(path: Path, numbered) -> Path:
    """`path` when nothing is there (not even a dangling link), else the first free `numbered(2)`,
    `numbered(3)`, ...: where a file or directory is moved aside, nothing that is already there is replaced."""
    number, candidate = 1, path
    while os.path.lexists(candidate):
        number += 1
        candidate = numbered(number)
    return candidate


def umask() -> int:
    """The process's file-creation mask, read without changing it (Linux), else by setting it back at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_to_umask(directory: Path) -> None:
    """Give every file under `directory` the mode a plain `open()` would have (0o666 minus the umask), and
    `directory` and every directory under it the mode of a plain `mkdir` (0o777 minus the umask).
    safetensors writes its files -rw------- whatever the umask, and tempfile.mkdtemp makes drwx------, so a
    model, checkpoint or export written on a shared cluster would be unreadable by the group that the user's
    umask lets read it. The setgid bit a directory inherits from a shared group's directory is kept."""
    mask = umask()
    for root, dirs, files in os.walk(directory):
        for names, mode in ((files, 0o666 & ~mask), ([".", *dirs], 0o777 & ~mask)):
            for name in names:
                path = os.path.join(root, name)
                now = os.lstat(path).st_mode
                if not stat.S_ISLNK(now) and now & 0o777 != mode:
                    os.chmod(path, (now & 0o7000) | mode)


def finite(value):
    """`value` as write_json writes it: every NaN or infinite float (in dicts and lists too) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def cache_root(cache_dir: str | None) -> Path:
    """emodist's cache directory: `cache_dir` (data.cache_dir), else $EMODIST_CACHE, else ~/.cache/emodist."""
    return Path(cache_dir or os.environ.get("EMODIST_CACHE") or Path.home() / ".cache" / "emodist")
