"""The benchmarks' checks of their own arguments: a bad one is refused in one line, as launch/*.py refuse theirs.

    sys.exit(errors.run_main(lambda: run(args)))      # a UsageError: `emodist: error: ...`, exit code 2
    checks.at_least(1, ("--tokens", args.tokens), ("--rows", args.rows))

Every check runs before the work starts: no model loaded, no temporary directory made, no child process.
"""

from __future__ import annotations

from pathlib import Path

from emodist.runtime.errors import UsageError


def at_least(least: int, *flags: tuple[str, int | list[int] | None]) -> None:
    """UsageError for the first (flag, value) whose value (or one of its values) is below `least`; None passes."""
    for flag, value in flags:
        for one in value if isinstance(value, list) else [value]:
            if one is not None and one < least:
                raise UsageError(f"{flag} {one}: must be {least} or more")


def goemotions(data_dir: Path, splits: tuple[str, ...], fix: str = "set EMODIST_GOEMOTIONS or pass --data-dir") -> None:
    """UsageError unless `data_dir` holds GoEmotions' `splits` in its original layout (SPLIT.tsv)."""
    missing = [f"{split}.tsv" for split in splits if not (data_dir / f"{split}.tsv").is_file()]
    if missing:
        raise UsageError(f"--data-dir {data_dir}: no GoEmotions there (no {' or '.join(missing)}): {fix}")
