"""Compare finished runs: one table of F1, throughput and memory per run.

    python launch/compare.py runs/distilbert-a runs/minilm-b        # run directories
    python launch/compare.py runs/study-42                          # a directory of runs (a study)
    python launch/compare.py runs/study-42 --output reports/study-42

Writes comparison.csv and report.md into --output (default: `comparison/` beside the runs, i.e. in
their common parent directory, or inside the one directory of runs named). Runs trained on another
data set or label set are refused, not mixed. Exit codes: 0 written, 2 refused (one line says why).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from emodist import errors, report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories or directories of runs")
    parser.add_argument("--output", type=Path, help="where to write the report (default: see above)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = report.find_runs(args.runs)
        output = args.output or default_output(args.runs, runs)
        written = report.write_comparison(runs, output)
    except errors.UsageError as err:
        return errors.report(err)
    print(f"compared {len(runs.finished)} run(s)"
          + (f" ({len(runs.unfinished)} unfinished left out)" if runs.unfinished else "")
          + ": " + ", ".join(str(p) for p in written))
    return 0


def default_output(named: list[Path], runs: report.Runs) -> Path:
    if len(named) == 1 and named[0] not in runs.finished:  # one directory of runs: the report goes inside it
        return named[0] / "comparison"
    return Path(os.path.commonpath([p.resolve().parent for p in runs.finished])) / "comparison"


if __name__ == "__main__":
    sys.exit(main())
