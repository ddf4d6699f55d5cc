"""Evaluation: run a split through the model on every rank, gather, score once.

    scores = evaluate(model, dev_loader, accelerator, labels)     # same dict on every rank

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


def evaluate(model, loader, accelerator, labels: list[str]) -> dict:
    """Metrics of `emodist.metrics.multilabel_metrics` at threshold 0.5, plus the mean BCE `loss`."""
    logits, targets = predict(model, loader, accelerator)
    scores = multilabel_metrics(targets, expit(logits), labels)
    loss = F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(targets))
    return {"loss": float(loss), **scores}
