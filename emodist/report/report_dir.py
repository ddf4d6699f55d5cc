"""The directory a comparison writes its report into (`launch/compare.py --output`): it replaces only the files
an earlier comparison wrote there, listed in OWN, and refuses a directory holding anything else. Its default
directory (no --output) is not taken from a comparison of other runs: OWN names the runs too.
"""

from __future__ import annotations

import json
from pathlib import Path

from emodist.runtime.errors import UsageError

OWN = ".emodist-comparison"
"""In a report directory: {"files": the files the comparison wrote there, so that the next one may replace them,
"runs": the run directories it compared} (JSON; before the runs were named, a list of the files)."""


def claim_output(output: Path, runs: list[Path] | None = None) -> list[str]:
    """The files an earlier comparison wrote in `output` (to replace), [] for a new or empty directory.
    UsageError, with nothing written, when `output` holds anything else: a user's files are never replaced; and
    when `runs` are given (the report goes to its default directory) and the earlier comparison there was of
    other runs."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file: name a directory for the report")
    own = output / OWN
    try:
        listed = json.loads(own.read_text(encoding="utf-8")) if own.is_file() else []
    except (OSError, ValueError):
        listed = []
    compared = listed.get("runs") if isinstance(listed, dict) else None
    listed = listed.get("files") if isinstance(listed, dict) else listed
    if runs is not None and isinstance(compared, list) and sorted(compared) != sorted(_names(runs)):
        raise UsageError(f"{output} holds the comparison of other runs ({_some(compared)}): nothing was written or "
                         "replaced; give this one its own --output, or compare those runs with these")
    # plain names of files in `output` only: an edited list must not reach outside it
    earlier = [n for n in listed if isinstance(n, str) and n not in (".", "..", OWN) and Path(n).name == n] if (
        isinstance(listed, list)) else []
    others = sorted(p.name for p in output.iterdir() if p.name != OWN and p.name not in earlier) if output.is_dir() else []
    if others:
        raise UsageError(f"--output {output} holds files an emodist comparison did not write there ({_some(others)}): nothing "
                         "was written or replaced; choose another --output, or empty that directory")
    return earlier


def record_output(output: Path, written: list[Path], earlier: list[str], runs: list[Path]) -> None:
    """Name the comparison's files and `runs` in `output` (OWN), and remove the earlier one's files it did not
    write again."""
    names = [p.name for p in written]
    for stale in set(earlier) - set(names):
        (output / stale).unlink(missing_ok=True)
    (output / OWN).write_text(json.dumps({"files": sorted(names), "runs": sorted(_names(runs))}) + "\n", encoding="utf-8")


def _names(runs: list[Path]) -> list[str]:
    return [str(run.resolve()) for run in runs]


def _some(names: list, shown: int = 3) -> str:
    return ", ".join(map(str, names[:shown])) + (f" and {len(names) - shown} more" if len(names) > shown else "")
