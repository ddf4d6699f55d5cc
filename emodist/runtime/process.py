"""Process-wide settings: each one holds for the whole process and every library in it, so each is made
here, in a call an entry script makes where it can be seen, with its reason.

    process.before_torch()                          # first in main(): before torch loads OpenMP
    process.quiet_libraries()                       # before the HF libraries load a model
    process.for_training(device_type, seed, cpu_threads)   # once the Accelerator has chosen the device
    process.for_steps(device_type, rebuilds_weights)   # once the model is loaded, before the first step

Nothing in emodist changes these settings on import. `cpu_has_native_bf16` and `gpu_has_native_bf16` say
whether the hardware computes in bf16, which the precision a run (and `Classifier`) chooses depends on.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path

from emodist.runtime import hostmem


def before_torch() -> None:
    """OpenMP's idle threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE, unless the user set it): on
    a machine whose cores other work shares, spinning threads stall every step (`hostmem`). OpenMP reads it
    once, when torch loads it."""
    hostmem.sleeping_openmp_threads()


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars, load reports and warnings nobody using emodist can act on:
    emodist's banner says what was loaded."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    # `datasets` (only a hub data set needs it) reads this when it is imported: importing it here to
    # call its disable_progress_bars() would cost every launch 1.1 s
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    # peft still calls transformers' v6-deprecated names; nothing a user of emodist can act on
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)
    # DeepSpeed's collectives call torch names torch deprecates, once per call
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    # bitsandbytes (which peft imports) fetches a CPU kernel from the hub when it is imported on a CPU with
    # AVX512-BF16; offline it says, twice, that it could not, and uses its own: nothing to act on
    for name in ("bitsandbytes.backends.cpu.ops", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # accelerate imports DeepSpeed (when installed) in every save_pretrained; on a machine without CUDA,
    # DeepSpeed then warns "Setting accelerator to CPU" unless told that it is meant to run there
    import torch

    if "DS_ACCELERATOR" not in os.environ and not torch.accelerator.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def for_training(device_type: str, seed: int, cpu_threads: int | None) -> None:
    """The settings of a training process once its device is chosen.

    - On CPUs: `cpu_threads` threads for torch (default: the cores this process may use, shared among the
      node's processes; `accelerate launch` would otherwise leave each process one thread).
    - Everywhere: the seed of Python, numpy and torch on every device (accelerate's set_seed), so that model
      init, data order and dropout repeat.
    """
    import torch
    from accelerate.utils import set_seed

    if device_type == "cpu":
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(cpu_threads or max(1, len(os.sched_getaffinity(0)) // local_processes))
    set_seed(seed)


def oversubscribed(cpu_threads: int | None) -> str | None:
    """A warning when `cpu_threads` threads in each of this node's processes are more than the cores they may
    use (None otherwise, and when unset: then they are shared out)."""
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0))
    if not cpu_threads or cpu_threads * local_processes <= cores:
        return None
    return (f"train.cpu_threads={cpu_threads} in each of {local_processes} process(es) is more threads than the "
            f"{cores} core(s) they may use: the threads take turns and the steps run slower; unset it to share the "
            "cores out")


def for_steps(device_type: str, rebuilds_weights: bool = False) -> None:
    """The settings of the training steps, once the model is loaded. On CPUs, the pages the load freed go back
    to the system first: loading interleaves transient buffers with the weights that stay, and glibc returns
    only the free top of its heap, so the holes stay resident (measured: a 7B 4-bit load left 1.8 GiB free in
    the heap, 6.0 GiB resident for 4.2 GiB live). Then glibc's allocator keeps freed memory, so that each step
    reuses the pages the last one freed instead of faulting them in (`hostmem`). Not before the load: a heap
    that keeps what is freed keeps every transient of it (a 7B 4-bit load grew to 24 GiB and was killed on a
    24 GiB host). And not when each step `rebuilds_weights` (a 4-bit or 8-bit base dequantizes every layer's
    weight for its matmul, ZeRO-3 gathers every layer's partitions): kept, freed blocks of a weight's size are
    split by the small allocations between them and the heap grows by amounts no memory plan can foresee
    (measured on this CPU, training peak kept / left alone: Gemma-2B QLoRA 4.77 / 3.95 GiB, Mistral-7B QLoRA
    5.98 / 5.27 GiB, ZeRO-3 Gemma-2B over 2 processes 9.4 / 6.7 GiB a process; the steps are 1.3x, 1.6x and
    1.1x slower without; bench/RESULTS.md)."""
    if device_type == "cpu":
        hostmem.release()
        if not rebuilds_weights:
            hostmem.keep_freed_memory()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); False where it cannot tell."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def gpu_has_native_bf16(device=None) -> bool:
    """Whether the CUDA GPU `device` (default: the current one) computes in bf16 in hardware: compute capability
    8 (Ampere) or later, or a ROCm GPU. torch.cuda.is_bf16_supported() also says yes for older cards (a T4,
    a V100), where bf16 is emulated; there fp16 is the half precision to use."""
    import torch

    if not torch.cuda.is_available():
        return False
    if torch.version.hip:
        return True
    return torch.cuda.get_device_properties(torch.cuda.current_device() if device is None else device).major >= 8
