"""Compare finished runs: one table of F1, throughput and memory per run.

    python launch/compare.py runs/distilbert-a runs/minilm-b        # run directories
    python launch/compare.py runs/study-42                          # a directory of runs (a study)
    python launch/compare.py runs/study-42 --output reports/study-42
    python launch/compare.py --wandb-group study-42 [--wandb-project emodist]   # runs tracked online
    python launch/compare.py runs/sweeps/minilm-losses --rank-by dev_tuned.f1_macro   # a sweep's trials

Writes comparison.csv, report.md, report.html and PNG plots into --output (default: `comparison/`
beside the runs, i.e. in their common parent directory, or inside the one directory of runs named; for
a wandb group, runs/wandb-<group>/comparison, beside the runs' downloaded summary.json and
metrics.jsonl). Runs trained on another data set or label set are refused, not mixed. With --rank-by, the
runs are also ranked by a dev score (launch/sweep.py's trials, say), best first, and the winner's config.yaml
is copied to winner-config.yaml in --output: `launch/train.py --config winner-config.yaml --output-dir NEW`
trains it again. The report directory is the comparison's own: a later comparison into it replaces its files
(and removes those it does not write again, e.g. an earlier winner-config.yaml); a directory holding any
other file is refused, nothing replaced.
Exit codes: 0 written, 2 refused (one line says why).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from emodist.report import compare, report_dir, tracking
from emodist.runtime import errors


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR", help="run directories or directories of runs")
    parser.add_argument("--output", type=Path, help="where to write the report (default: see above)")
    parser.add_argument("--wandb-group", help="compare the runs of this wandb group (needs the wandb server)")
    parser.add_argument("--wandb-project", default=os.environ.get("WANDB_PROJECT", "emodist"),
                        help="the group's project (default: WANDB_PROJECT, else emodist)")
    parser.add_argument("--wandb-entity", default=os.environ.get("WANDB_ENTITY"), help="the project's entity")
    parser.add_argument("--rank-by", metavar="METRIC", help="rank the runs by this dev score of summary.json, e.g. "
                                                            "dev_tuned.f1_macro, and write the winner's config")
    args = parser.parse_args(argv)
    if bool(args.runs) == bool(args.wandb_group):
        parser.error("name run directories or --wandb-group GROUP (one of them)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return errors.run_main(lambda: write(args))


def write(args: argparse.Namespace) -> int:
    if args.wandb_group:
        into = Path("runs") / f"wandb-{args.wandb_group}"
        args.runs = [into]
        tracking.download_wandb_group(args.wandb_group, args.wandb_project, args.wandb_entity, into)
    runs = compare.find_runs(args.runs)
    output = args.output or default_output(args.runs, runs)
    ranked = compare.rank(runs.finished, args.rank_by) if args.rank_by is not None else None  # before writing
    # a directory of someone else's files stops it too, and a default one of another comparison
    earlier = report_dir.claim_output(output, None if args.output else runs.finished)
    written = compare.write_comparison(runs, output)
    if ranked:
        for place, (run, value) in enumerate(ranked, 1):
            print(f"{place:>3}. {args.rank_by} {value:.4f}  {run}")
        winner = output / "winner-config.yaml"
        shutil.copyfile(ranked[0][0] / "config.yaml", winner)
        written.append(winner)
    report_dir.record_output(output, written, earlier, runs.finished)
    print(f"compared {len(runs.finished)} run(s)"
          + (f" ({len(runs.unfinished)} unfinished left out)" if runs.unfinished else "")
          + ": " + ", ".join(str(p) for p in written))
    return 0


def default_output(named: list[Path], runs: compare.Runs) -> Path:
    if len(named) == 1 and named[0] not in runs.finished:  # one directory of runs: the report goes inside it
        return named[0] / "comparison"
    common = Path(os.path.commonpath([p.resolve().parent for p in runs.finished]))
    if common.parent == common:  # the file system's root: a report written there, as root, without a word
        raise errors.UsageError(f"the runs compared lie in no directory of their own (their common one is {common}): "
                                "choose where the report goes with --output")
    return common / "comparison"


if __name__ == "__main__":
    sys.exit(main())
