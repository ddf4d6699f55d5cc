"""The Accelerator of a run: its precision resolved for the hardware, accumulation derived from the batch
sizes, the topology's support checked; and the check that the data holds one optimizer step.
"""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator, DataLoaderConfiguration

from emodist import data as data_mod
from emodist.config import RunConfig
from emodist.models import placement
from emodist.runtime import process
from emodist.runtime.errors import UsageError
from emodist.train import distributed

LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""What torchrun and accelerate launch set for each process of a distributed run."""


def make_accelerator(cfg: RunConfig) -> Accelerator:
    """The Accelerator for `cfg` under the launcher's topology: precision resolved for the hardware,
    accumulation derived, the support matrix checked, DeepSpeed's "auto" values filled. The process-wide
    settings that depend on the device chosen here (threads, seeds; the allocator once the model is loaded) are
    `runtime.process.for_training` and `for_steps`."""
    precision, kwargs = resolve_precision(cfg), distributed.accelerator_kwargs()
    stray = [f"{name}={os.environ[name]}" for name in LAUNCHER_VARIABLES if name in os.environ]  # accelerate adds some
    launched = "TORCHELASTIC_RUN_ID" in os.environ or any(name.startswith("ACCELERATE_") for name in os.environ)
    try:
        accelerator = Accelerator(mixed_precision=precision,
                                  # pinned host batches (see `setup`) copy to a GPU without stalling the host
                                  dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
                                  **kwargs)
    except UsageError:
        raise
    except (ValueError, KeyError) as err:  # accelerate reads a distributed launch from these, however they came
        if not stray or launched:
            raise
        said = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise UsageError(f"a distributed launch's variables are set ({', '.join(stray)}), but it does not start "
                         f"(accelerate: {said}): start it with accelerate launch (or torchrun), or unset them to "
                         "train in one process") from None
    accelerator.gradient_accumulation_steps = cfg.train.gradient_accumulation_steps(accelerator.num_processes)
    distributed.check_support(cfg, distributed.Topology.of(accelerator))
    distributed.fill_deepspeed_config(cfg, accelerator)
    return accelerator


def check_data_fits(cfg: RunConfig, data: data_mod.EmotionData, accelerator: Accelerator) -> None:
    """Refuse a train split too small for one optimizer step (one example per micro-batch, on every rank)."""
    per_step = accelerator.num_processes * accelerator.gradient_accumulation_steps
    size = len(data.splits["train"])
    if size < per_step:
        capped = " (data.max_train_examples)" if cfg.data.max_train_examples is not None else ""
        raise UsageError(
            f"the train split has {size} example(s){capped}, fewer than the {per_step} micro-batches of one optimizer "
            f"step ({accelerator.num_processes} process(es) x {accelerator.gradient_accumulation_steps} accumulated, "
            f"from train.global_batch_size={cfg.train.global_batch_size} / train.micro_batch_size="
            f"{cfg.train.micro_batch_size}): train on at least {per_step} examples, or lower train.global_batch_size")


def resolve_precision(cfg: RunConfig) -> str:
    """The accelerate `mixed_precision` for `cfg` on this machine (see train.mixed_precision)."""
    cuda = torch.cuda.is_available()
    precision = placement.precision_for(cfg, "cuda" if cuda else "cpu", distributed.launched_zero_stage(),
                                        gpu_bf16=cuda and process.gpu_has_native_bf16())
    if precision == "fp16" and not cuda:
        raise UsageError("train.mixed_precision=fp16 needs a CUDA GPU (model.dtype=float16 too): use bf16 or no")
    # accelerate launch passes its --mixed_precision (or its config file's) in this variable, "no" when neither
    # sets it; make_accelerator's Accelerator takes emodist's precision, so another one asked there would be ignored
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launcher != "no" and launcher != precision:
        computes = "float32" if precision == "no" else precision
        chosen = (f"train.mixed_precision=auto computes in {computes} on this machine" if cfg.train.mixed_precision
                  == "auto" else f"train.mixed_precision={cfg.train.mixed_precision} computes in {computes}")
        fix = (f"set train.mixed_precision={launcher} to train in it, or drop accelerate's" if launcher in ("fp16", "bf16")
               else "emodist trains in no, fp16 or bf16: drop accelerate's")
        raise UsageError(f"accelerate launch asks for mixed_precision={launcher} (its --mixed_precision, or its config "
                         f"file's mixed_precision), but {chosen}: emodist's setting decides: {fix}")
    return precision
