"""Real learning on real data: `minilm` (real pretrained weights) on a GoEmotions subset, one epoch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import launch, read_summary

from emodist import data
from emodist.config import DataConfig
from emodist.scoring import metrics

pytestmark = pytest.mark.slow


def baselines(directory, split: str) -> tuple[float, float, float]:
    """What a model stuck on the label priors scores on `split` of the 10k-example run.

    Returns the micro-F1 of predicting `neutral` for every text (the only label whose prior comes close
    to 0.5), the BCE loss of predicting every label's train frequency, and the macro-F1 of the best
    constant prediction per label (all positive: 2p / (1 + p), at any threshold a constant score allows).
    """
    loaded = data.load(DataConfig(dataset="goemotions", data_dir=str(directory), max_train_examples=10000),
                       seed=42)
    targets = loaded.splits[split].targets
    neutral = np.zeros_like(targets)
    neutral[:, loaded.labels.index("neutral")] = 1.0
    prior = loaded.splits["train"].targets.mean(axis=0)
    prior_loss = -(targets * np.log(prior) + (1 - targets) * np.log(1 - prior)).mean()
    share = targets.mean(axis=0)
    constant_f1_macro = float(np.mean(2 * share / (1 + share)))
    return metrics.multilabel_metrics(targets, neutral, loaded.labels)["f1_micro"], float(prior_loss), constant_f1_macro


def test_minilm_learns_goemotions(goemotions, tmp_path, cache_dir):
    run_dir = tmp_path / "ge"
    result = launch("--variant", "minilm", "--data-dir", str(goemotions), "--output-dir", str(run_dir),
                    "data.max_train_examples=10000", "train.epochs=1", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["train"]["examples"] == 10000 and summary["train"]["steps"] == 313
    assert (summary["dev"]["num_examples"], summary["test"]["num_examples"]) == (5426, 5427)

    # Measured in float32 on seeds 1, 7 and 42, with the data order of issue 7 and of today: dev loss
    # 0.121-0.128 against 0.148 for the priors; test macro-F1 at the thresholds tuned on dev 0.17-0.24 against
    # 0.075 for the best constant per label. Micro-F1 at 0.5 after this one epoch is a coin toss between 0.25
    # and 0.33 (whether neutral's scores have crossed 0.5 yet), so it is not asserted; bf16 (the default on
    # a CPU with AVX512-BF16) gave 0.288 on seed 42. A model stuck on the priors fails both checks.
    for split in ("dev", "test"):
        _, prior_loss, _ = baselines(goemotions, split)
        assert summary[split]["loss"] <= 0.9 * prior_loss
    neutral_f1, _, constant_f1_macro = baselines(goemotions, "test")
    assert neutral_f1 == pytest.approx(0.304, abs=0.001)
    assert constant_f1_macro == pytest.approx(0.075, abs=0.001)
    assert summary["test_tuned"]["f1_macro"] >= constant_f1_macro + 0.08
