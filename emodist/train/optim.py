"""The optimizer, its learning-rate schedule and the loss's positive weights.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from emodist import data as data_mod
from emodist.config import OptimConfig, RunConfig
from emodist.models import is_head_parameter
from emodist.train.plan import Plan


def positive_weights(cfg: RunConfig, data: data_mod.EmotionData, device: torch.device) -> torch.Tensor | None:
    """train.pos_weight=balanced: each label's negatives / positives in the train split, capped at
    train.pos_weight_cap (and at least 1), so that a rare label's few positives weigh as much as its many
    negatives; None (plain BCE) otherwise."""
    if cfg.train.pos_weight == "none":
        return None
    targets = data.splits["train"].targets
    positives = targets.sum(axis=0)
    ratio = (len(targets) - positives) / np.maximum(positives, 1)
    return torch.tensor(np.clip(ratio, 1.0, cfg.train.pos_weight_cap), dtype=torch.float32, device=device)


def build_optimizer(model: torch.nn.Module, optim: OptimConfig, head_modules: list[str], fused: bool = True,
                    paged: bool = True):
    """The configured AdamW over the trainable parameters, in up to four groups: body/head x decay/no decay.

    `fused`: torch's AdamW updates all parameters in one kernel per group (CPU and GPU) instead of a loop
    of small ones; off under DeepSpeed, which steps the optimizer over its own flat partitions.
    `paged`: whether a paged bitsandbytes optimizer may page (CUDA only); without it, `paged_adamw*` is its
    non-paged twin, which is what bitsandbytes falls back to on a CPU anyway, without its warning per run.

    The body groups come first, so `get_last_lr()[0]` is the body's rate. Biases and norm weights
    (1-D tensors) get no weight decay. Under DeepSpeed optimizer offload, accelerate turns this AdamW
    into DeepSpeedCPUAdam (adamw_mode) over the same groups.
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((is_head_parameter(name, head_modules), param.ndim < 2), []).append(param)
    head_lr = optim.head_lr or optim.lr
    param_groups = [
        {"params": groups[key], "lr": head_lr if key[0] else optim.lr,
         "weight_decay": 0.0 if key[1] else optim.weight_decay}
        for key in sorted(groups)
    ]
    if optim.name == "adamw":
        return torch.optim.AdamW(param_groups, lr=optim.lr, fused=fused or None)
    return _optimizer_class(optim.name, paged)(param_groups, lr=optim.lr)


def _optimizer_class(name: str, paged: bool = True):
    """bitsandbytes' optimizer called `name`; a paged one's non-paged twin unless `paged`."""
    import bitsandbytes as bnb  # imported only when asked for: it is slow to import

    return {"adamw_8bit": bnb.optim.AdamW8bit,
            "paged_adamw": bnb.optim.PagedAdamW if paged else bnb.optim.AdamW,
            "paged_adamw_8bit": bnb.optim.PagedAdamW8bit if paged else bnb.optim.AdamW8bit}[name]


def build_scheduler(optimizer, optim: OptimConfig, plan: Plan, num_processes: int):
    """Warmup then the configured decay, in scheduler ticks.

    accelerate's prepared scheduler ticks `num_processes` times per optimizer step (it assumes lengths
    counted on the unsharded data), under DeepSpeed too (it hands DeepSpeed only DeepSpeed's own
    schedulers), so the schedule is laid out in those ticks.

    The curves are transformers' `get_scheduler` linear / cosine / constant_with_warmup (tests compare
    them), written here because importing `transformers.optimization` imports the Trainer's utilities and
    with them peft and bitsandbytes: 300 MiB of resident memory a full fine-tune never uses.
    """
    factor = functools.partial(lr_factor, optim.schedule, plan.warmup_steps * num_processes,
                               plan.total_steps * num_processes)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lr_factor(schedule: str, warmup: int, total: int, tick: int) -> float:
    """The multiplier of the peak learning rate at scheduler tick `tick`: linear warmup over `warmup`
    ticks, then `schedule` (linear to 0 at `total`, half a cosine to 0 at `total`, or constant)."""
    if tick < warmup:
        return tick / max(1, warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, (total - tick) / max(1, total - warmup))
    progress = (tick - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
