"""How many steps a run makes, derived once from the config and the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from emodist.config import RunConfig

EVALUATIONS = 8
"""Dev evaluations per run when train.eval_every_steps is unset (the last one at the end): the points of
the dev curves. data.max_eval_examples makes each one cheaper; train.eval_every_steps=0 leaves only the last."""


@dataclass
class Plan:
    """How many steps the run makes, derived once from the config and the data."""

    batches_per_epoch: int
    """Micro-batches per epoch on each process."""
    accumulation: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_every: int
    """Evaluate on dev every this many steps (0: only at the end): train.eval_every_steps, else an
    `EVALUATIONS`th of the run."""

    @classmethod
    def make(cls, cfg: RunConfig, batches_per_epoch: int, accumulation: int) -> Plan:
        steps_per_epoch = math.ceil(batches_per_epoch / accumulation)
        total = steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps:
            total = min(total, cfg.train.max_steps)
        every = cfg.train.eval_every_steps
        if every is None:
            every = max(1, math.ceil(total / EVALUATIONS))
        return cls(batches_per_epoch, accumulation, steps_per_epoch, total, round(cfg.optim.warmup_ratio * total),
                   every)
