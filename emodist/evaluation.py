"""Evaluation: run a split through the model on every rank, gather, score once.

    scores, logits, targets = evaluate(model, dev_loader, accelerator, labels)   # the same on every rank
    tuned_scores = score(logits, targets, labels, threshold=per_label_thresholds)

Predictions are gathered with `gather_for_metrics`, which drops the examples accelerate repeats to give
every rank the same number of batches, so each example counts exactly once whatever the process count.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit

from emodist.metrics import multilabel_metrics


@torch.no_grad()
def predict(model, loader, accelerator) -> tuple[np.ndarray, np.ndarray]:
    """(logits, targets) of the whole split as float32 numpy arrays, in dataset order, on every rank."""
    was_training = model.training
    model.eval()
    logits_parts, target_parts = [], []
    for batch in loader:
        targets = batch.pop("labels")
        logits = model(**batch).logits.float()
        logits, targets = accelerator.gather_for_metrics((logits, targets))
        logits_parts.append(logits.cpu())
        target_parts.append(targets.cpu())
    model.train(was_training)
    return torch.cat(logits_parts).numpy(), torch.cat(target_parts).numpy()


def score(logits: np.ndarray, targets: np.ndarray, labels: list[str], threshold: float | np.ndarray = 0.5) -> dict:
    """Metrics of `emodist.metrics.multilabel_metrics` at `threshold` (one, or one per label), plus the mean
    BCE `loss` (which no threshold changes)."""
    scores = multilabel_metrics(targets, expit(logits), labels, threshold)
    loss = F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(targets))
    return {"loss": float(loss), **scores}


def evaluate(model, loader, accelerator, labels: list[str]) -> tuple[dict, np.ndarray, np.ndarray]:
    """(scores at threshold 0.5, logits, targets) of the split; see `predict` and `score`."""
    logits, targets = predict(model, loader, accelerator)
    return score(logits, targets, labels), logits, targets
