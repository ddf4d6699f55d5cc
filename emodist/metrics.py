"""Multi-label classification metrics: pure functions over numpy arrays, scikit-learn underneath.

    scores = multilabel_metrics(targets, probabilities, labels)      # threshold 0.5 (logit 0)

Conventions: a label is predicted when its probability is >= the threshold; a score whose denominator is
zero (a label never predicted, a text with no label) counts as 0, as scikit-learn's zero_division=0 does.
"""

from __future__ import annotations

import numpy as np

HEADLINE = ("f1_micro", "f1_macro", "precision_micro", "recall_micro", "subset_accuracy", "jaccard_samples")


def multilabel_metrics(targets: np.ndarray, probabilities: np.ndarray, labels: list[str],
                       threshold: float | np.ndarray = 0.5) -> dict:
    """Scores of `probabilities` (examples x labels) against 0/1 `targets` of the same shape.

    Returns a JSON-ready dict: subset accuracy, samples-Jaccard, Hamming loss, F1 micro/macro/weighted/
    samples, precision and recall micro/macro, `per_label` {name: precision, recall, f1, support} and
    `confusion` {name: [[tn, fp], [fn, tp]]}. Raises ValueError on mismatched shapes.
    """
    from sklearn import metrics as skm  # imported on first use: 40 MiB a training step does not need

    if targets.shape != probabilities.shape or targets.ndim != 2 or targets.shape[1] != len(labels):
        raise ValueError(f"targets {targets.shape}, probabilities {probabilities.shape} and {len(labels)} labels "
                         "do not match")
    y_true = targets.astype(bool)
    y_pred = probabilities >= threshold
    scores = {
        "num_examples": int(len(y_true)),
        "subset_accuracy": skm.accuracy_score(y_true, y_pred),
        "jaccard_samples": skm.jaccard_score(y_true, y_pred, average="samples", zero_division=0),
        "hamming_loss": skm.hamming_loss(y_true, y_pred),
    }
    for average in ("micro", "macro", "weighted", "samples"):
        scores[f"f1_{average}"] = skm.f1_score(y_true, y_pred, average=average, zero_division=0)
    for average in ("micro", "macro"):
        scores[f"precision_{average}"] = skm.precision_score(y_true, y_pred, average=average, zero_division=0)
        scores[f"recall_{average}"] = skm.recall_score(y_true, y_pred, average=average, zero_division=0)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, average=None,
                                                                         zero_division=0)
    scores["per_label"] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }
    confusion = skm.multilabel_confusion_matrix(y_true, y_pred)
    scores["confusion"] = {name: matrix.tolist() for name, matrix in zip(labels, confusion, strict=True)}
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in scores.items()}
