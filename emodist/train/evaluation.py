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

from emodist.scoring.metrics import HEADLINE, multilabel_metrics
from emodist.train.state import Session


@torch.no_grad()  # not inference_mode: ZeRO-3 gathers weights into tensors training uses later
def predict(model, loader, accelerator, order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(logits, targets) of the whole split as float32 numpy arrays on every rank, in the loader's order,
    or, given the `order` in which the loader reads the split (its i-th example is example order[i]), in
    the split's own order."""
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
    logits, targets = torch.cat(logits_parts).numpy(), torch.cat(target_parts).numpy()
    if order is not None:
        logits[order], targets[order] = logits.copy(), targets.copy()
    return logits, targets


def score(logits: np.ndarray, targets: np.ndarray, labels: list[str], threshold: float | np.ndarray = 0.5) -> dict:
    """Metrics of `emodist.scoring.metrics.multilabel_metrics` at `threshold` (one, or one per label), plus the mean
    BCE `loss` (which no threshold changes)."""
    scores = multilabel_metrics(targets, expit(logits), labels, threshold)
    loss = F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(targets))
    return {"loss": float(loss), **scores}


def evaluate(model, loader, accelerator, labels: list[str], order: np.ndarray | None = None
             ) -> tuple[dict, np.ndarray, np.ndarray]:
    """(scores at threshold 0.5, logits, targets) of the split; see `predict` and `score`."""
    logits, targets = predict(model, loader, accelerator, order)
    return score(logits, targets, labels), logits, targets


def run_eval(s: Session, split: str, prefix: str):
    """Evaluate `split` (a collective) at threshold 0.5, log the headline metrics under `prefix/`; return
    (all scores, logits, targets)."""
    with s.phases.measure("eval"), s.meter.paused():
        scores, logits, targets = evaluate(s.model, s.loaders[split], s.accelerator, s.labels,
                                           order=s.eval_orders[split])
        log_scores(s, prefix, scores)
    return scores, logits, targets


def log_scores(s: Session, prefix: str, scores: dict) -> None:
    s.logger.log({"step": s.step, "epoch": s.epochs_done, **{f"{prefix}/{k}": scores[k] for k in ("loss", *HEADLINE)}})
