"""Record a finished GoEmotions benchmark run in bench/RESULTS.md and the README's results table.

    python3 bench/record_goemotions.py RUN_DIR --wall-seconds 3900 --command "accelerate launch ..."

Every number comes from the run's summary.json and config.yaml; the machine is described from this
machine (/proc/cpuinfo, the cores this process may use, torch). Recording the same run again replaces its
entry, so the files never hold two versions of one run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml
from results import ROOT, machine, record, replace_block

README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- goemotions-results:start -->", "<!-- goemotions-results:end -->"
TABLE_HEAD = ("| run | settings | test F1 macro (0.5) | test F1 macro (tuned) | test F1 micro (tuned) | wall time | machine |\n"
              "|---|---|---:|---:|---:|---:|---|")
TARGETS = {"f1_macro": 0.50, "f1_micro": 0.58}


def settings(config: dict) -> str:
    train, optim, data = config["train"], config["optim"], config["data"]
    head = f" (head {optim['head_lr']:g})" if optim.get("head_lr") else ""
    return (f"{train['epochs']} epochs, batch {train['global_batch_size']}, lr {optim['lr']:g}{head}, "
            f"max_length {data['max_length']}, pos_weight {train['pos_weight']}, grouping {data['grouping']}")


def section(run: Path, summary: dict, config: dict, wall: float, command: str, where: str) -> str:
    rows = []
    for name, split in (("dev, threshold 0.5", "dev"), ("test, threshold 0.5", "test"),
                        ("test, thresholds tuned on dev", "test_tuned")):
        s = summary[split]
        rows.append(f"| {name} | {s['f1_macro']:.4f} | {s['f1_micro']:.4f} | {s['precision_micro']:.4f} | "
                    f"{s['recall_micro']:.4f} | {s['subset_accuracy']:.4f} | {s['num_examples']:,} |")
    tuned = summary["test_tuned"]
    verdict = ", ".join(f"{k.replace('_', ' ')} {tuned[k]:.4f} {'>=' if tuned[k] >= v else '<'} {v:.2f} "
                        f"({'met' if tuned[k] >= v else 'not met'})" for k, v in TARGETS.items())
    perf = summary["perf"]
    return "\n".join([
        f"### minilm on GoEmotions ({len(summary['labels'])} labels): `{run.name}`",
        "",
        f"- command: `{command}`",
        f"- machine: {where}; precision {summary['mixed_precision']}",
        f"- wall time: {wall / 60:.1f} min (training {perf['train_seconds'] / 60:.1f} min, "
        f"{perf['train_samples_per_s']:.1f} samples/s, {perf['train_tokens_per_s']:,.0f} tokens/s); "
        f"peak memory {perf['peak_memory_bytes'] / 2**30:.2f} GiB; recorded {time.strftime('%Y-%m-%d')}",
        f"- settings: {settings(config)}; {summary['train']['steps']} steps",
        f"- targets (test, tuned thresholds): {verdict}",
        "",
        "| scores | F1 macro | F1 micro | precision micro | recall micro | exact match | examples |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--wall-seconds", type=float, required=True)
    parser.add_argument("--command", required=True)
    args = parser.parse_args()
    summary = json.loads((args.run_dir / "summary.json").read_text())
    config = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    where = machine()
    entry = section(args.run_dir, summary, config, args.wall_seconds, args.command, where)
    record(args.run_dir.name, entry)

    row = (f"| `{args.run_dir.name}` | {settings(config)} | {summary['test']['f1_macro']:.4f} | "
           f"{summary['test_tuned']['f1_macro']:.4f} | {summary['test_tuned']['f1_micro']:.4f} | "
           f"{args.wall_seconds / 60:.0f} min | {where.split(',')[0]}, {where.split(',')[1].strip()} |")
    readme = README.read_text()
    if TABLE_START not in readme:
        raise SystemExit(f"record_goemotions: {README} has no {TABLE_START} ... {TABLE_END} block")
    old = readme.split(TABLE_START)[1].split(TABLE_END)[0]
    rows = [line for line in old.splitlines() if line.startswith("| `") and f"`{args.run_dir.name}`" not in line]
    table = "\n".join([TABLE_START, TABLE_HEAD, *rows, row, TABLE_END])
    README.write_text(replace_block(readme, TABLE_START, TABLE_END, table), encoding="utf-8")
    print(entry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
