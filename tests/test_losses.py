"""train.loss: BCE, focal and asymmetric loss against values computed by hand from the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from emodist import config
from emodist.runtime.errors import UsageError
from emodist.train import losses

# One text, two labels: a positive the model gives logit 2 (p = 0.8808) and a negative at logit -1 (p = 0.2689).
LOGITS = torch.tensor([[2.0, -1.0]])
TARGETS = torch.tensor([[1.0, 0.0]])
P_POS, P_NEG = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))


def loss_of(*overrides: str, logits=LOGITS, targets=TARGETS, pos_weight=None) -> float:
    cfg = config.load("distilbert", overrides=list(overrides))
    return float(losses.build(cfg.train, pos_weight)(logits, targets))


def test_bce_is_the_mean_negative_log_likelihood():
    by_hand = (-math.log(P_POS) - math.log(1 - P_NEG)) / 2
    assert by_hand == pytest.approx(0.2200948, abs=1e-7)
    assert loss_of() == pytest.approx(by_hand, rel=1e-6)


def test_focal_scales_each_term_by_how_wrong_it_is():
    # -[(1 - p)^2 log p] for the positive, -[p^2 log(1 - p)] for the negative, gamma 2 (the default)
    by_hand = ((1 - P_POS) ** 2 * -math.log(P_POS) + P_NEG ** 2 * -math.log(1 - P_NEG)) / 2
    assert by_hand == pytest.approx(0.0122308, abs=1e-7)
    assert loss_of("train.loss=focal") == pytest.approx(by_hand, rel=1e-6)
    assert loss_of("train.loss=focal", "train.focal_gamma=0") == pytest.approx(loss_of(), rel=1e-6)


def test_asl_shifts_the_negatives_probability_and_focuses_each_side_apart():
    q = P_NEG - 0.05  # the margin: the negative's probability shifted down by train.asl_clip
    by_hand = (-math.log(P_POS) + q ** 4 * -math.log(1 - q)) / 2  # gamma+ 0, gamma- 4 (the defaults)
    assert by_hand == pytest.approx(0.0637479, abs=1e-7)
    assert loss_of("train.loss=asl") == pytest.approx(by_hand, rel=1e-6)
    with_pos = ((1 - P_POS) * -math.log(P_POS) + q ** 4 * -math.log(1 - q)) / 2
    assert with_pos == pytest.approx(0.0078490, abs=1e-7)
    assert loss_of("train.loss=asl", "train.asl_gamma_pos=1") == pytest.approx(with_pos, rel=1e-6)


def test_asl_costs_nothing_for_a_negative_below_the_margin():
    logits = torch.tensor([[-4.0]], requires_grad=True)  # p = 0.018 < 0.05
    cfg = config.load("distilbert", overrides=["train.loss=asl"])
    loss = losses.build(cfg.train)(logits, torch.tensor([[0.0]]))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.item() == 0.0


@pytest.mark.parametrize("overrides", [["train.loss=focal", "train.focal_gamma=0"],
                                       ["train.loss=asl", "train.asl_gamma_neg=0", "train.asl_clip=0"]])
def test_without_focusing_every_loss_is_torch_bce_and_weights_positives_as_it_does(overrides):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=generator) * 3
    targets = (torch.rand(16, 5, generator=generator) < 0.3).float()
    weight = torch.tensor([1.0, 2.0, 5.0, 1.0, 10.0])
    for pos_weight in (None, weight):
        expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
        assert loss_of(*overrides, logits=logits, targets=targets, pos_weight=pos_weight) == pytest.approx(
            float(expected), rel=1e-5)


@pytest.mark.parametrize("loss", losses.NAMES)
def test_confident_logits_give_finite_losses_and_gradients(loss):
    logits = torch.tensor([[60.0, -60.0, 60.0, -60.0]], requires_grad=True)
    value = losses.build(config.load("distilbert", overrides=[f"train.loss={loss}"]).train)(
        logits, torch.tensor([[1.0, 0.0, 0.0, 1.0]]))  # two right, two confidently wrong
    value.backward()
    assert math.isfinite(value.item()) and value.item() > 1 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(("override", "message"), [
    ("train.focal_gamma=-1", "train.focal_gamma: must be from 0 to 100 (0: BCE)"),
    ("train.focal_gamma=1e300", "train.focal_gamma: must be from 0 to 100 (0: BCE)"),  # was NaN, "lower optim.lr"
    ("train.asl_clip=1", "train.asl_clip: must be in [0, 1)"),
    ("train.asl_gamma_neg=-2", "train.asl_gamma_neg: must be from 0 to 100"),
    ("train.asl_gamma_pos=100.5", "train.asl_gamma_pos: must be from 0 to 100"),
    ("train.loss=mse", "train.loss"),
])
def test_bad_loss_settings_are_refused_naming_the_key(override, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        config.load("distilbert", overrides=[override])
