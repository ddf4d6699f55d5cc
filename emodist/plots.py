"""PNG plots of runs, drawn from their run directories (summary.json, metrics.jsonl) with matplotlib.

    plots.comparison(runs, summaries, output)   # across runs: F1 vs throughput, per-label F1, curves, confusion
    plots.run(run_dir, summary)                 # one run's plots/ directory

Every function returns the files it wrote. Pure file work on the Agg backend: no display, no torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, whatever the machine has for a display
    import matplotlib.pyplot as plt

    return plt


def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed run
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


# --- across runs ---------------------------------------------------------------------------------------

def comparison(runs: list[Path], summaries: list[dict], output: Path, names: list[str] | None = None,
               split: str = "test") -> list[Path]:
    """The comparison's plots; `names`: one per run, unique (default: the runs' directory names)."""
    names = names or [r.name for r in runs]
    return [
        f1_vs_throughput(names, summaries, output / "f1_vs_throughput.png", split),
        per_label_heatmap(names, summaries, output / "per_label_f1.png", split),
        curves([_records(r) for r in runs], names, output / "curves.png"),
        *(confusion_grid(summary, output / f"confusion-{name.replace('/', '-')}.png", f"{name} ({split})", split)
          for name, summary in zip(names, summaries, strict=True)),
    ]


def f1_vs_throughput(names: list[str], summaries: list[dict], path: Path, split: str) -> Path:
    """F1 macro against training tokens/s; bubble area follows peak memory."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    speed = [s.get("perf", {}).get("train_tokens_per_s") or 0.0 for s in summaries]
    f1 = [s.get(split, {}).get("f1_macro") or 0.0 for s in summaries]
    memory = [(s.get("perf", {}).get("peak_memory_bytes") or 0) / 2**30 for s in summaries]
    largest = max(memory) or 1.0
    ax.scatter(speed, f1, s=[60 + 1500 * m / largest for m in memory], alpha=0.5, edgecolors="black")
    for name, x, y, m in zip(names, speed, f1, memory, strict=True):
        ax.annotate(f"{name}\n{m:.1f} GiB", (x, y), textcoords="offset points", xytext=(8, 6), fontsize=8)
    ax.set_xlabel("training tokens/s (real tokens)")
    ax.set_ylabel(f"{split} F1 macro")
    ax.set_title("F1 for throughput (bubble area: peak memory)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def per_label_heatmap(names: list[str], summaries: list[dict], path: Path, split: str) -> Path:
    plt = _pyplot()
    labels = summaries[0].get("labels") or sorted(summaries[0].get(split, {}).get("per_label", {}))
    grid = np.array([[s.get(split, {}).get("per_label", {}).get(label, {}).get("f1", np.nan) for label in labels]
                     for s in summaries], dtype=float)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(labels) + 2), max(2.5, 0.5 * len(names) + 1.5)))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    if grid.size <= 400:
        for (i, j), value in np.ndenumerate(grid):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if value < 0.5 else "black")
    fig.colorbar(image, ax=ax, label=f"{split} F1")
    ax.set_title(f"per-label {split} F1")
    return _save(fig, path)


def curves(records: list[list[dict]], names: list[str], path: Path) -> Path:
    """Training loss and dev F1 micro against the optimizer step, one line per run."""
    plt = _pyplot()
    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in zip(names, records, strict=True):
        loss_ax.plot(*_series(run, "train/loss"), label=name, linewidth=1)
        f1_ax.plot(*_series(run, "eval/f1_micro"), label=name, marker="o", markersize=3)
    loss_ax.set(xlabel="step", ylabel="training loss", title="training loss")
    f1_ax.set(xlabel="step", ylabel="dev F1 micro", title="dev F1 micro", ylim=(0, 1))
    for ax in (loss_ax, f1_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def confusion_grid(summary: dict, path: Path, title: str, split: str) -> Path:
    """One small 2x2 matrix (rows: true no/yes, columns: predicted no/yes) per label."""
    plt = _pyplot()
    confusion = summary.get(split, {}).get("confusion", {})
    labels = [label for label in summary.get("labels") or sorted(confusion) if label in confusion] or ["(none)"]
    columns = math.ceil(math.sqrt(len(labels)))
    rows = math.ceil(len(labels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, label in zip(axes.flat, labels, strict=False):
        matrix = np.array(confusion.get(label, [[0, 0], [0, 0]]), dtype=float)
        ax.imshow(matrix / max(matrix.sum(axis=1, keepdims=True).max(), 1), vmin=0, vmax=1, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=7)
        ax.set_title(label, fontsize=8)
        ax.axis("on")
        ax.set_xticks([0, 1], ["no", "yes"], fontsize=6)
        ax.set_yticks([0, 1], ["no", "yes"], fontsize=6)
    fig.suptitle(f"{title}: true (rows) vs predicted (columns)", fontsize=9)
    return _save(fig, path)


# --- one run --------------------------------------------------------------------------------------------

def run(run_dir: Path, summary: dict, split: str = "test") -> list[Path]:
    """plots/ of a finished run: its curves, per-label F1 bars and confusion grid."""
    plt = _pyplot()
    out = run_dir / "plots"
    written = [curves([_records(run_dir)], [run_dir.name], out / "curves.png"),
               confusion_grid(summary, out / "confusion.png", run_dir.name, split)]
    per_label = summary.get(split, {}).get("per_label", {})
    ordered = sorted(per_label.items(), key=lambda item: item[1].get("f1", 0.0))
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(ordered) + 1)))
    ax.barh([f"{name} ({scores.get('support', 0)})" for name, scores in ordered],
            [scores.get("f1", 0.0) for _, scores in ordered])
    ax.set(xlim=(0, 1), xlabel=f"{split} F1", title=f"{run_dir.name}: per-label F1 (support)")
    ax.grid(axis="x", alpha=0.3)
    written.append(_save(fig, out / "per_label_f1.png"))
    return written
