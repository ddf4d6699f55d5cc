"""The directory a comparison writes its report into (`launch/compare.py --output`): it replaces only the files
an earlier comparison wrote there, listed in OWN, and refuses a directory holding anything else.
"""

from __future__ import annotations

import json
from pathlib import Path

from emodist.runtime.errors import UsageError

OWN = ".emodist-comparison"
"""In a report directory: the files the comparison wrote there (JSON list), so that the next one may replace them."""


def claim_output(output: Path) -> list[str]:
    """The files an earlier comparison wrote in `output` (to replace), [] for a new or empty directory.
    UsageError, with nothing written, when `output` holds anything else: a user's files are never replaced."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file: name a directory for the report")
    own = output / OWN
    try:
        listed = json.loads(own.read_text(encoding="utf-8")) if own.is_file() else []
    except (OSError, ValueError):
        listed = []
    # plain names of files in `output` only: an edited list must not reach outside it
    earlier = [n for n in listed if isinstance(n, str) and n not in (".", "..", OWN) and Path(n).name == n] if (
        isinstance(listed, list)) else []
    others = sorted(p.name for p in output.iterdir() if p.name != OWN and p.name not in earlier) if output.is_dir() else []
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise UsageError(f"--output {output} holds files an emodist comparison did not write there ({shown}): nothing "
                         "was written or replaced; choose another --output, or empty that directory")
    return earlier


def record_output(output: Path, written: list[Path], earlier: list[str]) -> None:
    """Name the comparison's files in `output` (OWN), and remove those of the earlier one it did not write again."""
    names = [p.name for p in written]
    for stale in set(earlier) - set(names):
        (output / stale).unlink(missing_ok=True)
    (output / OWN).write_text(json.dumps(sorted(names)) + "\n", encoding="utf-8")
