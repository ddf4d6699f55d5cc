"""Metrics against values worked out by hand (see the comments), and against scikit-learn on generated cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emodist.scoring.metrics import multilabel_metrics

LABELS = ["a", "b", "c"]
TARGETS = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32)
PROBABILITIES = np.array([
    [0.9, 0.2, 0.4],  # predicts {a}     of {a, c}
    [0.1, 0.7, 0.6],  # predicts {b, c}  of {b}
    [0.8, 0.5, 0.1],  # predicts {a, b}  of {a, b}: 0.5 counts as predicted
    [0.3, 0.2, 0.1],  # predicts {}      of {c}
])


def test_hand_computed_scores():
    scores = multilabel_metrics(TARGETS, PROBABILITIES, LABELS)
    # labels a and b are perfect (tp 2 each); c has tp 0, fp 1, fn 2
    assert scores["num_examples"] == 4
    assert scores["precision_micro"] == pytest.approx(4 / 5)
    assert scores["recall_micro"] == pytest.approx(4 / 6)
    assert scores["f1_micro"] == pytest.approx(8 / 11)
    assert scores["f1_macro"] == pytest.approx(2 / 3)
    assert scores["precision_macro"] == pytest.approx(2 / 3)
    assert scores["recall_macro"] == pytest.approx(2 / 3)
    assert scores["f1_weighted"] == pytest.approx(2 / 3)  # equal supports
    assert scores["subset_accuracy"] == pytest.approx(1 / 4)  # only row 2 exact
    assert scores["hamming_loss"] == pytest.approx(3 / 12)
    assert scores["f1_samples"] == pytest.approx((2 / 3 + 2 / 3 + 1 + 0) / 4)
    assert scores["jaccard_samples"] == pytest.approx((1 / 2 + 1 / 2 + 1 + 0) / 4)
    assert scores["per_label"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert scores["per_label"]["a"]["f1"] == 1.0
    assert scores["confusion"]["c"] == [[1, 1], [2, 0]]  # [[tn, fp], [fn, tp]]


def test_threshold_moves_predictions():
    scores = multilabel_metrics(TARGETS, PROBABILITIES, LABELS, threshold=0.35)
    # row 0 now also predicts c (0.4): exact; c gets tp 1 (row 0), fp 1 (row 1), fn 1 (row 3), tn 1 (row 2);
    # a and b stay perfect: micro tp 5, fp 1, fn 1
    assert scores["per_label"]["c"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert scores["confusion"]["c"] == [[1, 1], [1, 1]]
    assert scores["precision_micro"] == pytest.approx(5 / 6)
    assert scores["recall_micro"] == pytest.approx(5 / 6)
    assert scores["f1_micro"] == pytest.approx(5 / 6)
    assert scores["f1_macro"] == pytest.approx((1 + 1 + 1 / 2) / 3)
    assert scores["subset_accuracy"] == pytest.approx(2 / 4)  # rows 0 and 2


def test_scores_are_plain_json_types():
    """summary.json and wandb take the scores as they are: only dicts, lists, str, int and float inside."""
    import json

    scores = multilabel_metrics(TARGETS, PROBABILITIES, LABELS)

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(key, str) and plain(item) for key, item in value.items())
        if isinstance(value, list):
            return all(plain(item) for item in value)
        return type(value) in (str, int, float, bool) or value is None

    assert plain(scores)
    assert json.loads(json.dumps(scores)) == scores


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError) as err:
        multilabel_metrics(TARGETS, PROBABILITIES[:, :2], LABELS)
    assert str(err.value) == "targets (4, 3), probabilities (4, 2) and 3 labels do not match"
    with pytest.raises(ValueError) as err:  # equal shapes, and a second axis of 3 labels, but not a table
        multilabel_metrics(np.zeros((4, 3, 2)), np.zeros((4, 3, 2)), LABELS)
    assert str(err.value) == "targets (4, 3, 2), probabilities (4, 3, 2) and 3 labels do not match"


def test_no_examples_are_refused():
    with pytest.raises(ValueError) as err:
        multilabel_metrics(np.zeros((0, 3)), np.zeros((0, 3)), LABELS)
    assert str(err.value) == "no examples to score"


def sklearn_scores(targets: np.ndarray, probabilities: np.ndarray, threshold) -> dict:
    """scikit-learn's answer for every score of multilabel_metrics (zero_division=0): the reference."""
    from sklearn import metrics as skm

    y_true, y_pred = targets.astype(bool), probabilities >= threshold
    scores = {"subset_accuracy": skm.accuracy_score(y_true, y_pred), "hamming_loss": skm.hamming_loss(y_true, y_pred),
              "jaccard_samples": skm.jaccard_score(y_true, y_pred, average="samples", zero_division=0)}
    for average in ("micro", "macro", "weighted", "samples"):
        scores[f"f1_{average}"] = skm.f1_score(y_true, y_pred, average=average, zero_division=0)
    for average in ("micro", "macro"):
        scores[f"precision_{average}"] = skm.precision_score(y_true, y_pred, average=average, zero_division=0)
        scores[f"recall_{average}"] = skm.recall_score(y_true, y_pred, average=average, zero_division=0)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    scores["per_label"] = [[float(p), float(r), float(f), int(s)] for p, r, f, s in zip(precision, recall, f1, support, strict=True)]
    scores["confusion"] = skm.multilabel_confusion_matrix(y_true, y_pred).tolist()
    return scores


# two labels at least: one column is binary classification, not multi-label, to scikit-learn
@given(st.integers(1, 12), st.integers(2, 5), st.integers(0, 2**32 - 1), st.sampled_from(["flat", "per label"]),
       st.sampled_from([0.0, 0.2, 0.5, 0.95]))
def test_every_score_is_scikit_learns(examples, labels, seed, threshold_kind, density):
    """On generated cases, sparse and dense, empty rows and columns included: the same numbers as scikit-learn."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((examples, labels)) < density).astype(np.float32)
    probabilities = np.round(rng.random((examples, labels)), 1)  # ties with the threshold happen
    threshold = 0.5 if threshold_kind == "flat" else np.round(rng.random(labels), 1)
    names = [f"l{i}" for i in range(labels)]
    ours = multilabel_metrics(targets, probabilities, names, threshold)
    reference = sklearn_scores(targets, probabilities, threshold)
    for key, value in reference.items():
        if key == "per_label":
            mine = [[v["precision"], v["recall"], v["f1"], v["support"]] for v in ours["per_label"].values()]
            assert np.asarray(mine) == pytest.approx(np.asarray(value), abs=1e-12)
        elif key == "confusion":
            assert list(ours["confusion"].values()) == value
        else:
            assert ours[key] == pytest.approx(value, abs=1e-12), key
