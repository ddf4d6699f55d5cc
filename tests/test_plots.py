"""emodist.plots: what each picture shows, and that its words neither cover each other nor leave the
canvas, at 1 to 14 runs, long run names and 28 labels.

The figures are caught just before they are written (`plots._save`), drawn, and read back: the bars'
lengths, the lines' points, every visible text's box on the canvas.
"""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import matplotlib
import pytest

from emodist.report import plots

matplotlib.use("Agg")

GOEMOTIONS = ["admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
              "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
              "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
              "remorse", "sadness", "surprise", "neutral"]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, by file name, drawn and still open."""
    caught = {}
    save = plots._save

    def catch(fig, path):
        fig.canvas.draw()
        caught[Path(path).name] = {"figure": fig, "texts": visible_texts(fig)}
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", catch)
    return caught


def visible_texts(fig) -> list[tuple[str, object]]:
    """(text, box on the canvas) of every text the figure draws; the labels of ticks that fall outside
    their axis's view are kept by matplotlib but never drawn, so they are left out."""
    renderer = fig.canvas.get_renderer()
    undrawn = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = (high - low) * 1e-6
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - slack <= tick.get_loc() <= high + slack:
                    undrawn.update((id(tick.label1), id(tick.label2)))
    found = []
    for text in fig.findobj(matplotlib.text.Text):
        if text.get_visible() and text.get_text().strip() and id(text) not in undrawn \
                and (text.axes is None or text.axes.get_visible()):
            found.append((text.get_text(), text.get_window_extent(renderer)))
    return found


def assert_readable(texts, figure, allow=lambda a, b: False) -> None:
    """No two texts share pixels (beyond one pixel of antialiasing) and none leaves the canvas."""
    canvas = figure.bbox
    for name, box in texts:
        assert box.x0 >= canvas.x0 - 1 and box.x1 <= canvas.x1 + 1 and box.y0 >= canvas.y0 - 1 \
            and box.y1 <= canvas.y1 + 1, f"{name!r} leaves the canvas: {box} outside {canvas}"
    for (a, box_a), (b, box_b) in itertools.combinations(texts, 2):
        if allow(a, b):
            continue
        overlap_x = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
        overlap_y = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
        assert overlap_x <= 1 or overlap_y <= 1, f"{a!r} and {b!r} overlap"


def summary(labels: list[str], f1_fixed: float, f1_tuned: float, speed=1000.0, memory=2**30) -> dict:
    def scores(f1):
        return {"f1_macro": f1, "f1_micro": f1,
                "per_label": {name: {"f1": f1 * (i + 1) / len(labels), "support": 7 * (i + 1)}
                              for i, name in enumerate(labels)},
                "confusion": {name: [[900 + i, 3], [40, 7 + i]] for i, name in enumerate(labels)}}
    return {"labels": labels, "test": scores(f1_fixed), "test_tuned": scores(f1_tuned),
            "perf": {"train_tokens_per_s": speed, "peak_memory_bytes": memory}}


def run_dir(path: Path, records: list[dict], labels=GOEMOTIONS) -> tuple[Path, dict]:
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path, summary(labels, 0.0, 0.31)


def names(count: int) -> list[str]:
    """Run names as a study makes them: short ones and long dated ones, differing only in the middle."""
    return [f"smoke-mistral-qlora-20261202-18{i:02d}{i:02d}-lr3e-5-seed{i}" if i % 2 else f"r{i}"
            for i in range(count)]


def test_per_label_bars_show_f1_at_05_and_at_tuned_thresholds_labelled(tmp_path, figures):
    """An undertrained model scores 0 at 0.5 everywhere: the tuned bars still show what it learned."""
    path, scores = run_dir(tmp_path / "run", [{"step": 10, "train/loss": 0.5}])
    plots.run(path, scores)
    ax = figures["per_label_f1.png"]["figure"].axes[0]
    fixed, tuned = ax.containers
    assert fixed.get_label() == "threshold 0.5" and tuned.get_label() == "thresholds tuned on dev"
    assert [bar.get_width() for bar in fixed] == [0.0] * len(GOEMOTIONS)
    assert sorted(bar.get_width() for bar in tuned) == sorted(v["f1"] for v in scores["test_tuned"]["per_label"].values())
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "neutral (196)"  # best tuned F1 on top, with support
    assert_readable(figures["per_label_f1.png"]["texts"], figures["per_label_f1.png"]["figure"])


def test_curves_show_train_and_dev_loss_and_a_single_evaluation_on_the_run_s_axis(tmp_path, figures):
    records = [{"step": s, "train/loss": 1 / s} for s in range(10, 201, 10)]
    records.append({"step": 200, "eval/loss": 0.3, "eval/f1_micro": 0.4, "eval/f1_macro": 0.2})
    path, scores = run_dir(tmp_path / "run", records)
    plots.run(path, scores)
    loss_ax, f1_ax = figures["curves.png"]["figure"].axes
    train, dev = loss_ax.lines
    assert list(train.get_xdata()) == list(range(10, 201, 10)) and list(dev.get_ydata()) == [0.3]
    assert dev.get_marker() == "o"  # one evaluation is a point that shows, not a line of length 0
    micro, macro = f1_ax.lines
    assert list(micro.get_ydata()) == [0.4] and list(macro.get_ydata()) == [0.2]
    assert f1_ax.get_xlim()[0] == 0 and f1_ax.get_xlim()[1] >= 200
    assert_readable(figures["curves.png"]["texts"], figures["curves.png"]["figure"])


def test_the_confusion_grid_of_28_labels_keeps_titles_off_the_ticks(tmp_path, figures):
    path, scores = run_dir(tmp_path / "smoke-mistral-qlora-20261202-181530-a-long-run-name", [])
    plots.run(path, scores)
    caught = figures["confusion.png"]
    assert len([ax for ax in caught["figure"].axes if ax.axison]) == len(GOEMOTIONS)
    assert_readable(caught["texts"], caught["figure"])


@pytest.mark.parametrize("count", [1, 2, 5, 14])
def test_the_comparison_keeps_names_bubbles_and_title_apart_at_any_run_count(tmp_path, figures, count):
    runs = names(count)
    summaries = [summary(GOEMOTIONS[:6], 0.2 + 0.05 * i, 0.3 + 0.05 * i, speed=500 + 9000 * (i % 4),
                         memory=(1 + 12 * (i % 3)) * 2**30) for i in range(count)]
    plots.comparison([tmp_path / name for name in runs], summaries, tmp_path / "out", runs)
    caught = figures["f1_vs_throughput.png"]
    legend = caught["figure"].axes[0].get_legend()
    keys = [t.get_text() for t in legend.get_texts()]
    assert len(set(keys)) == count  # names cut in the middle only where they stay apart
    assert all(key.startswith(f"{i}. {name[:12]}") and f"{name[-12:]} (" in key
               for i, (name, key) in enumerate(zip(runs, keys, strict=True), start=1))

    def bubble_numbers(a, b):  # the numbers sit on their bubbles, which may touch
        return a.isdigit() and b.isdigit()

    assert_readable(caught["texts"], caught["figure"], allow=bubble_numbers)
    ax = caught["figure"].axes[0]
    bubbles = ax.collections[0]
    radius = max(bubbles.get_sizes()) ** 0.5 / 2 * caught["figure"].dpi / 72  # points -> pixels
    for x, y in ax.transData.transform(bubbles.get_offsets()):
        assert ax.bbox.x0 <= x - radius + 1 and x + radius - 1 <= ax.bbox.x1, "a bubble is cut by the frame"
        assert ax.bbox.y0 <= y - radius + 1 and y + radius - 1 <= ax.bbox.y1, "a bubble is cut by the frame"
    assert_readable(figures["curves.png"]["texts"], figures["curves.png"]["figure"])
    heatmap = figures["per_label_f1.png"]["figure"].axes[0]
    assert heatmap.get_title() == "per-label test F1 (thresholds tuned on dev)"


def test_label_names_the_font_lacks_draw_without_a_warning_per_glyph(tmp_path):
    """Japanese label names printed matplotlib's "Glyph ... missing from font" for every glyph of every plot."""
    labels = ["喜び", "怒り", "悲しみ"]
    path, scores = run_dir(tmp_path / "run", [{"step": 10, "train/loss": 0.5}], labels=labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = plots.run(path, scores)
    assert len(written) >= 3 and all(p.stat().st_size > 0 for p in written)
    assert [str(w.message) for w in caught if "Glyph" in str(w.message)] == []
