"""Where a run's processes put their memory, read before any process starts, and how much there is.

    placement = from_accelerate_config("accelerate_configs/deepspeed_zero3.yaml", num_processes=4,
                                       device="cuda", precision="bf16")
    target = Target.of("24GB")          # one GPU of 24 GB; Target.of(None): this machine's GPU, else its RAM

The memory plan (`emodist.models.memory`) reads a Placement; a started run makes its own from the live
accelerator (`emodist.train.distributed.Topology.placement`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from emodist.config import RunConfig
from emodist.runtime import process
from emodist.runtime.errors import UsageError


@dataclass(frozen=True)
class Placement:
    """The processes of a run and where their memory lives."""

    processes: int = 1
    nodes: int = 1
    zero_stage: int | None = None
    """DeepSpeed's ZeRO stage, or None without DeepSpeed."""
    offload_optimizer: bool = False
    offload_params: bool = False
    max_live_parameters: int = 1_000_000_000
    """ZeRO-3's stage3_max_live_parameters: the gathered weights a process may keep (DeepSpeed's default: 1e9)."""
    device: str = "cuda"
    """cuda or cpu: where the weights and activations live."""
    precision: str = "bf16"
    """accelerate's mixed_precision: no, bf16 or fp16."""

    @property
    def per_node(self) -> int:
        return max(1, self.processes // max(self.nodes, 1))

    def describe(self) -> str:
        kind = f"DeepSpeed ZeRO-{self.zero_stage}" if self.zero_stage is not None else (
            "DDP" if self.processes > 1 else "1 process")
        count = f", {self.processes} processes" + (f" on {self.nodes} nodes" if self.nodes > 1 else "") if (
            self.processes > 1) else ""
        offload = [what for what, on in (("optimizer", self.offload_optimizer), ("weights", self.offload_params)) if on]
        return (f"{kind}{count}, {self.device}, {self.precision}"
                + (f", {' and '.join(offload)} offloaded to the host" if offload else ""))


def _accelerate_settings(path: str) -> dict:
    """The settings of the accelerate config file `path`; UsageError naming the file (and the key) for one that
    does not read, is no accelerate config, or counts processes or machines otherwise than in whole numbers."""
    import yaml

    try:
        settings = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise UsageError(f"--config_file {path}: cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"--config_file {path}: not UTF-8 (byte {err.start}): save it as UTF-8") from None
    except yaml.YAMLError as err:  # its own text spans lines: the line and the problem, on one
        mark = getattr(err, "problem_mark", None)
        raise UsageError(f"--config_file {path}{f':{mark.line + 1}' if mark else ''}: not valid YAML "
                         f"({getattr(err, 'problem', None) or type(err).__name__}): fix that line") from None
    if not isinstance(settings, dict):
        raise UsageError(f"--config_file {path}: not an accelerate config (a YAML mapping of its settings)")
    if "distributed_type" not in settings:  # an emodist run config (train:, model:, ...) planned as one process
        raise UsageError(f"--config_file {path}: not an accelerate config (no distributed_type)"
                         + (": an emodist run config goes to --config" if {"train", "model", "data"} & set(settings)
                            else ": name one of accelerate_configs/"))
    for key in ("num_processes", "num_machines"):
        value = settings.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:  # -2 planned, 'two' an internal error
            raise UsageError(f"--config_file {path}: {key}: {value!r}: must be a whole number, 1 or more")
    return settings


def from_accelerate_config(path: str | None, num_processes: int | None = None, num_machines: int | None = None,
                           device: str = "cuda", precision: str = "bf16") -> Placement:
    """The Placement an accelerate config file (and the launcher's overrides) starts. None: one process."""
    settings = _accelerate_settings(path) if path is not None else {}
    kind = str(settings.get("distributed_type", "NO")).upper()
    known = ("NO", "MULTI_CPU", "MULTI_GPU", "DEEPSPEED", "FSDP")
    if kind not in known:
        raise UsageError(f"--config_file {path}: distributed_type {kind} is none that emodist launches "
                         f"({', '.join(known)})")
    for flag, count in (("--num_processes", num_processes), ("--num_machines", num_machines)):
        if count is not None and count < 1:
            raise UsageError(f"{flag} {count}: must be 1 or more")
    if kind == "FSDP":
        raise UsageError(f"--config_file {path}: FSDP is not planned (the plan knows DDP and DeepSpeed ZeRO, and "
                         "would count FSDP's sharded weights whole): --config_file accelerate_configs/deepspeed_zero3.yaml "
                         "plans ZeRO-3, which shards the same weights, gradients and optimizer states")
    processes = num_processes or settings.get("num_processes", 1)
    nodes = num_machines or settings.get("num_machines", 1)
    if path is not None and kind == "NO" and (num_processes or 1) > 1:  # accelerate starts one, whatever the count
        raise UsageError(f"--num_processes {num_processes} with {path} (distributed_type NO): accelerate launch starts "
                         "one process; plan several with --config_file accelerate_configs/multi_gpu.yaml (DDP) or a "
                         "DeepSpeed config")
    if kind == "NO" and not num_processes:
        processes = 1
    if processes % nodes:  # accelerate starts as many on every node
        said = [f"{flag} {value}" if given else f"{value} {key} ({path})" for flag, key, value, given in (
            ("--num_processes", "num_processes", processes, num_processes), ("--num_machines", "num_machines", nodes,
                                                                            num_machines))]
        raise UsageError(f"{said[0]} over {said[1]}: give each machine as many processes, a multiple of {nodes}")
    stage, zero = None, {}
    if kind == "DEEPSPEED":
        deepspeed = settings.get("deepspeed_config") or {}
        if not isinstance(deepspeed, dict):  # `deepspeed_config: 3` was an internal error
            raise UsageError(f"--config_file {path}: deepspeed_config: {deepspeed!r}: must be a mapping of DeepSpeed "
                             "settings (zero_stage: 3, ...), as accelerate config writes it")
        stage, zero = _zero_settings(deepspeed, path)
    if settings.get("use_cpu"):
        device = "cpu"
    return Placement(processes=processes, nodes=nodes, zero_stage=stage,
                     offload_optimizer=offload_device(zero, "offload_optimizer") is not None,
                     offload_params=offload_device(zero, "offload_param") is not None,
                     max_live_parameters=max_live_parameters(zero), device=device, precision=precision)


def _zero_settings(deepspeed: dict, path: str) -> tuple[int, dict]:
    """ZeRO's stage and its zero_optimization section from accelerate's deepspeed_config: its inline keys or its
    JSON file."""
    file = deepspeed.get("deepspeed_config_file")
    if file:
        try:
            return read_zero_section(file)
        except OSError as err:
            relative = "" if Path(file).is_absolute() else "; run from the directory it is relative to"
            raise UsageError(f"--config_file {path}: its deepspeed_config_file {file} cannot be read "
                             f"({err.strerror or err}){relative}") from None
    # accelerate's inline keys: zero_stage, offload_optimizer_device, offload_param_device
    zero = {key: {"device": deepspeed.get(f"{key}_device")} for key in ("offload_optimizer", "offload_param")}
    return _stage(deepspeed.get("zero_stage", 0), f"--config_file {path}: deepspeed_config.zero_stage"), zero


def read_zero_section(file: str) -> tuple[int, dict]:
    """ZeRO's stage and the zero_optimization section of the DeepSpeed JSON `file`; UsageError naming the file and
    the key for one that does not read as such (OSError when it cannot be read at all)."""
    try:
        settings = json.loads(Path(file).read_text(encoding="utf-8"))
    except ValueError as err:  # JSON, or not UTF-8
        raise UsageError(f"{file}: the DeepSpeed config does not read as JSON ({err}): fix it, or start again from "
                         "one in accelerate_configs/deepspeed/") from None
    if not isinstance(settings, dict):
        raise UsageError(f"{file}: not a DeepSpeed config (a JSON object of its settings): fix it, or start again from "
                         "one in accelerate_configs/deepspeed/")
    zero = settings.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise UsageError(f"{file}: zero_optimization is {zero!r}, not a mapping of ZeRO's settings: fix it, or start "
                         "again from one in accelerate_configs/deepspeed/")
    return _stage(zero.get("stage", 0), f"{file}: zero_optimization.stage"), zero


def _stage(value, where: str) -> int:
    """A ZeRO stage, 0 to 3 (as a number or its digits); UsageError naming `where` for anything else."""
    if isinstance(value, int | str) and not isinstance(value, bool) and str(value).strip() in ("0", "1", "2", "3"):
        return int(value)
    raise UsageError(f"{where} is {value!r}: ZeRO's stages are 0, 1, 2 and 3")


def offload_device(zero: dict, key: str) -> str | None:
    """The device DeepSpeed's zero_optimization section offloads `key` (offload_optimizer, offload_param) to,
    or None."""
    device = (zero.get(key) or {}).get("device", "none")
    return None if device in (None, "none") else device


def max_live_parameters(zero: dict) -> int:
    """ZeRO-3's stage3_max_live_parameters in DeepSpeed's zero_optimization section (its default where unset)."""
    value = zero.get("stage3_max_live_parameters")
    try:
        return int(float(value))
    except (TypeError, ValueError):  # unset, or "auto" (which DeepSpeed leaves at its default)
        return Placement.max_live_parameters


HALF_BASE_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}


def precision_for(cfg: RunConfig, device: str, zero_stage: int | None = None, gpu_bf16: bool = True) -> str:
    """The accelerate `mixed_precision` a run of `cfg` computes in on `device` (cuda or cpu; `gpu_bf16`: whether
    the GPU has bf16) under `zero_stage` (train.mixed_precision, its `auto` resolved)."""
    requested = cfg.train.mixed_precision
    if requested == "auto":
        # a half-precision base computes in that precision whatever the hardware: autocast it to match
        # the float32 trainable head (config validation refuses any other explicit choice)
        requested = HALF_BASE_PRECISION.get(cfg.model.dtype, "auto") if cfg.model.quantization == "none" else "auto"
        if cfg.model.quantization == "nf4" and zero_stage == 3:
            # ZeRO-3 trains a 4-bit base stored in its compute dtype, and keeps float32 masters only
            # when DeepSpeed's own half precision is on
            requested = HALF_BASE_PRECISION.get(cfg.model.compute_dtype, "no")
    if requested != "auto":
        return requested
    if device == "cuda":
        return "bf16" if gpu_bf16 else "fp16"
    return "bf16" if process.cpu_has_native_bf16() else "no"


@dataclass(frozen=True)
class Target:
    """The memory one process may use: one GPU's, or on a CPU the machine's RAM (shared by its processes)."""

    device: str
    capacity: int
    source: str

    @classmethod
    def of(cls, gpu_memory: str | None) -> Target:
        if gpu_memory is not None:
            return cls("cuda", parse_size(gpu_memory, "--gpu-memory"), f"--gpu-memory {gpu_memory}")
        import torch

        if torch.cuda.is_available():
            return cls("cuda", torch.cuda.get_device_properties(0).total_memory, torch.cuda.get_device_name(0))
        pages = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return cls("cpu", pages, "this machine's RAM (no GPU here)")

    def room(self, placement: Placement) -> int:
        """What one process may use: a GPU each, or the RAM shared by the processes of a node."""
        return self.capacity if self.device == "cuda" else self.capacity // placement.per_node

    def fits(self, planned) -> bool:
        """Whether a MemoryPlan's peak fits in what one of its processes may use."""
        return planned.peak_bytes <= self.room(planned.placement)

    def to_json(self) -> dict:
        return asdict(self)


SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(GB|GiB|MB|MiB|TB|TiB)\s*$", re.IGNORECASE)
UNITS = {"mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30, "tb": 10**12, "tib": 2**40}


def parse_size(text: str, flag: str) -> int:
    """Bytes of '24GB', '80GiB', '512MiB'. UsageError naming `flag` otherwise."""
    match = SIZE.match(text)
    if not match:
        raise UsageError(f"{flag} {text}: not a memory size: write a number and GB, GiB, MB, MiB, TB or TiB, e.g. 24GB")
    size = int(float(match.group(1)) * UNITS[match.group(2).lower()])
    if size < 2**20:
        raise UsageError(f"{flag} {text}: less than 1 MiB; write the memory of one GPU, e.g. 24GB")
    return size
