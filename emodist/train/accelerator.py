"""The Accelerator of a run: its precision resolved for the hardware, accumulation derived from the batch
sizes, the topology's support checked; and the check that the data holds one optimizer step.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration

from emodist import data as data_mod
from emodist.config import RunConfig
from emodist.runtime.errors import UsageError
from emodist.train import distributed

HALF_BASE_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}


def make_accelerator(cfg: RunConfig) -> Accelerator:
    """The Accelerator for `cfg` under the launcher's topology: precision resolved for the hardware,
    accumulation derived, the support matrix checked, DeepSpeed's "auto" values filled. The process-wide
    settings that depend on the device chosen here (threads, allocator, seeds) are `runtime.process.for_training`."""
    accelerator = Accelerator(mixed_precision=resolve_precision(cfg),
                              # pinned host batches (see `setup`) copy to a GPU without stalling the host
                              dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
                              **distributed.accelerator_kwargs())
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
    requested = cfg.train.mixed_precision
    if requested == "auto":
        # a half-precision base computes in that precision whatever the hardware: autocast it to match
        # the float32 trainable head (config validation refuses any other explicit choice)
        requested = HALF_BASE_PRECISION.get(cfg.model.dtype, "auto") if cfg.model.quantization == "none" else "auto"
        if cfg.model.quantization == "nf4" and distributed.launched_zero_stage() == 3:
            # ZeRO-3 trains a 4-bit base stored in its compute dtype, and keeps float32 masters only
            # when DeepSpeed's own half precision is on
            requested = HALF_BASE_PRECISION.get(cfg.model.compute_dtype, "no")
    cuda = torch.cuda.is_available()
    if requested == "fp16" and not cuda:
        raise UsageError("train.mixed_precision=fp16 needs a CUDA GPU (model.dtype=float16 too): use bf16 or no")
    if requested != "auto":
        return requested
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); False where it cannot tell."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))
