"""PNG plots of runs, drawn from their run directories (summary.json, metrics.jsonl) with matplotlib.

    plots.comparison(runs, summaries, output)   # across runs: F1 vs throughput, per-label F1, curves, confusion
    plots.run(run_dir, summary)                 # one run's plots/ directory

Every function returns the files it wrote. Pure file work on the Agg backend: no display, no torch.
"""

from __future__ import annotations

import json
import math
import warnings
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
    with warnings.catch_warnings():  # label names in a script the font lacks (CJK) draw as boxes, without
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")  # a warning per glyph per plot
        fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


# --- across runs ---------------------------------------------------------------------------------------

def comparison(runs: list[Path], summaries: list[dict], output: Path, names: list[str] | None = None,
               split: str = "test") -> list[Path]:
    """The comparison's plots; `names`: one per run, unique (default: the runs' directory names)."""
    names = names or [r.name for r in runs]
    stems: list[str] = []  # one file each: b/c and b-c would both write confusion-b-c.png
    for name in names:
        stem = name.replace("/", "-")
        stems.append(stem if stem not in stems else f"{stem}-{len(stems) + 1}")
    return [
        f1_vs_throughput(names, summaries, output / "f1_vs_throughput.png", split),
        per_label_heatmap(names, summaries, output / "per_label_f1.png", split),
        curves([_records(r) for r in runs], names, output / "curves.png"),
        *(confusion_grid(summary, output / f"confusion-{stem}.png", f"{name} ({split})", split)
          for name, stem, summary in zip(names, stems, summaries, strict=True)),
    ]


def f1_vs_throughput(names: list[str], summaries: list[dict], path: Path, split: str) -> Path:
    """F1 macro against training tokens/s; bubble area follows peak memory. Bubbles carry numbers and the
    names go to a key beside the axes, so that long or many names never cover each other or the points."""
    plt = _pyplot()
    speed = [s.get("perf", {}).get("train_tokens_per_s") or 0.0 for s in summaries]
    f1 = [s.get(split, {}).get("f1_macro") or 0.0 for s in summaries]
    memory = [(s.get("perf", {}).get("peak_memory_bytes") or 0) / 2**30 for s in summaries]
    largest = max(memory) or 1.0
    keys = [f"{i}. {name} ({m:.1f} GiB)" for i, (name, m) in enumerate(zip(_shortened(names), memory, strict=True), 1)]
    fig, ax = plt.subplots(figsize=(5.5 + 0.065 * max(map(len, keys)), 4.5), layout="constrained")
    colors = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")(np.arange(len(names)) % 20)
    ax.scatter(speed, f1, s=[60 + 1500 * m / largest for m in memory], c=colors, alpha=0.55, edgecolors="black",
               clip_on=False, zorder=2)
    for number, (x, y) in enumerate(zip(speed, f1, strict=True), start=1):
        ax.annotate(str(number), (x, y), ha="center", va="center", fontsize=8, fontweight="bold", zorder=3)
    # room for the largest bubble (radius ~22 points) around the extreme points
    ax.margins(x=0.15, y=0.15)
    if len(set(speed)) == 1:
        ax.set_xlim(speed[0] * 0.5 - 1, speed[0] * 1.5 + 1)
    handles = [plt.Line2D([], [], marker="o", linestyle="", markersize=8, markerfacecolor=color, alpha=0.55,
                          markeredgecolor="black") for color in colors]
    ax.legend(handles, keys,
              loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=8, frameon=False,
              title="run (peak memory)", title_fontsize=8)
    ax.set_xlabel("training tokens/s (real tokens)")
    ax.set_ylabel(f"{split} F1 macro")
    ax.set_title("F1 for throughput (bubble area: peak memory)", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _shorten(name: str, width: int = 40) -> str:
    """`name` cut in the middle to `width` characters (a run's start and its date-time end both matter)."""
    return name if len(name) <= width else name[: width // 2 - 1] + "..." + name[-(width // 2 - 2):]


def _shortened(names: list[str], width: int = 48) -> list[str]:
    """The names cut to `width` where that keeps them apart, else whole: a key must tell every run apart."""
    short = [_shorten(name, width) for name in names]
    return short if len(set(short)) == len(set(names)) else list(names)


def per_label_heatmap(names: list[str], summaries: list[dict], path: Path, split: str) -> Path:
    """Each run's F1 per label: at the thresholds tuned on dev where every run has them, else at 0.5."""
    plt = _pyplot()
    tuned = all(f"{split}_tuned" in s for s in summaries)
    scores = f"{split}_tuned" if tuned else split
    labels = summaries[0].get("labels") or sorted(summaries[0].get(split, {}).get("per_label", {}))
    grid = np.array([[s.get(scores, {}).get("per_label", {}).get(label, {}).get("f1", np.nan) for label in labels]
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
    ax.set_title(f"per-label {split} F1 ({'thresholds tuned on dev' if tuned else 'threshold 0.5'})")
    return _save(fig, path)


def curves(records: list[list[dict]], names: list[str], path: Path) -> Path:
    """Training and dev loss, and dev F1 micro and macro, against the optimizer step: one colour per run,
    the key below both panels. Every evaluation is a marked point, so a run evaluated once still shows
    where it stands."""
    plt = _pyplot()
    labels = _shortened(names)
    columns = 1 if len(names) == 1 else 2 if max(map(len, labels)) > 40 else 3
    key_rows = math.ceil(len(names) / columns)
    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(11, 4 + 0.2 * key_rows), sharex=True, layout="constrained")
    colors = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")(np.arange(len(names)) % 20)
    last_step = 0
    for run, color in zip(records, colors, strict=True):
        loss_ax.plot(*_series(run, "train/loss"), color=color, linewidth=1)
        loss_ax.plot(*_series(run, "eval/loss"), color=color, linestyle="--", marker="o", markersize=4)
        f1_ax.plot(*_series(run, "eval/f1_micro"), color=color, marker="o", markersize=4)
        f1_ax.plot(*_series(run, "eval/f1_macro"), color=color, linestyle="--", marker="s", markersize=3)
        last_step = max([last_step, *(r["step"] for r in run)])
    loss_ax.set(xlabel="optimizer step", ylabel="BCE loss", title="loss: train (line), dev (dashed, points)")
    f1_ax.set(xlabel="optimizer step", ylabel="dev F1 at threshold 0.5", ylim=(0, 1),
              title="dev F1: micro (circles), macro (dashed, squares)")
    f1_ax.set_xlim(0, max(last_step, 1) * 1.03)
    for ax in (loss_ax, f1_ax):
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=color, linewidth=2) for color in colors]
    fig.legend(handles, labels, loc="outside lower center", ncol=columns, fontsize=8, frameon=False)
    return _save(fig, path)


def confusion_grid(summary: dict, path: Path, title: str, split: str) -> Path:
    """One small 2x2 matrix (rows: true no/yes, columns: predicted no/yes) per label, at threshold 0.5."""
    plt = _pyplot()
    confusion = summary.get(split, {}).get("confusion", {})
    labels = [label for label in summary.get("labels") or sorted(confusion) if label in confusion] or ["(none)"]
    columns = math.ceil(math.sqrt(len(labels)))
    rows = math.ceil(len(labels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.0 * rows + 0.5), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, label in zip(axes.flat, labels, strict=False):
        matrix = np.array(confusion.get(label, [[0, 0], [0, 0]]), dtype=float)
        shade = matrix / max(matrix.sum(axis=1, keepdims=True).max(), 1)
        ax.imshow(shade, vmin=0, vmax=1, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=7,
                    color="white" if shade[i, j] > 0.5 else "black")
        ax.axis("on")
        # the label's name above its matrix, the predicted-class ticks below it: nothing shares a line
        ax.set_title(_shorten(label, 22), fontsize=8, pad=3)
        ax.tick_params(top=False, labeltop=False, length=2, pad=1)
        ax.set_xticks([0, 1], ["no", "yes"], fontsize=6)
        ax.set_yticks([0, 1], ["no", "yes"], fontsize=6)
    fig.suptitle(f"{_shorten(title, 60)}: true (rows) vs predicted (columns), threshold 0.5", fontsize=9)
    return _save(fig, path)


def per_label_bars(summary: dict, path: Path, title: str, split: str) -> Path:
    """Each label's F1 at threshold 0.5 and at the thresholds tuned on dev, side by side, best tuned F1 on
    top; the tick names each label with its support."""
    plt = _pyplot()
    fixed = summary.get(split, {}).get("per_label", {})
    tuned = summary.get(f"{split}_tuned", {}).get("per_label", {})
    labels = sorted(fixed, key=lambda name: (tuned.get(name, fixed[name]).get("f1") or 0.0,
                                             fixed[name].get("f1") or 0.0))
    positions = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7.5, max(2.8, 0.34 * len(labels) + 1.4)), layout="constrained")
    height = 0.4 if tuned else 0.8
    ax.barh(positions + (height / 2 if tuned else 0), [fixed[n].get("f1") or 0.0 for n in labels], height=height,
            color="#9ecae1", label="threshold 0.5")
    if tuned:
        ax.barh(positions - height / 2, [tuned.get(n, {}).get("f1") or 0.0 for n in labels], height=height,
                color="#08519c", label="thresholds tuned on dev")
    ax.set_yticks(positions, [f"{_shorten(n, 28)} ({fixed[n].get('support', 0)})" for n in labels], fontsize=8)
    ax.set(xlim=(0, 1), xlabel=f"{split} F1", ylim=(-0.6, len(labels) - 0.4))
    ax.set_title(f"{_shorten(title, 50)}: per-label {split} F1 (support)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


# --- one run --------------------------------------------------------------------------------------------

def run(run_dir: Path, summary: dict, split: str = "test") -> list[Path]:
    """plots/ of a finished run: its curves, per-label F1 bars and confusion grid."""
    out = run_dir / "plots"
    return [curves([_records(run_dir)], [run_dir.name], out / "curves.png"),
            confusion_grid(summary, out / "confusion.png", run_dir.name, split),
            per_label_bars(summary, out / "per_label_f1.png", run_dir.name, split)]
