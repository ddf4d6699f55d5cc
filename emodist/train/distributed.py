"""The topology the launcher asked for: how to start it on this machine, and what it can run.

    kwargs = distributed.accelerator_kwargs()          # before the Accelerator exists
    accelerator = Accelerator(..., **kwargs)
    topology = distributed.Topology.of(accelerator)
    distributed.check_support(cfg, topology)           # the support matrix, in words
    distributed.fill_deepspeed_config(cfg, accelerator)

The topology (processes, nodes, DDP, DeepSpeed ZeRO, FSDP) lives in the accelerate config
(`accelerate_configs/`), never in the run config: the same run scales by changing only that file.
On a machine without CUDA, accelerate would quietly run one process, or N processes that do not
know each other; `accelerator_kwargs` makes multi-process and DeepSpeed run over gloo instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from emodist.config import RunConfig
from emodist.models.placement import Placement, max_live_parameters, offload_device, read_zero_section
from emodist.runtime.errors import UsageError


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def world_size() -> int:
    """How many processes the launcher started (before torch.distributed is up)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def dropped_processes(num_processes: int) -> str | None:
    """A warning when `accelerate launch` was asked for several processes and started this one alone
    (`num_processes`, the Accelerator's, is 1): its simple launcher (a config with distributed_type NO, or none,
    on a machine without GPUs) passes on no process count, only the rendezvous port of a group (MASTER_PORT)
    that no other process joins. That launcher is told apart from a plain `python` by ACCELERATE_DYNAMO_BACKEND
    and ACCELERATE_USE_CPU, which it always sets and a user has no reason to."""
    launched = all(name in os.environ for name in ("ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_USE_CPU", "MASTER_PORT"))
    grouped = any(name in os.environ for name in ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"))
    if num_processes > 1 or not launched or grouped:
        return None
    return ("accelerate launch was asked for several processes (--num_processes, or its config's) and started "
            "this one alone: a config with distributed_type NO (cpu.yaml), or none, starts one process without "
            "GPUs; for N processes on CPUs (DDP over gloo) launch with --config_file accelerate_configs/multi_gpu.yaml "
            "--num_processes N")


def launched_zero_stage() -> int | None:
    """The ZeRO stage `accelerate launch` asked for (None: not DeepSpeed), read before the Accelerator exists."""
    if not _env_flag("ACCELERATE_USE_DEEPSPEED"):
        return None
    file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if file and file != "none" and not Path(file).is_file():  # accelerate's own error is a deep traceback
        raise UsageError(f"the accelerate config's deepspeed_config_file {file} is not a file here ({Path.cwd()}): "
                         "a relative path is read from the directory training runs in: launch from the one it is "
                         "relative to (the repository, for accelerate_configs/), or write it as an absolute path")
    if file and Path(file).is_file():  # read here: accelerate's own error for a malformed one is a deep traceback
        return read_zero_section(file)[0]
    return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))


def accelerator_kwargs() -> dict:
    """Extra `Accelerator` arguments that make the launcher's topology work on this machine.

    Without CUDA: DeepSpeed needs the gloo backend named (accelerate leaves it unset and then counts
    one process), and plain multi-process needs `cpu=True` (DDP over gloo). FSDP is refused: accelerate
    only shards on GPUs, and without one it would silently fall back to DDP.
    """
    if torch.cuda.is_available():
        return {}
    if _env_flag("ACCELERATE_USE_FSDP"):
        raise UsageError(
            "FSDP needs CUDA GPUs, and this machine has none (accelerate would quietly run plain DDP instead): "
            "shard on CPUs with --config_file accelerate_configs/deepspeed_zero3.yaml, or use multi_gpu.yaml for DDP")
    if _env_flag("ACCELERATE_USE_DEEPSPEED"):
        from accelerate.utils import InitProcessGroupKwargs

        return {"kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}
    if world_size() > 1:
        return {"cpu": True}
    return {}


@dataclass(frozen=True)
class Topology:
    """What the run is distributed over, as the started Accelerator sees it."""

    distributed_type: str
    """accelerate's DistributedType value: NO, MULTI_CPU, MULTI_GPU, DEEPSPEED, FSDP."""
    num_processes: int
    num_nodes: int
    zero_stage: int | None = None
    offload_optimizer: str | None = None
    """DeepSpeed optimizer-state offload device (cpu, nvme), or None."""
    offload_param: str | None = None
    """DeepSpeed parameter offload device (cpu, nvme), or None."""
    max_live_parameters: int = Placement.max_live_parameters
    """ZeRO-3's stage3_max_live_parameters."""
    ds_config_file: str | None = None

    @classmethod
    def planned(cls, where: Placement, config_file: str | None) -> Topology:
        """The topology a plan's Placement (launch/plan.py) would start, for `check_support`."""
        kind = "DEEPSPEED" if where.zero_stage is not None else ("MULTI_GPU" if where.processes > 1 else "NO")
        return cls(kind, where.processes, where.nodes, where.zero_stage, "cpu" if where.offload_optimizer else None,
                   "cpu" if where.offload_params else None, where.max_live_parameters, config_file)

    @classmethod
    def of(cls, accelerator) -> Topology:
        kind = accelerator.distributed_type.value
        local = accelerator.num_processes
        for name in ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"):
            if value := os.environ.get(name, "").strip():
                if not value.isdigit():
                    raise UsageError(f"{name}={value}: not a whole number (a launcher sets it to the processes on "
                                     "this node): unset it, or start the run with accelerate launch")
                local = int(value)
                break
        nodes = max(1, accelerator.num_processes // max(local, 1))
        plugin = accelerator.state.deepspeed_plugin
        if plugin is None:
            return cls(kind, accelerator.num_processes, nodes)
        zero = plugin.deepspeed_config.get("zero_optimization", {})
        return cls(kind, accelerator.num_processes, nodes, zero_stage=int(zero.get("stage", 0)),
                   offload_optimizer=offload_device(zero, "offload_optimizer"),
                   offload_param=offload_device(zero, "offload_param"), max_live_parameters=max_live_parameters(zero),
                   ds_config_file=os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"))

    @property
    def deepspeed(self) -> bool:
        return self.zero_stage is not None

    def placement(self, device: str, precision: str) -> Placement:
        """What the memory plan reads of this topology."""
        return Placement(processes=self.num_processes, nodes=self.num_nodes, zero_stage=self.zero_stage,
                         offload_optimizer=self.offload_optimizer is not None,
                         offload_params=self.offload_param is not None, max_live_parameters=self.max_live_parameters,
                         device=device, precision=precision)

    @property
    def shards_parameters(self) -> bool:
        """Whether each rank holds only a slice of every weight (ZeRO-3, FSDP)."""
        return self.zero_stage == 3 or self.distributed_type == "FSDP"

    def identity(self) -> dict:
        """What a checkpoint records of the topology, and a resume must match."""
        return {"num_processes": self.num_processes, "distributed_type": self.distributed_type,
                "zero_stage": self.zero_stage}

    def describe(self) -> str:
        """e.g. `2 processes on 1 node, DEEPSPEED ZeRO-3 (optimizer offload: cpu)`."""
        text = (f"{self.num_processes} process{'es' if self.num_processes > 1 else ''} on {self.num_nodes} "
                f"node{'s' if self.num_nodes > 1 else ''}, {self.distributed_type}")
        if self.deepspeed:
            text += f" ZeRO-{self.zero_stage}"
            offload = [f"{what} offload: {device}" for what, device in
                       (("optimizer", self.offload_optimizer), ("parameter", self.offload_param)) if device]
            text += f" ({', '.join(offload)})" if offload else ""
        return text


def check_support(cfg: RunConfig, topology: Topology) -> None:
    """Refuse, in one line, the combinations of model and topology that cannot train correctly.

    The first problem found is reported with its reason and the nearest combination that works.
    """
    m, where = cfg.model, topology.ds_config_file or "the accelerate config"
    if not topology.deepspeed:
        return
    if cfg.train.compile:
        raise UsageError(
            f"train.compile=true under DeepSpeed ({where}): its hooks gather and release weights around each "
            "block, which emodist's compiled blocks are not tested with. Set train.compile=false, or train with "
            "DDP (accelerate_configs/multi_gpu.yaml) or one process")
    if m.quantization == "nf4" and topology.offload_param:
        raise UsageError(
            f"model.quantization=nf4 with DeepSpeed parameter offload ({where}): DeepSpeed cannot move packed "
            "4-bit weights to the CPU and back. Use accelerate_configs/deepspeed_zero3.yaml (ZeRO-3 shards the "
            "4-bit base, no offload), or --variant mistral-lora (a bf16 base) with the offload config")
    if topology.offload_optimizer and cfg.optim.name != "adamw":
        raise UsageError(
            f"optim.name={cfg.optim.name} with DeepSpeed optimizer offload ({where}): the offloaded state lives "
            "in CPU memory, where accelerate silently swaps a bitsandbytes optimizer for DeepSpeedCPUAdam (Adam "
            "with L2 decay, 32-bit). Set optim.name=adamw (it becomes DeepSpeedCPUAdam in AdamW mode)")
    if topology.zero_stage == 3 and m.quantization == "int8":
        raise UsageError(
            f"model.quantization=int8 under ZeRO-3 ({where}): bitsandbytes' 8-bit weights do not survive ZeRO-3 "
            "partitioning (the loss comes out about 10x off, bitsandbytes#1451). Use model.quantization=nf4 "
            "(ZeRO-3 shards it), or accelerate_configs/deepspeed_zero2.yaml")


def quant_storage_dtype(cfg: RunConfig, topology: Topology | None) -> str | None:
    """The dtype packed 4-bit weights must be stored in, or None for bitsandbytes' default (uint8).

    ZeRO-3 and FSDP flatten every weight into one buffer of one dtype, so the 4-bit storage has to be
    the dtype the rest of the model computes in.
    """
    if cfg.model.quantization == "nf4" and topology is not None and topology.shards_parameters:
        return cfg.model.compute_dtype
    return None


def fill_deepspeed_config(cfg: RunConfig, accelerator) -> None:
    """Give DeepSpeed the values this script owns (see `owned_deepspeed_values`); no-op without DeepSpeed."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        apply_owned_values(plugin.deepspeed_config, owned_deepspeed_values(
            cfg, accelerator.gradient_accumulation_steps, plugin.zero_stage),
            os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "the DeepSpeed config"))


def owned_deepspeed_values(cfg: RunConfig, accumulation: int, zero_stage: int) -> dict[str, tuple[object, str]]:
    """{dotted DeepSpeed key: (value, the run-config setting it comes from)} for the keys emodist owns."""
    t = cfg.train
    owned: dict[str, tuple[object, str]] = {
        "train_micro_batch_size_per_gpu": (t.micro_batch_size, "train.micro_batch_size"),
        "gradient_accumulation_steps": (accumulation, "train.global_batch_size / (micro_batch_size x processes)"),
        "train_batch_size": (t.global_batch_size, "train.global_batch_size"),
        "gradient_clipping": (cfg.optim.max_grad_norm, "optim.max_grad_norm"),
    }
    if zero_stage == 3:  # the export gathers the full weights from every rank's slice
        owned["zero_optimization.stage3_gather_16bit_weights_on_model_save"] = (True, "the model export")
    return owned


def apply_owned_values(ds_config: dict, owned: dict[str, tuple[object, str]], where: str) -> None:
    """Write `owned` into `ds_config` where it says "auto" (or nothing); refuse a different hard-coded value.

    Raises one UsageError naming `where` and every conflicting key.
    """
    conflicts = []
    for key, (ours, source) in owned.items():
        node, leaf = _node(ds_config, key)
        theirs = node.get(leaf, "auto")
        if theirs == "auto" or theirs == ours:
            node[leaf] = ours
        else:
            conflicts.append(f"{key}={theirs!r} but {source} gives {ours!r}")
    if conflicts:
        raise UsageError(f"{where}: {'; '.join(conflicts)}: set these keys to \"auto\" (emodist derives them)")


def _node(config: dict, dotted: str) -> tuple[dict, str]:
    *parents, leaf = dotted.split(".")
    for part in parents:
        config = config.setdefault(part, {})
    return config, leaf


def shut_down(accelerator) -> None:
    """Release the run's model, optimizer and loaders, then end the process group (and any tracker).

    accelerate holds the wrapped model, whose DDP reducer holds the process group: they are freed here,
    while the interpreter still runs. Left to its shutdown, gloo's threads can outlive what they hold
    (pytorch/pytorch#179291), a likely cause of a rare abort at the end of resumed DDP runs in CI
    ("terminate called without an active exception", rank 1, exit -6; not reproduced, so not confirmed).
    """
    accelerator.free_memory()
    accelerator.end_training()
