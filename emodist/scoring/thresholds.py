"""Decision thresholds tuned on the dev split: one per label, toward an objective, and one global threshold.

    tuned = thresholds.tune(dev_targets, dev_probabilities, labels, objective="f1_macro")
    thresholds.save(run_dir / "thresholds.json", tuned)            # and model/thresholds.json
    cut = thresholds.for_labels(thresholds.load(model_dir), labels)  # numpy array, one per label

A single 0.5 threshold wastes what a model knows about rare labels: their probabilities rarely reach 0.5.
The per-label thresholds are what the test metrics `test_tuned` and inference use; the global one (best
micro-F1) is kept for comparison. Candidates are the grid 0.02, 0.03, ..., 0.98; ties go to the value
closest to 0.5, so a label without dev positives (F1 0 everywhere) keeps 0.5.

The objective (train.threshold_objective) says which score the per-label thresholds serve:
- `f1_macro`: each label's threshold maximises that label's F1. Macro-F1 is their mean, so this is its
  optimum. It lowers rare labels' thresholds far (0.05-0.2 on GoEmotions), which adds labels to many texts:
  micro-F1 and samples-Jaccard can fall.
- `f1_micro` and `jaccard_samples`: coordinate ascent from the `f1_macro` thresholds, one label at a time, to
  the grid value that best raises the whole score with the others held, until a pass changes nothing (a
  local optimum; each step can only raise the score).

Bootstrap (train.threshold_bootstrap, `tune(..., bootstrap=30)`): the objective is tuned again on that many
resamples of the dev texts and each label keeps the mean of its thresholds. A rare label's best dev threshold
rests on a handful of texts (13 for grief in GoEmotions' dev split), and the argmax of a curve that flat jumps
with them. Chosen on dev alone: tuned on one half of dev and scored on the other (5 random splits each way),
the bootstrap mean of 30 added 0.003-0.005 macro-F1 and 0.002-0.004 micro-F1 for three 3-epoch minilm runs on
GoEmotions, and -0.0004 / +0.0035 for a 1-epoch run (bench/RESULTS.md). On GoEmotions' dev split (5,426 texts,
2 cores shared with a training run) 30 resamples took 1.2 s for `f1_macro` and `f1_micro`, 33 s for
`jaccard_samples`, whose ascent recounts every text's sets.

The file also names the labels the model has not learned: those whose best dev F1 is within
`UNLEARNED_MARGIN` of labelling every text with them (a threshold at the bottom of the grid does that),
and those without dev positives, whose threshold says nothing. `warning` turns them into the one line
that training and predict print. A run's file records `max_length`, the data.max_length the thresholds were
tuned at: predict reads as many tokens of a text; and `finished`, the step and time of the finish that wrote it,
which tells an export of one finish from another's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emodist.runtime.errors import UsageError

FILE = "thresholds.json"
GRID = np.round(np.arange(0.02, 0.985, 0.01), 2)
UNLEARNED_MARGIN = 0.05
"""A label whose best dev F1 is below (F1 of labelling every text with it) + this has not been learned."""


def _best(f1: np.ndarray) -> np.ndarray:
    """Index into GRID of the best F1 along axis 0, ties to the threshold closest to 0.5."""
    preference = f1 - 1e-9 * np.abs(GRID - 0.5).reshape(-1, *([1] * (f1.ndim - 1)))
    return np.argmax(preference, axis=0)


OBJECTIVES = ("f1_macro", "f1_micro", "jaccard_samples")
MAX_PASSES = 20
"""Coordinate ascent stops after this many passes over the labels (a 1-epoch minilm on GoEmotions' dev split
settled in 3 for f1_micro and 4 for jaccard_samples)."""


def tune(targets: np.ndarray, probabilities: np.ndarray, labels: list[str], objective: str = "f1_macro",
         bootstrap: int = 0, seed: int = 0) -> dict:
    """{"global", "per_label": {label: threshold}, "objective", "bootstrap", "grid": [lo, hi, step], "tuned_on", ...}
    from dev predictions, the per-label thresholds maximising `objective` (OBJECTIVES). `bootstrap` > 0: each
    label's threshold is the mean of its tuned thresholds over that many resamples of the texts (with
    replacement, drawn from `seed`) instead of the one tuned on all of them."""
    if objective not in OBJECTIVES:
        raise ValueError(f"threshold objective {objective!r}: not one of {', '.join(OBJECTIVES)}")
    positive = targets.astype(bool)
    best, per_label_f1, micro_f1 = _tuned(positive, probabilities, objective)
    per_label = GRID[best]
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        draws = (rng.integers(0, len(targets), len(targets)) for _ in range(bootstrap))
        per_label = np.mean([GRID[_tuned(positive[i], probabilities[i], objective)[0]] for i in draws], axis=0)
    positives = positive.sum(axis=0)
    every_text_f1 = 2 * positives / (positives + len(targets))  # precision = prevalence, recall 1
    best_f1 = per_label_f1[best, np.arange(len(labels))]
    return {
        "global": float(GRID[_best(micro_f1)]),
        "per_label": {name: round(float(t), 4) for name, t in zip(labels, per_label, strict=True)},
        "objective": objective,
        "bootstrap": bootstrap,
        "grid": [float(GRID[0]), float(GRID[-1]), 0.01],
        "tuned_on": "dev",
        "unlearned": [name for name, f1, floor, count in zip(labels, best_f1, every_text_f1, positives, strict=True)
                      if count and f1 < floor + UNLEARNED_MARGIN],
        "no_dev_positives": [name for name, count in zip(labels, positives, strict=True) if not count],
    }


def _tuned(positive: np.ndarray, probabilities: np.ndarray, objective: str):
    """(each label's GRID index maximising `objective`, each label's F1 at each grid value, micro-F1 at each
    grid value as one global threshold)."""
    labels = positive.shape[1]
    # (grid, examples, labels) would be large for big splits: count per grid point instead
    tp = np.empty((len(GRID), labels))
    fp = np.empty_like(tp)
    for i, threshold in enumerate(GRID):
        predicted = probabilities >= threshold
        tp[i] = (predicted & positive).sum(axis=0)
        fp[i] = (predicted & ~positive).sum(axis=0)
    fn = positive.sum(axis=0) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        per_label_f1 = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
        micro_f1 = np.nan_to_num(2 * tp.sum(1) / (2 * tp.sum(1) + fp.sum(1) + fn.sum(1)))
    best = _best(per_label_f1)
    if objective == "f1_micro":
        best = _ascend(best, lambda label, chosen: _micro_f1_moving(tp, fp, fn, chosen, label))
    elif objective == "jaccard_samples":
        best = _ascend(best, lambda label, chosen: _jaccard_moving(positive, probabilities, chosen, label))
    return best, per_label_f1, micro_f1


def _ascend(chosen: np.ndarray, moving) -> np.ndarray:
    """Coordinate ascent over the labels' grid indices `chosen`: `moving(label, chosen)` is the score for each
    grid value of that label, the others held. A label moves only to a strictly better value."""
    chosen = chosen.copy()
    for _ in range(MAX_PASSES):
        moved = False
        for label in range(len(chosen)):
            scores = moving(label, chosen)
            candidate = int(_best(scores))
            if scores[candidate] > scores[chosen[label]] + 1e-12:
                chosen[label], moved = candidate, True
        if not moved:
            break
    return chosen


def _micro_f1_moving(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, chosen: np.ndarray, label: int) -> np.ndarray:
    """Micro-F1 for each grid threshold of `label`, the other labels at `chosen` (tp, fp, fn: grid x labels)."""
    columns = np.arange(tp.shape[1])
    totals = [counts[chosen, columns].sum() - counts[chosen[label], label] + counts[:, label] for counts in (tp, fp, fn)]
    hits, false_pos, missed = totals
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(2 * hits / (2 * hits + false_pos + missed))


def _jaccard_moving(positive: np.ndarray, probabilities: np.ndarray, chosen: np.ndarray, label: int) -> np.ndarray:
    """Samples-Jaccard (a text without true or predicted labels scores 0) for each grid threshold of `label`,
    the other labels at `chosen`."""
    predicted = probabilities >= GRID[chosen]
    predicted[:, label] = False
    truth = positive.copy()
    truth[:, label] = False
    inter = (predicted & truth).sum(1)  # the other labels' share of each text's intersection and union
    union = (predicted | truth).sum(1)
    mine = probabilities[:, label][None, :] >= GRID[:, None]  # grid x texts
    is_true = positive[:, label][None, :]
    inter = inter + (mine & is_true)
    union = union + (mine | is_true)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(inter / union).mean(axis=1)


def warning(tuned: dict) -> str | None:
    """One line on the labels the dev scores say the model has not learned (None when it learned them all)."""
    untrained = tuned.get("no_train_positives") or []
    unlearned = [name for name in tuned.get("unlearned") or [] if name not in untrained]
    unseen = tuned.get("no_dev_positives") or []
    total = len(tuned["per_label"])
    parts = []
    if untrained:  # no training fixes these: their examples are missing
        parts.append(f"{len(untrained)} label(s) have no train examples ({_some(untrained)}): the model cannot learn "
                     "them; add train examples of them, or leave them out of the label set")
    if unlearned:
        barely = "the model has barely learned: " if len(unlearned) >= total / 2 else ""
        parts.append(f"{barely}{len(unlearned)} of {total} labels score on dev no better than labelling every "
                     f"text with them ({_some(unlearned)}), so what it says of them is close to a guess; train "
                     "longer (train.epochs, train.max_steps) or check optim.lr")
    if unseen:
        parts.append(f"{len(unseen)} label(s) have no dev examples ({_some(unseen)}): their threshold stays 0.5, "
                     "untested")
    return "; ".join(parts) or None


def _some(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


SERVING_FIX = "delete it to use 0.5, or restore it from the run"
"""What a damaged thresholds.json beside a served model asks for (an export's own advice differs)."""


def for_labels(tuned: dict, labels: list[str], where: Path | str = FILE, fix: str = SERVING_FIX) -> np.ndarray:
    """The per-label thresholds in `labels` order; UsageError if the file `where` does not cover them."""
    missing = [name for name in labels if name not in tuned["per_label"]]
    if missing:
        raise UsageError(f"{where} has no threshold for {', '.join(missing[:5])}: it belongs to another label set; "
                         f"{fix}")
    return np.array([tuned["per_label"][name] for name in labels], dtype=np.float32)


def save(path: Path, tuned: dict) -> None:
    path.write_text(json.dumps(tuned, indent=2) + "\n", encoding="utf-8")


def load(model_dir: Path, fix: str = SERVING_FIX) -> dict | None:
    """The thresholds saved beside a model (None when there are none: use 0.5); UsageError, naming the file,
    for one that is not {"per_label": {label: a number in [0, 1]}, "global": ...}."""
    path = Path(model_dir) / FILE
    if not path.is_file():
        return None
    try:
        tuned = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise UsageError(f"{path}: not valid JSON ({err}): {fix}") from None
    problem = _shape_problem(tuned)
    if problem:
        raise UsageError(f"{path}: {problem}: {fix}")
    return tuned


def _shape_problem(tuned) -> str | None:
    if not isinstance(tuned, dict) or not isinstance(tuned.get("per_label"), dict):
        return 'not thresholds (expected {"per_label": {label: threshold}, ...})'
    values = [("global", tuned.get("global", 0.5)), *tuned["per_label"].items()]
    for name, value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            return f"the threshold of {name} is {value!r}, not a number from 0 to 1"
    length = tuned.get("max_length", 1)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        return f"max_length is {length!r}, not a number of tokens (the data.max_length the thresholds were tuned at)"
    return None
