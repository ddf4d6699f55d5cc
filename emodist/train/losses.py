"""The training loss of a multi-label head (`train.loss`): one independent binary decision per label.

    loss_fn = losses.build(cfg.train, pos_weight)        # called as loss_fn(logits, targets) -> scalar
    loss = loss_fn(logits.float(), targets)

- `bce`: binary cross-entropy, -[y log p + (1 - y) log(1 - p)] with p = sigmoid(logit).
- `focal` (Lin et al. 2017, "Focal Loss for Dense Object Detection"): each term scaled by how wrong the
  model is, -[y (1 - p)^g log p + (1 - y) p^g log(1 - p)] with g = train.focal_gamma: the many easy
  negatives of a 28-label problem stop drowning the few positives. g = 0 is bce.
- `asl` (Ridnik et al. 2021, "Asymmetric Loss For Multi-Label Classification"): separate focusing for
  positives and negatives, and a probability margin m = train.asl_clip that drops the easiest negatives
  outright: -[y (1 - p)^g+ log p + (1 - y) q^g- log(1 - q)] with q = max(p - m, 0), g+ =
  train.asl_gamma_pos, g- = train.asl_gamma_neg. The paper's multi-label setting: g+ 0, g- 4, m 0.05.

Every loss is the mean over texts and labels (as torch's BCE), so the learning rates of one loss carry over
to another within a small factor. With train.pos_weight the positive term of each label is weighted, as
torch's `pos_weight` does for BCE. The dev and test `loss` in metrics and summary.json stay BCE, whatever
the training loss, so that runs with different losses compare on one scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

NAMES = ("bce", "focal", "asl")
EPS = 1e-8
"""Smallest probability whose log is taken (ASL's 1 - q)."""


def build(train_cfg, pos_weight: torch.Tensor | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss `train_cfg.loss` names, as a function of (float logits, 0/1 targets) of one shape."""
    name = train_cfg.loss
    if name == "bce":
        return lambda logits, targets: F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
    if name == "focal":
        gamma = train_cfg.focal_gamma
        return lambda logits, targets: asymmetric(logits, targets, gamma, gamma, 0.0, pos_weight)
    if name == "asl":
        t = train_cfg
        return lambda logits, targets: asymmetric(logits, targets, t.asl_gamma_pos, t.asl_gamma_neg, t.asl_clip,
                                                  pos_weight)
    raise ValueError(f"train.loss={name!r}: not one of {', '.join(NAMES)}")


def asymmetric(logits: torch.Tensor, targets: torch.Tensor, gamma_pos: float, gamma_neg: float, clip: float,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The asymmetric loss (focal when gamma_pos == gamma_neg and clip == 0, BCE when both gammas are 0 too),
    mean over every element. log p comes from logsigmoid, exact for large logits; the focusing factors
    carry gradients, as in both papers."""
    p = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    if clip > 0:
        q = (p - clip).clamp(min=0)
        log_not_q = torch.log((1 - q).clamp(min=EPS))
    else:
        q, log_not_q = p, F.logsigmoid(-logits)
    positive = log_p * (1 - p) ** gamma_pos if gamma_pos else log_p
    negative = log_not_q * q ** gamma_neg if gamma_neg else log_not_q
    if pos_weight is not None:
        positive = positive * pos_weight
    return -(targets * positive + (1 - targets) * negative).mean()


def describe(train_cfg) -> str:
    """The loss as the start-of-run table shows it, e.g. `ASL (gamma+ 0, gamma- 4, clip 0.05)`."""
    t = train_cfg
    if t.loss == "focal":
        return f"focal (gamma {t.focal_gamma:g})"
    if t.loss == "asl":
        return f"ASL (gamma+ {t.asl_gamma_pos:g}, gamma- {t.asl_gamma_neg:g}, clip {t.asl_clip:g})"
    return "BCE"
