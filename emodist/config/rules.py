"""What a valid configuration is: every value out of range and every contradiction between values, as
(key, message) pairs that name what would be valid.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emodist.config.schema import RunConfig


_HALF_PRECISION = {"bfloat16": "bf16", "float16": "fp16", "float32": "no"}


def problems(cfg: RunConfig) -> list[tuple[str, str]]:
    """(key, message) for every value that is out of range or contradicts another."""
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.train
    checks = [
        ("model.name_or_path", not m.name_or_path, "is empty: give a hub id or a local model directory"),
        ("model.quantization", m.quantization != "none" and m.method != "lora",
         "a quantized base is frozen, so it needs model.method=lora"),
        ("model.dtype", m.method == "full" and m.dtype != "float32",
         "a full fine-tune keeps float32 master weights; use train.mixed_precision=bf16 for bf16 compute"),
        ("train.mixed_precision", m.quantization == "none" and m.dtype != "float32"
         and t.mixed_precision not in ("auto", _HALF_PRECISION[m.dtype]),
         f"a {m.dtype} base computes in {m.dtype}, so its float32 head needs autocast: set "
         f"train.mixed_precision=auto or {_HALF_PRECISION.get(m.dtype)}, or model.dtype=float32"),
        ("model.lora.target_modules", m.method == "lora" and not m.lora.target_modules,
         "is empty: name the Linear layers that get adapters"),
        ("model.lora.r", m.method == "lora" and not 1 <= m.lora.r <= MAX_LORA_RANK,
         f"must be from 1 to {MAX_LORA_RANK:,} (a rank past the layers' width adds nothing)"),
        ("model.lora.alpha", m.method == "lora" and m.lora.alpha <= 0, "must be > 0"),
        ("model.lora.dropout", not 0 <= m.lora.dropout < 1, "must be in [0, 1)"),
        ("data.max_length", not 8 <= d.max_length <= 32768, "must be in [8, 32768]"),
        ("data.max_train_examples", d.max_train_examples is not None and d.max_train_examples < 1, "must be >= 1"),
        ("data.max_eval_examples", d.max_eval_examples is not None and d.max_eval_examples < 1, "must be >= 1"),
        ("data.pad_to_multiple_of", d.pad_to_multiple_of is not None and not 1 <= d.pad_to_multiple_of <= 128,
         "must be in [1, 128] (or unset: 8 on GPUs, 1 on CPUs)"),
        ("data.grouping", d.grouping not in ("none", "ekman", "sentiment") and not is_file(d.grouping),
         f"{d.grouping!r} is neither none, ekman, sentiment nor a JSON file {{group: [labels]}}"),
        ("data.data_dir", d.data_dir is None and d.dataset in ("auto", "csv", "jsonl"),
         f"is needed for data.dataset={d.dataset}: pass --data-dir DIR"),
        ("data.data_dir", d.data_dir is not None and d.dataset == "synthetic",
         "is set but data.dataset=synthetic builds its data itself (--smoke's): set data.dataset=auto to read the "
         "directory, as --data-dir does, or drop data.data_dir"),
        ("data.data_dir", d.data_dir is not None and not is_dir(d.data_dir),
         f"{d.data_dir} is not a directory" + _path_hint(d.data_dir)),
        ("data.text_column", d.text_column == d.label_column,
         f"is data.label_column too ({d.text_column!r}): a model given its labels as its text learns nothing to use; "
         "name the column that holds the texts"),
        ("optim.lr", o.lr <= 0, "must be > 0"),
        ("optim.head_lr", o.head_lr is not None and o.head_lr <= 0, "must be > 0 (or unset)"),
        ("optim.head_lr", o.head_lr is not None and not m.head_modules,
         "applies to model.head_modules, which is empty: name the head's modules (e.g. [classifier]), or unset "
         "optim.head_lr (optim.head_lr=null)"),
        ("optim.weight_decay", o.weight_decay < 0, "must be >= 0"),
        ("optim.warmup_ratio", not 0 <= o.warmup_ratio < 1, "must be in [0, 1)"),
        ("optim.max_grad_norm", o.max_grad_norm < 0, "must be >= 0 (0 turns clipping off)"),
        *_train_checks(t),
        ("export.max_shard_size", not valid_shard_size(cfg.export.max_shard_size),
         f"{cfg.export.max_shard_size!r} is not a size: write a whole number and KB, MB, GB, KiB, MiB or GiB, e.g. 2GB"),
        ("train.seed", not 0 <= t.seed < 2**32, "must be in 0..4294967295 (the seed of numpy and torch)"),
        *((key, _path_problem(value) is not None, _path_problem(value) or "") for key, value in (
            ("output_dir", cfg.output_dir), ("data.data_dir", d.data_dir), ("data.cache_dir", d.cache_dir),
            ("data.grouping", d.grouping), ("model.name_or_path", m.name_or_path))),
    ]
    return [(key, message) for key, failed, message in checks if failed]


def valid_shard_size(text: str) -> bool:
    """Whether `text` is a size transformers' `max_shard_size` reads (a whole number and KB/MB/GB/KiB/MiB/GiB)."""
    return re.fullmatch(r"[1-9][0-9]{0,12}(k|m|g)i?b", text.strip(), flags=re.IGNORECASE) is not None


def _path_problem(value: str | None) -> str | None:
    """Why `value` cannot name a file or directory on this machine (None: it can, or it is unset)."""
    if value is None:
        return None
    too_long = [part for part in value.split("/") if len(part.encode("utf-8", "surrogateescape")) > 255]
    if too_long:
        return f"has a name longer than 255 bytes ({too_long[0][:20]}...): no file system holds it"
    if len(value.encode("utf-8", "surrogateescape")) > 4000:
        return "is longer than 4000 bytes: no file system holds such a path"
    return None


def is_file(path: str | Path) -> bool:
    """Path.is_file that says False, not raises, for a name the file system cannot hold."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def _path_hint(value: str | None) -> str:
    """What may be wrong with a path a config names: YAML does not expand `~`, and a relative path is read from
    the directory the command runs in (not the config file's)."""
    if value and value.startswith("~"):
        return " (~ is expanded by a shell, not in a config value or a quoted argument: write the full path)"
    if value and not Path(value).is_absolute():
        return f" (a relative path is read from the directory the command runs in, {Path.cwd()})"
    return ""


def is_dir(path: str | Path) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def exists(path: str | Path) -> bool:
    """Whether anything is at `path` (a file, a directory, a pipe, a device); False for a name that cannot be."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def _train_checks(t) -> list[tuple[str, bool, str]]:
    """The train section's (key, failed, message) checks."""
    return [
        ("train.epochs", not 1 <= t.epochs <= MAX_EPOCHS, f"must be from 1 to {MAX_EPOCHS:,}"),
        ("train.max_steps", t.max_steps is not None and not 1 <= t.max_steps <= MAX_STEPS,
         f"must be from 1 to {MAX_STEPS:,} (or unset: every epoch)"),
        ("train.micro_batch_size", t.micro_batch_size < 1, "must be >= 1"),
        ("train.eval_batch_size", t.eval_batch_size < 1, "must be >= 1"),
        ("train.pos_weight_cap", t.pos_weight_cap < 1, "must be >= 1"),
        ("train.focal_gamma", not 0 <= t.focal_gamma <= MAX_GAMMA, f"must be from 0 to {MAX_GAMMA} (0: BCE)"),
        ("train.asl_gamma_pos", not 0 <= t.asl_gamma_pos <= MAX_GAMMA, f"must be from 0 to {MAX_GAMMA}"),
        ("train.asl_gamma_neg", not 0 <= t.asl_gamma_neg <= MAX_GAMMA, f"must be from 0 to {MAX_GAMMA}"),
        ("train.asl_clip", not 0 <= t.asl_clip < 1, "must be in [0, 1) (0: no margin)"),
        ("train.threshold_bootstrap", not 0 <= t.threshold_bootstrap <= MAX_BOOTSTRAP,
         f"must be from 0 to {MAX_BOOTSTRAP} (0: thresholds tuned on dev itself; each resample tunes them all again, "
         "at the run's end)"),
        ("train.global_batch_size", t.micro_batch_size >= 1 and t.global_batch_size % t.micro_batch_size != 0,
         f"must be a multiple of train.micro_batch_size={t.micro_batch_size}"),
        ("train.global_batch_size", t.global_batch_size < 1, "must be >= 1"),
        ("train.log_every_steps", t.log_every_steps < 1, "must be >= 1"),
        ("train.cpu_threads", t.cpu_threads is not None and not 1 <= t.cpu_threads <= MAX_THREADS,
         f"must be from 1 to {MAX_THREADS:,} (or unset: the cores shared among the node's processes)"),
        ("train.eval_every_steps", t.eval_every_steps is not None and t.eval_every_steps < 0,
         "must be >= 0 (0: only at the end; unset: 8 times per run)"),
        ("train.save_every_steps", t.save_every_steps < 0, "must be >= 0 (0: only at the end)"),
        ("train.keep_last_checkpoints", t.keep_last_checkpoints < 1, "must be >= 1"),
        *((key, value > MAX_BATCH, f"must be <= {MAX_BATCH:,} (2**20 examples a batch: more than any machine holds)")
          for key, value in (("train.micro_batch_size", t.micro_batch_size), ("train.eval_batch_size", t.eval_batch_size),
                             ("train.global_batch_size", t.global_batch_size))),
    ]


MAX_LORA_RANK = 65536
"""The largest LoRA rank a config may ask for: 10**20 was an internal error in peft (and a plan of 3e17 GiB)."""

MAX_GAMMA = 100
"""The largest focusing exponent of the focal and asymmetric losses (the papers use 0-4): 1e300 made the loss
NaN, reported as a learning rate too high."""

MAX_BATCH = 2**20
"""The largest batch size a config may ask for: a larger one was an internal error deep in the loaders."""

MAX_EPOCHS = 100_000
MAX_STEPS = 10**10
"""The longest training a config may ask for: 10**20 epochs were accepted, and the warmup (a share of the
steps) then kept the learning rate at 1e-21 for good."""

MAX_THREADS = 4096
"""The most threads per process `train.cpu_threads` may ask for (2**31 was an internal error in torch)."""

MAX_BOOTSTRAP = 1000
"""The most resamples `train.threshold_bootstrap` may ask for: 30 take about a second on GoEmotions' dev for
per-label F1 (half a minute for samples-Jaccard), and a million ran on, past Ctrl-C, after the training."""
