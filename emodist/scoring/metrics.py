"""Multi-label classification metrics: pure functions over numpy arrays.

    scores = multilabel_metrics(targets, probabilities, labels)      # threshold 0.5 (logit 0)

Conventions: a label is predicted when its probability is >= the threshold; a score whose denominator is
zero (a label never predicted, a text with no label) counts as 0, as scikit-learn's zero_division=0 does.
Every score is scikit-learn's (tests/test_metrics.py compares them on generated cases), computed here from
the confusion counts in numpy: scikit-learn's import (scipy.stats with it) cost every launch 0.8 s, and
its input checks 50 ms a call.
"""

from __future__ import annotations

import numpy as np

HEADLINE = ("f1_micro", "f1_macro", "precision_micro", "recall_micro", "subset_accuracy", "jaccard_samples")
SCORES = (*HEADLINE, "hamming_loss", "f1_weighted", "f1_samples", "precision_macro", "recall_macro")
"""Every number `multilabel_metrics` reports of a split (with `num_examples`); a run's summary adds its `loss`."""


def multilabel_metrics(targets: np.ndarray, probabilities: np.ndarray, labels: list[str],
                       threshold: float | np.ndarray = 0.5) -> dict:
    """Scores of `probabilities` (examples x labels) against 0/1 `targets` of the same shape.

    Returns a JSON-ready dict: subset accuracy, samples-Jaccard, Hamming loss, F1 micro/macro/weighted/
    samples, precision and recall micro/macro, `per_label` {name: precision, recall, f1, support} and
    `confusion` {name: [[tn, fp], [fn, tp]]}. Raises ValueError on mismatched shapes or no examples.
    """
    if targets.shape != probabilities.shape or targets.ndim != 2 or targets.shape[1] != len(labels):
        raise ValueError(f"targets {targets.shape}, probabilities {probabilities.shape} and {len(labels)} labels "
                         "do not match")
    if len(targets) == 0:
        raise ValueError("no examples to score")
    y_true = targets.astype(bool)
    y_pred = probabilities >= threshold
    hits = y_true & y_pred
    # per label (axis 0) and per text (axis 1): true positives, labels truly there, labels predicted
    tp, true, predicted = hits.sum(0), y_true.sum(0), y_pred.sum(0)
    tp_text, true_text, predicted_text = hits.sum(1), y_true.sum(1), y_pred.sum(1)
    precision, recall = _divide(tp, predicted), _divide(tp, true)
    f1 = _divide(2 * tp, true + predicted)
    scores = {
        "num_examples": int(len(y_true)),
        "subset_accuracy": float(np.mean(np.all(y_true == y_pred, axis=1))),
        "jaccard_samples": float(np.mean(_divide(tp_text, true_text + predicted_text - tp_text))),
        "hamming_loss": float(np.mean(y_true != y_pred)),
        "f1_micro": _divide(2 * tp.sum(), true.sum() + predicted.sum()),
        "f1_macro": float(np.mean(f1)),
        "f1_weighted": float(np.average(f1, weights=true)) if true.sum() else 0.0,
        "f1_samples": float(np.mean(_divide(2 * tp_text, true_text + predicted_text))),
        "precision_micro": _divide(tp.sum(), predicted.sum()),
        "recall_micro": _divide(tp.sum(), true.sum()),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
    }
    scores["per_label"] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
        for name, p, r, f, n in zip(labels, precision, recall, f1, true, strict=True)
    }
    false_positives, false_negatives = predicted - tp, true - tp
    true_negatives = len(y_true) - tp - false_positives - false_negatives
    scores["confusion"] = {name: [[int(tn), int(fp)], [int(fn), int(hit)]] for name, tn, fp, fn, hit
                           in zip(labels, true_negatives, false_positives, false_negatives, tp, strict=True)}
    return scores


def _divide(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0; a float for scalars, float64 arrays else."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    out = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)
    return float(out) if out.ndim == 0 else out
