"""The state the loop's parts share while a run trains: built once, by `lifecycle.setup`, with keywords."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from emodist.config import RunConfig
from emodist.data import sampling
from emodist.models.memory import MemoryPlan
from emodist.report import telemetry, tracking
from emodist.report.console import Console
from emodist.rundir import contract
from emodist.runtime.signals import StopSignals
from emodist.train import distributed
from emodist.train.plan import Plan


@dataclass
class Session:
    """Everything the loop functions share; `step` counts optimizer steps."""

    cfg: RunConfig
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loaders: dict[str, DataLoader]
    labels: list[str]
    plan: Plan
    topology: distributed.Topology
    run: contract.Run
    console: Console
    phases: telemetry.Phases
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """The training loss of (float logits, targets): train.loss, its positives weighted by train.pos_weight."""
    stop: StopSignals
    batches: sampling.LengthGroupedBatches
    """The train batches of every rank (accelerate deals them out); seeded by train.seed and the epoch."""
    eval_orders: dict[str, np.ndarray]
    """Each eval loader reads its split in this order (shortest first); predictions are put back."""
    memory_plan: MemoryPlan | None = None
    """What the run was planned to need per process (emodist.models.memory), when its shapes are known."""
    data_identity: dict[str, str] = field(default_factory=dict)
    """The splits' sizes and content hashes (`emodist.data.identity`): a checkpoint records them, a resume matches them."""
    logger: tracking.MetricLogger | None = None
    """metrics.jsonl, the console and wandb: started once a resume has loaded (`setup`)."""
    meter: telemetry.Throughput = field(init=False)
    """Throughput and step times on this rank's device."""
    loss_sum: torch.Tensor = field(init=False)
    """Sum of the micro-batch losses since the last log, kept on the device (no sync per step)."""
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    """Micro-batches of the current epoch this rank has trained on (a resume skips them)."""
    last_loss: float = float("nan")
    loss_count: int = 0
    best: dict | None = None
    """The best dev score during training: {"metric", "value", "step"}."""
    precisions: list[str] = field(default_factory=list)
    """The mixed precisions the run trained in before this session, in order (a resumed checkpoint's)."""
    started_at: int = 0
    """The step this session (this launch) started from."""
    pending_check: tuple | None = None
    """The last step's all-reduced stop and divergence flags on their way to the host (see `check_step`)."""
    peak_before_steps: int = 0
    """This process's peak memory before the training steps (loading); `training_peak` is theirs."""
    training_peak: int | None = None

    def __post_init__(self) -> None:
        self.meter = telemetry.Throughput(self.accelerator.device)
        self.loss_sum = torch.zeros((), device=self.accelerator.device)

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def epochs_done(self) -> float:
        """Epochs trained so far, counted in optimizer steps."""
        return round(self.step / self.plan.steps_per_epoch, 4)
