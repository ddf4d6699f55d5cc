"""Threshold tuning against a brute-force search with scikit-learn's F1 (the end-to-end check, that a
reloaded model reproduces `test_tuned` with model/thresholds.json, is in tests/test_train.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, jaccard_score

from emodist.runtime.errors import UsageError
from emodist.scoring import thresholds

LABELS = ["joy", "grief", "anger", "never"]


@pytest.fixture(scope="module")
def dev():
    """Probabilities that carry the labels at different scales: a rare label whose scores stay low, a
    label never present."""
    rng = np.random.default_rng(0)
    targets = np.zeros((400, 4), dtype=np.float32)
    targets[:, 0] = rng.random(400) < 0.4
    targets[:, 1] = rng.random(400) < 0.03
    targets[:, 2] = rng.random(400) < 0.2
    probabilities = np.clip(rng.normal(0.3, 0.15, (400, 4)), 0, 1)
    probabilities[:, 0] += 0.35 * targets[:, 0]
    probabilities[:, 1] = np.clip(0.05 + 0.2 * targets[:, 1] + rng.normal(0, 0.05, 400), 0, 1)
    probabilities[:, 2] += 0.2 * targets[:, 2]
    return targets, np.clip(probabilities, 0, 1)


def test_each_label_gets_the_threshold_of_its_best_f1(dev):
    targets, probabilities = dev
    tuned = thresholds.tune(targets, probabilities, LABELS)
    for j, label in enumerate(LABELS[:3]):
        f1 = [f1_score(targets[:, j], probabilities[:, j] >= t, zero_division=0) for t in thresholds.GRID]
        assert f1_score(targets[:, j], probabilities[:, j] >= tuned["per_label"][label]) == pytest.approx(max(f1))
        assert max(f1) >= f1[list(thresholds.GRID).index(0.5)]  # never worse than 0.5 on the data it tuned on
    assert tuned["per_label"]["grief"] < 0.3  # a rare label's scores stay low: its threshold follows
    assert tuned["per_label"]["never"] == 0.5  # no positives: F1 0 everywhere, the tie goes to 0.5


def test_the_global_threshold_maximises_micro_f1(dev):
    targets, probabilities = dev
    tuned = thresholds.tune(targets, probabilities, LABELS)
    micro = [f1_score(targets, probabilities >= t, average="micro", zero_division=0) for t in thresholds.GRID]
    assert f1_score(targets, probabilities >= tuned["global"], average="micro") == pytest.approx(max(micro))


def test_thresholds_follow_the_label_order_and_refuse_another_label_set(dev, tmp_path):
    tuned = thresholds.tune(*dev, LABELS)
    thresholds.save(tmp_path / thresholds.FILE, tuned)
    loaded = thresholds.load(tmp_path)
    assert loaded == json.loads(json.dumps(tuned))
    order = ["anger", "joy"]
    assert thresholds.for_labels(loaded, order).tolist() == pytest.approx(
        [tuned["per_label"]["anger"], tuned["per_label"]["joy"]])
    with pytest.raises(UsageError, match="no threshold for fear: it belongs to another label set"):
        thresholds.for_labels(loaded, ["joy", "fear"])
    assert thresholds.load(tmp_path / "elsewhere") is None
    (tmp_path / thresholds.FILE).write_text("{oops")
    with pytest.raises(UsageError, match="thresholds.json: not valid JSON"):
        thresholds.load(tmp_path)


@pytest.mark.parametrize(("content", "problem"), [
    ("[0.5, 0.4]", 'not thresholds (expected {"per_label": {label: threshold}, ...})'),
    ('{"per_label": {"joy": "abc"}}', "the threshold of joy is 'abc', not a number from 0 to 1"),
    ('{"per_label": {"joy": -1}}', "the threshold of joy is -1, not a number from 0 to 1"),
    ('{"per_label": {"joy": 7}}', "the threshold of joy is 7, not a number from 0 to 1"),
    ('{"per_label": {"joy": NaN}}', "the threshold of joy is nan, not a number from 0 to 1"),
    ('{"per_label": {"joy": null}}', "the threshold of joy is None, not a number from 0 to 1"),
    ('{"per_label": {"joy": 0.3}, "max_length": "128"}', "max_length is '128', not a number of tokens (the "
     "data.max_length the thresholds were tuned at)"),
    ('{"per_label": {"joy": 0.3}, "max_length": 0}', "max_length is 0, not a number of tokens (the data.max_length "
     "the thresholds were tuned at)"),
])
def test_thresholds_that_cannot_cut_are_refused_naming_the_file(tmp_path, content, problem):
    """They used to end in a traceback (a list, a string) or silently never or always pick a label."""
    (tmp_path / thresholds.FILE).write_text(content)
    with pytest.raises(UsageError) as err:
        thresholds.load(tmp_path)
    assert str(err.value) == f"{tmp_path / thresholds.FILE}: {problem}: delete it to use 0.5, or restore it from the run"


def test_labels_the_dev_scores_say_were_not_learned_are_named_with_a_warning():
    """An undertrained model's scores carry nothing: its best thresholds sit at the bottom of the grid, which
    labels nearly every text. Such labels are named, a label without dev positives too."""
    rng = np.random.default_rng(1)
    targets = (rng.random((500, 4)) < [0.3, 0.05, 0.2, 0.0]).astype(np.float32)
    learned = np.clip(0.15 + 0.7 * targets + rng.normal(0, 0.1, targets.shape), 0, 1)
    noise = rng.random(targets.shape) * 0.1  # scores that do not follow the labels at all

    tuned = thresholds.tune(targets, learned, LABELS)
    assert tuned["unlearned"] == [] and tuned["no_dev_positives"] == ["never"]
    assert thresholds.warning(tuned) == ("1 label(s) have no dev examples (never): their threshold stays 0.5, "
                                         "untested")

    tuned = thresholds.tune(targets, np.concatenate([learned[:, :1], noise[:, 1:]], axis=1), LABELS)
    assert tuned["unlearned"] == ["grief", "anger"] and tuned["no_dev_positives"] == ["never"]
    assert thresholds.warning(tuned).startswith("the model has barely learned: 2 of 4 labels score on dev no "
                                                "better than labelling every text with them (grief, anger)")
    assert thresholds.warning({"per_label": {"joy": 0.4}}) is None  # a thresholds.json from before the check


def test_the_unlearned_margin_is_measured_against_labelling_every_text():
    """A label at prevalence p labelled on every text scores F1 2p/(1+p); a model must beat that by the margin."""
    targets = np.zeros((100, 1), dtype=np.float32)
    targets[:20, 0] = 1  # p = 0.2: every text labelled scores F1 1/3
    # scores that rank 4 positives first, then the rest at random: best F1 just above 1/3
    probabilities = np.full((100, 1), 0.5, dtype=np.float32)
    probabilities[:4, 0] = 0.9
    tuned = thresholds.tune(targets, probabilities, ["joy"])
    best = max(f1_score(targets[:, 0], probabilities[:, 0] >= t, zero_division=0) for t in thresholds.GRID)
    assert best < 1 / 3 + thresholds.UNLEARNED_MARGIN and tuned["unlearned"] == ["joy"]
    probabilities[:20, 0] = 0.9  # every positive ranked first: F1 1
    assert thresholds.tune(targets, probabilities, ["joy"])["unlearned"] == []


def reference_tune(targets: np.ndarray, probabilities: np.ndarray) -> tuple[list[float], float, list[int]]:
    """(per-label thresholds, global threshold, indices of unlearned labels) by a plain search: F1 counted in
    Python at every grid point, the best kept, ties to the grid value closest to 0.5 (then the lower one)."""
    grid = list(thresholds.GRID)

    def f1(truth, scores, t) -> float:
        tp = sum(1 for y, p in zip(truth, scores, strict=True) if y and p >= t)
        predicted = sum(1 for p in scores if p >= t)
        return 2 * tp / (predicted + sum(truth)) if predicted + sum(truth) else 0.0

    def choose(values: list[float]) -> int:
        best = max(values)
        return min((i for i, v in enumerate(values) if v >= best - 1e-12), key=lambda i: (abs(grid[i] - 0.5), i))

    per_label, unlearned = [], []
    for j in range(targets.shape[1]):
        truth, scores = [bool(y) for y in targets[:, j]], list(probabilities[:, j])
        values = [f1(truth, scores, t) for t in grid]
        per_label.append(grid[choose(values)])
        positives = sum(truth)
        if positives and max(values) < 2 * positives / (positives + len(truth)) + thresholds.UNLEARNED_MARGIN:
            unlearned.append(j)
    flat_truth, flat_scores = targets.ravel().astype(bool).tolist(), probabilities.ravel().tolist()
    return per_label, grid[choose([f1(flat_truth, flat_scores, t) for t in grid])], unlearned


@given(st.integers(1, 30), st.integers(1, 4), st.integers(0, 2**32 - 1))
@settings(max_examples=60)
def test_tuning_chooses_what_a_plain_search_chooses(examples, labels, seed):
    """Scores on the grid's own values (ties with a threshold), labels from absent to everywhere."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((examples, labels)) < rng.random(labels)).astype(np.float32)
    probabilities = np.round(np.clip(0.3 * targets + rng.random((examples, labels)) * 0.7, 0, 1), 2)
    names = [f"l{j}" for j in range(labels)]
    tuned = thresholds.tune(targets, probabilities, names)
    per_label, global_, unlearned = reference_tune(targets, probabilities)
    assert list(tuned["per_label"].values()) == per_label
    assert tuned["global"] == global_
    assert tuned["unlearned"] == [names[j] for j in unlearned]
    assert tuned["no_dev_positives"] == [name for j, name in enumerate(names) if not targets[:, j].any()]


def test_a_learned_label_by_hand():
    """Positives at 0.9 0.8 0.6 0.3, negatives at 0.7 0.5 0.4 0.2 0.1 0.05. Above 0.5 and up to 0.6 the model
    labels 0.9 0.8 0.7 0.6: tp 3, fp 1, fn 1, F1 6/8 = 0.75, the best (0.3 and below: 8/11 = 0.727); the
    grid points 0.51 ... 0.60 tie, 0.51 is closest to 0.5. Labelling every text scores 2*4/(4+10) = 0.571,
    and 0.75 is more than the margin above it: learned."""
    targets = np.array([[1], [1], [1], [1], [0], [0], [0], [0], [0], [0]], dtype=np.float32)
    probabilities = np.array([[0.9], [0.8], [0.6], [0.3], [0.7], [0.5], [0.4], [0.2], [0.1], [0.05]])
    tuned = thresholds.tune(targets, probabilities, ["joy"])
    assert tuned == {"global": 0.51, "per_label": {"joy": 0.51}, "objective": "f1_macro", "bootstrap": 0,
                     "grid": [0.02, 0.98, 0.01], "tuned_on": "dev", "unlearned": [], "no_dev_positives": []}


def test_the_file_and_its_checks(tmp_path):
    tuned = {"global": 1, "per_label": {"joy": 0, "anger": 1.0}}
    thresholds.save(tmp_path / thresholds.FILE, tuned)
    assert thresholds.load(tmp_path) == tuned  # 0 and 1 are thresholds (never, always)
    for bad, problem in (({"global": 1.5, "per_label": {"joy": 0.5}}, "the threshold of global is 1.5"),
                         ({"global": "x", "per_label": {}}, "the threshold of global is 'x'"),
                         ({"per_label": {"joy": 1.01}}, "the threshold of joy is 1.01"),
                         ({"per_label": {"joy": True}}, "the threshold of joy is True")):
        (tmp_path / thresholds.FILE).write_text(json.dumps(bad))
        with pytest.raises(UsageError) as err:
            thresholds.load(tmp_path)
        assert str(err.value) == (f"{tmp_path / thresholds.FILE}: {problem}, not a number from 0 to 1: delete it to "
                                  "use 0.5, or restore it from the run")


def test_thresholds_for_another_label_set_name_the_missing_labels():
    tuned = {"per_label": {"joy": 0.25, "anger": 0.75}}
    cut = thresholds.for_labels(tuned, ["anger", "joy"])
    assert cut.dtype == np.float32 and cut.tolist() == [0.75, 0.25]
    with pytest.raises(UsageError) as err:
        thresholds.for_labels(tuned, ["joy", "fear", "love"], "m/thresholds.json")
    assert str(err.value) == ("m/thresholds.json has no threshold for fear, love: it belongs to another label set; "
                              "delete it to use 0.5, or restore it from the run")
    with pytest.raises(UsageError) as err:  # the first five missing are named
        thresholds.for_labels(tuned, [f"l{i}" for i in range(7)], "m/thresholds.json")
    assert str(err.value).startswith("m/thresholds.json has no threshold for l0, l1, l2, l3, l4: it belongs")


def test_the_warning_names_five_labels_and_counts_the_rest():
    names = [f"l{i}" for i in range(8)]
    warning = thresholds.warning({"per_label": dict.fromkeys(names, 0.5), "unlearned": names[:7],
                                  "no_dev_positives": names[7:]})
    assert warning == ("the model has barely learned: 7 of 8 labels score on dev no better than labelling every text "
                       "with them (l0, l1, l2, l3, l4 and 2 more), so what it says of them is close to a guess; train "
                       "longer (train.epochs, train.max_steps) or check optim.lr; 1 label(s) have no dev examples "
                       "(l7): their threshold stays 0.5, untested")
    few = thresholds.warning({"per_label": dict.fromkeys(names, 0.5), "unlearned": names[:5]})
    assert few.startswith("the model has barely learned: 5 of 8 labels") and "(l0, l1, l2, l3, l4)" in few
    some = thresholds.warning({"per_label": dict.fromkeys(names, 0.5), "unlearned": names[:3]})
    assert some.startswith("3 of 8 labels score on dev")  # fewer than half: not "barely learned"


def test_labels_without_train_examples_are_not_told_to_train_longer():
    """A label only dev and test carry scored as unlearned, and the line said to train longer: it cannot help."""
    names = ["joy", "anger", "disgust"]
    warning = thresholds.warning({"per_label": dict.fromkeys(names, 0.5), "unlearned": ["anger", "disgust"],
                                  "no_train_positives": ["disgust"]})
    assert warning == ("1 label(s) have no train examples (disgust): the model cannot learn them; add train examples "
                       "of them, or leave them out of the label set; 1 of 3 labels score on dev no better than "
                       "labelling every text with them (anger), so what it says of them is close to a guess; train "
                       "longer (train.epochs, train.max_steps) or check optim.lr")


# ---------------------------------------------------------------------------------------------------
# Objectives (train.threshold_objective)

SCORERS = {
    "f1_macro": lambda t, p: f1_score(t, p, average="macro", zero_division=0),
    "f1_micro": lambda t, p: f1_score(t, p, average="micro", zero_division=0),
    "jaccard_samples": lambda t, p: jaccard_score(t, p, average="samples", zero_division=0),
}


def cut_of(tuned: dict) -> np.ndarray:
    return np.array(list(tuned["per_label"].values()))


@pytest.mark.parametrize("objective", ["f1_micro", "jaccard_samples"])
def test_an_objective_s_thresholds_are_a_local_optimum_no_single_label_move_improves(dev, objective):
    """Checked with scikit-learn's scores: every label, moved alone to every grid value, scores no higher."""
    targets, probabilities = dev
    tuned = thresholds.tune(targets, probabilities, LABELS, objective)
    assert tuned["objective"] == objective
    cut = cut_of(tuned)
    score = SCORERS[objective]
    reached = score(targets, probabilities >= cut)
    for j in range(len(LABELS)):
        for value in thresholds.GRID:
            moved = cut.copy()
            moved[j] = value
            assert score(targets, probabilities >= moved) <= reached + 1e-12, (LABELS[j], value)


def test_each_objective_scores_best_on_its_own_metric(dev):
    """On the dev data it tuned on, each objective's thresholds beat the others' at its own score; micro-F1 and
    Jaccard gain over the per-label F1 thresholds, which lower the rare labels' thresholds for macro-F1."""
    targets, probabilities = dev
    cuts = {objective: cut_of(thresholds.tune(targets, probabilities, LABELS, objective))
            for objective in thresholds.OBJECTIVES}
    for objective, score in SCORERS.items():
        own = score(targets, probabilities >= cuts[objective])
        assert all(own >= score(targets, probabilities >= cut) - 1e-12 for cut in cuts.values()), objective
    for objective in ("f1_micro", "jaccard_samples"):
        assert SCORERS[objective](targets, probabilities >= cuts[objective]) > \
            SCORERS[objective](targets, probabilities >= cuts["f1_macro"]) + 0.005


def test_an_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="threshold objective 'accuracy'"):
        thresholds.tune(np.ones((2, 1)), np.ones((2, 1)), ["joy"], "accuracy")
    from emodist import config

    with pytest.raises(UsageError, match="train.threshold_objective"):
        config.load("distilbert", overrides=["train.threshold_objective=accuracy"])


# ---------------------------------------------------------------------------------------------------
# Bootstrap (train.threshold_bootstrap)

SIMULATED = [f"l{i}" for i in range(6)]
PREVALENCE = np.array([0.3, 0.1, 0.05, 0.03, 0.02, 0.01])


def simulated(rng: np.random.Generator, texts: int) -> tuple[np.ndarray, np.ndarray]:
    """A model's scores with a known law: positives ~ Beta(3, 4), negatives ~ Beta(1, 8), labels from common to
    1 in 100 texts."""
    targets = (rng.random((texts, 6)) < PREVALENCE).astype(np.float32)
    return targets, np.where(targets > 0, rng.beta(3, 4, (texts, 6)), rng.beta(1, 8, (texts, 6)))


def test_bootstrapped_thresholds_carry_better_to_unseen_texts():
    """Tuned on 12 small dev sets (300 texts: 3-9 positives for the rare labels) and scored on 40,000 texts of
    the same law, the mean of 30 resamples' thresholds beats the single best ones on macro-F1 on average
    (measured gain 0.0066; the argmax of a rare label's flat, jumpy F1 curve follows its few texts)."""
    unseen_targets, unseen = simulated(np.random.default_rng(999), 40_000)
    gains = []
    for draw in range(12):
        targets, probabilities = simulated(np.random.default_rng(draw), 300)
        scores = []
        for bootstrap in (0, 30):
            tuned = thresholds.tune(targets, probabilities, SIMULATED, bootstrap=bootstrap, seed=draw)
            assert tuned["bootstrap"] == bootstrap
            cut = thresholds.for_labels(tuned, SIMULATED)
            scores.append(f1_score(unseen_targets, unseen >= cut, average="macro", zero_division=0))
        gains.append(scores[1] - scores[0])
    assert np.mean(gains) > 0.004 and sum(g > 0 for g in gains) >= 8, np.round(gains, 4)


@pytest.mark.parametrize("objective", thresholds.OBJECTIVES)
def test_bootstrapped_thresholds_are_seeded_and_keep_the_rest_of_the_file(dev, objective):
    targets, probabilities = dev
    plain = thresholds.tune(targets, probabilities, LABELS, objective)
    tuned = thresholds.tune(targets, probabilities, LABELS, objective, bootstrap=8, seed=3)
    assert tuned == thresholds.tune(targets, probabilities, LABELS, objective, bootstrap=8, seed=3)
    assert tuned["per_label"] != thresholds.tune(targets, probabilities, LABELS, objective, bootstrap=8,
                                                 seed=4)["per_label"]
    assert tuned["per_label"] != plain["per_label"]
    if objective == "f1_macro":  # no positives in any resample: every draw keeps 0.5 (the others raise it)
        assert tuned["per_label"]["never"] == 0.5
    assert all(thresholds.GRID[0] <= t <= thresholds.GRID[-1] for t in tuned["per_label"].values())
    # what describes dev itself (the global threshold, unlearned labels) is read from all of dev, as without
    assert {k: v for k, v in tuned.items() if k not in ("per_label", "bootstrap")} == \
        {k: v for k, v in plain.items() if k not in ("per_label", "bootstrap")}


def test_a_bootstrap_out_of_range_is_refused_naming_the_key():
    from emodist import config

    for count in ("-1", "1001"):
        with pytest.raises(UsageError, match=r"train.threshold_bootstrap: must be from 0 to 1000 \(0: thresholds "
                                             r"tuned on dev itself; each resample"):
            config.load("distilbert", overrides=[f"train.threshold_bootstrap={count}"])
    assert config.load("distilbert", overrides=["train.threshold_bootstrap=1000"]).train.threshold_bootstrap == 1000
    assert config.load("distilbert").train.threshold_bootstrap == 30
