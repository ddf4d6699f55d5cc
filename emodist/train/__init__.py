"""The one Accelerate loop that trains every variant: setup -> fit -> finish -> close.

    with Lifecycle(cfg, stop) as life:      # close() runs whatever happens
        if life.setup(overwrite, resume):
            life.fit()
            summary = life.finish()

Batch arithmetic: each process runs `train.micro_batch_size` examples per forward/backward and
accumulates `train.global_batch_size / (micro_batch_size x processes)` of them per optimizer step
(`accelerator.accumulate`, which also steps at the end of every epoch). Loss is multi-label BCE on
float32 logits; the trainable parameters are float32 and the forward runs under accelerate's autocast,
except under DeepSpeed, which casts the whole model to its half precision and keeps float32 master
weights in the optimizer. The topology itself comes from the accelerate config (`distributed`).

The parts: `accelerator` (precision, accumulation, support), `plan` (how many steps), `state` (what the
parts share), `optim` (optimizer, schedule, loss weights), `loop` (steps and what follows each), `saving`
(the checkpoint policy), `evaluation`, `finish` (the end of a run), `lifecycle` (setup -> fit -> finish ->
close).
The top layer: imports every package below it.
"""

from emodist.train.accelerator import check_data_fits, make_accelerator, resolve_precision
from emodist.train.lifecycle import Lifecycle

__all__ = ["Lifecycle", "check_data_fits", "make_accelerator", "resolve_precision"]

