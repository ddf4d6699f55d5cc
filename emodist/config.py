"""The typed run configuration: one schema, variant presets, YAML files and dotted overrides.

    cfg = config.load(variant="gemma-lora", config_file="my.yaml", overrides=["optim.lr=2e-4"], smoke=True)

Values are applied in layers, each later one winning: the schema defaults, the variant preset
(`emodist/variants.py`), the smoke preset (with `--smoke`), the YAML file, the `key=value` overrides,
and the command-line flags. Every problem in every layer is collected and raised as one `UsageError`
that names the key, where it was set (file:line or the override) and what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from emodist.runtime.errors import UsageError, utf8_text

Precision = Literal["auto", "no", "fp16", "bf16"]
Dtype = Literal["float32", "bfloat16", "float16"]
_HALF_PRECISION = {"bfloat16": "bf16", "float16": "fp16", "float32": "no"}


@dataclass
class LoraSettings:
    r: int = 16
    """Rank of the low-rank update."""
    alpha: int = 32
    """Scale numerator: the update is scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout applied to the LoRA input."""
    target_modules: list[str] = field(default_factory=list)
    """Names (suffixes) of the Linear layers that get adapters, e.g. [q_proj, v_proj]."""


@dataclass
class ModelConfig:
    name_or_path: str = "distilbert-base-uncased"
    """Hub id or local directory of the base model."""
    architecture: Literal["distilbert", "bert", "gemma", "mistral"] = "distilbert"
    """Model family (transformers `model_type`). `--smoke` builds a tiny random model of this family."""
    method: Literal["full", "lora"] = "full"
    """`full`: every weight is trained. `lora`: the base is frozen and low-rank adapters are trained."""
    quantization: Literal["none", "nf4", "int8"] = "none"
    """Frozen base in bitsandbytes format. `nf4`: 4-bit NormalFloat with double quantization (QLoRA);
    `int8`: LLM.int8 8-bit weights. Both need method=lora."""
    dtype: Dtype = "float32"
    """Storage dtype of the base weights. Trainable weights are always float32 (master weights)."""
    compute_dtype: Dtype = "bfloat16"
    """Dtype the 4-bit layers compute in (bitsandbytes `bnb_4bit_compute_dtype`)."""
    smoke_size: Literal["tiny", "real"] = "tiny"
    """The random model `--smoke` builds: `tiny` (2 layers, seconds on a CPU) or `real`, the sizes of the
    variant's real model (Mistral-7B, Gemma-2B, DistilBERT-base, MiniLM-L6) for memory and speed checks on a
    GPU without a download. A real-size base is built once, in bfloat16, under the cache directory."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (non-reentrant): less memory, ~30% more compute."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings, used when method=lora."""
    head_modules: list[str] = field(default_factory=lambda: ["pre_classifier", "classifier"])
    """The classification head's modules: trained in full (and saved with the adapter) under LoRA;
    optim.head_lr applies to them."""


@dataclass
class DataConfig:
    dataset: Literal["auto", "goemotions", "semeval2018", "csv", "jsonl", "synthetic"] = "goemotions"
    """Which data set. `auto` detects the format from the files in data_dir."""
    data_dir: str | None = None
    """Local directory holding the data files. Unset: goemotions and semeval2018 come from the hub."""
    text_column: str = "text"
    """Text column of csv/jsonl files."""
    label_column: str = "labels"
    """Label column of csv/jsonl files: a list of label names (JSON list, or comma-separated in CSV)."""
    max_length: int = 128
    """Texts are truncated to this many tokens."""
    max_train_examples: int | None = None
    """Train on a seeded random subset of this many examples (unset: all)."""
    grouping: str = "none"
    """Train on coarser labels: `ekman` (GoEmotions -> anger, disgust, fear, joy, sadness, surprise, neutral),
    `sentiment` (positive, negative, ambiguous, neutral), a JSON file {group: [labels]}, or `none`. A text
    gets a group when it has any of the group's labels; ekman_mapping.json / sentiment_dict.json in the data
    directory are used when present."""
    group_by_length: bool = True
    """Train on batches of texts of similar lengths (random order of batches, seeded by train.seed and the
    epoch): about half the padding of random batches on GoEmotions. false: random batches."""
    pad_to_multiple_of: int | None = None
    """Batches pad to their longest text rounded up to a multiple of this. Unset: 8 on GPUs (tensor-core
    tiles), 1 on CPUs, where rounding up only adds work (measured on GoEmotions: 21% more tokens than the
    real ones at 8, 3% at 1)."""
    max_eval_examples: int | None = None
    """Evaluate dev and test on a seeded random subset of this many examples each (unset: all)."""
    cache_dir: str | None = None
    """Where tokenized splits are cached. Unset: $EMODIST_CACHE or ~/.cache/emodist."""


@dataclass
class OptimConfig:
    name: Literal["adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit"] = "adamw"
    """Optimizer: torch AdamW, or bitsandbytes' 8-bit / paged AdamW."""
    lr: float = 5e-5
    """Peak learning rate of the body (or of the LoRA adapters)."""
    head_lr: float | None = None
    """Peak learning rate of the classification head (unset: lr). A fresh head on a pretrained body
    often needs a much higher one."""
    weight_decay: float = 0.01
    """Decoupled weight decay; never applied to biases and norm weights."""
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    """Learning-rate decay after warmup."""
    warmup_ratio: float = 0.06
    """Fraction of the optimizer steps spent in linear warmup."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""


@dataclass
class TrainConfig:
    epochs: int = 3
    """Passes over the training split."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (unset: run all epochs)."""
    global_batch_size: int = 32
    """Examples per optimizer step, summed over processes and accumulation."""
    micro_batch_size: int = 8
    """Examples per forward/backward on one process. Accumulation = global / (micro x processes)."""
    eval_batch_size: int = 64
    """Examples per evaluation forward on one process."""
    pos_weight: Literal["none", "balanced"] = "none"
    """Weight of each label's positive examples in the BCE loss. `balanced`: the label's negatives /
    positives in the train split (at least 1, at most train.pos_weight_cap), so rare labels count."""
    pos_weight_cap: float = 10.0
    """Largest positive weight with train.pos_weight=balanced (GoEmotions' rarest label would get ~560)."""
    mixed_precision: Precision = "auto"
    """Autocast precision of the forward pass (accelerate `mixed_precision`). `auto`: the base's own
    precision for a bfloat16/float16 base; otherwise bf16 where the hardware computes it natively
    (recent GPUs; CPUs with AVX512-BF16 or AMX), fp16 on older GPUs, else no (emulated bf16 matmuls on
    a plain AVX2 CPU run ~20x slower than float32)."""
    cpu_threads: int | None = None
    """Threads per process when training on CPUs (unset: the cores available / processes on the node;
    `accelerate launch` would otherwise leave a single process one thread)."""
    seed: int = 42
    """Seed of model init, data order, dropout and subsets."""
    log_every_steps: int = 10
    """Write a metrics.jsonl line (and a progress line) every this many optimizer steps."""
    eval_every_steps: int | None = None
    """Evaluate on dev every this many optimizer steps (0: only at the end; unset: 8 times per run, at every
    eighth of its steps, so that the dev curves are curves)."""
    save_every_steps: int = 0
    """Save a resumable checkpoint every this many optimizer steps (0: only at the end)."""
    keep_last_checkpoints: int = 2
    """How many resumable checkpoints to keep; older ones are deleted after a newer one is complete."""

    def gradient_accumulation_steps(self, num_processes: int) -> int:
        """Micro-batches per optimizer step on each process; raises UsageError if it does not divide."""
        per_step = self.micro_batch_size * num_processes
        if self.global_batch_size % per_step:
            raise UsageError(
                f"train.global_batch_size={self.global_batch_size} is not a multiple of "
                f"train.micro_batch_size x processes = {self.micro_batch_size} x {num_processes}; "
                f"set train.global_batch_size to a multiple of {per_step} or change train.micro_batch_size"
            )
        return self.global_batch_size // per_step


@dataclass
class ExportConfig:
    max_shard_size: str = "2GB"
    """Largest safetensors shard of the exported model (e.g. 500MB, 5GB)."""


@dataclass
class TrackConfig:
    wandb: Literal["auto", "online", "offline", "off"] = "auto"
    """Weights & Biases tracking (also --wandb). `auto`: WANDB_MODE when it is set, else online when an API
    key is configured, else offline. Online without an API key falls back to offline with one notice.
    The run's wandb files go to <run directory>/wandb/."""
    project: str | None = None
    """wandb project (unset: WANDB_PROJECT, else emodist)."""
    group: str | None = None
    """wandb group: the study this run belongs to (unset: WANDB_RUN_GROUP, which the SLURM launcher sets
    from EMODIST_WANDB_GROUP)."""
    tags: list[str] = field(default_factory=list)
    """Extra wandb tags (the variant, method, quantization, topology and smoke tags come by themselves)."""
    plots: bool = True
    """Draw plots/ in the run directory at the end (loss and F1 curves, per-label F1, confusion grid)."""


@dataclass
class RunConfig:
    variant: str = ""
    """Name of the preset this run started from (see --list-variants)."""
    smoke: bool = False
    """Tiny random model of the same architecture on the built-in synthetic set: the offline check."""
    output_dir: str | None = None
    """Run directory. Unset: runs/<variant>-<date>-<time> (smoke runs: runs/smoke-<variant>-<date>-<time>)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def problems(self, where: dict[str, str] | None = None, skip: typing.Container[str] = ()) -> list[str]:
        """Every out-of-range or contradictory value, as `key: message [where it was set]` lines."""
        return [
            f"{key}: {message}" + (f" [{where[key]}]" if where and key in where else "")
            for key, message in _problems(self) if key not in skip
        ]


def _problems(cfg: RunConfig) -> list[tuple[str, str]]:
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
        ("model.lora.r", m.method == "lora" and m.lora.r < 1, "must be >= 1"),
        ("model.lora.alpha", m.method == "lora" and m.lora.alpha <= 0, "must be > 0"),
        ("model.lora.dropout", not 0 <= m.lora.dropout < 1, "must be in [0, 1)"),
        ("data.max_length", not 8 <= d.max_length <= 32768, "must be in [8, 32768]"),
        ("data.max_train_examples", d.max_train_examples is not None and d.max_train_examples < 1, "must be >= 1"),
        ("data.max_eval_examples", d.max_eval_examples is not None and d.max_eval_examples < 1, "must be >= 1"),
        ("data.pad_to_multiple_of", d.pad_to_multiple_of is not None and not 1 <= d.pad_to_multiple_of <= 128,
         "must be in [1, 128] (or unset: 8 on GPUs, 1 on CPUs)"),
        ("data.grouping", d.grouping not in ("none", "ekman", "sentiment") and not _is_file(d.grouping),
         f"{d.grouping!r} is neither none, ekman, sentiment nor a JSON file {{group: [labels]}}"),
        ("data.data_dir", d.data_dir is None and d.dataset in ("auto", "csv", "jsonl"),
         f"is needed for data.dataset={d.dataset}: pass --data-dir DIR"),
        ("data.data_dir", d.data_dir is not None and d.dataset == "synthetic",
         "is set but data.dataset=synthetic builds its data itself: drop one of them"),
        ("data.data_dir", d.data_dir is not None and not _is_dir(d.data_dir),
         f"{d.data_dir} is not a directory"),
        ("optim.lr", o.lr <= 0, "must be > 0"),
        ("optim.head_lr", o.head_lr is not None and o.head_lr <= 0, "must be > 0 (or unset)"),
        ("optim.weight_decay", o.weight_decay < 0, "must be >= 0"),
        ("optim.warmup_ratio", not 0 <= o.warmup_ratio < 1, "must be in [0, 1)"),
        ("optim.max_grad_norm", o.max_grad_norm < 0, "must be >= 0 (0 turns clipping off)"),
        ("train.epochs", t.epochs < 1, "must be >= 1"),
        ("train.max_steps", t.max_steps is not None and t.max_steps < 1, "must be >= 1 (or unset)"),
        ("train.micro_batch_size", t.micro_batch_size < 1, "must be >= 1"),
        ("train.eval_batch_size", t.eval_batch_size < 1, "must be >= 1"),
        ("train.pos_weight_cap", t.pos_weight_cap < 1, "must be >= 1"),
        ("train.global_batch_size", t.micro_batch_size >= 1 and t.global_batch_size % t.micro_batch_size != 0,
         f"must be a multiple of train.micro_batch_size={t.micro_batch_size}"),
        ("train.global_batch_size", t.global_batch_size < 1, "must be >= 1"),
        ("train.log_every_steps", t.log_every_steps < 1, "must be >= 1"),
        ("train.cpu_threads", t.cpu_threads is not None and t.cpu_threads < 1, "must be >= 1 (or unset)"),
        ("train.eval_every_steps", t.eval_every_steps is not None and t.eval_every_steps < 0,
         "must be >= 0 (0: only at the end; unset: 8 times per run)"),
        ("train.save_every_steps", t.save_every_steps < 0, "must be >= 0 (0: only at the end)"),
        ("train.keep_last_checkpoints", t.keep_last_checkpoints < 1, "must be >= 1"),
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


def _is_file(path: str | Path) -> bool:
    """Path.is_file that says False, not raises, for a name the file system cannot hold."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def _is_dir(path: str | Path) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------------
# Loading: layers of (dotted key, value, where) applied onto the schema


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any
    where: str


def load(
    variant: str | None = None,
    config_file: str | None = None,
    overrides: typing.Sequence[str] = (),
    smoke: bool | None = None,
    cli: dict[str, Any] | None = None,
) -> RunConfig:
    """Build and validate the run config from its layers (see the module docstring).

    `cli` maps dotted keys to the command-line flag that set them and its value (e.g.
    {"output_dir": ("--output-dir", "runs/x")}); None values are skipped. Raises UsageError naming every
    problem.
    """
    from emodist import variants  # the registry imports this module for its types

    file_settings = _read_yaml(config_file) if config_file else []
    override_settings = [_parse_override(text) for text in overrides]
    empty = [flag for flag, value in (cli or {}).values() if isinstance(value, str) and not value.strip()]
    if empty:  # an override's empty value means unset; an empty flag is a slip (an unset shell variable)
        raise UsageError(f"{empty[0]} is empty: give it a value, or leave the flag out")
    cli_settings = [Setting(k, v, flag) for k, (flag, v) in (cli or {}).items() if v is not None]
    user = file_settings + override_settings + cli_settings

    name = variant or _last(user, "variant")
    given = next((s for s in reversed(user) if s.key == "variant"), None)
    if variant and given is not None and given.value != variant:
        raise UsageError(f"--variant {variant}, but {given.where} sets variant: {given.value}: the file's settings are "
                         f"those of {given.value}; drop --variant, or start from --variant {variant} without this file")
    if name is not None and not isinstance(name, str):
        where = next(s.where for s in reversed(user) if s.key == "variant")
        raise UsageError(f"{where}: variant={name!r}: must be the name of a variant ({', '.join(variants.names())})")
    if not name:
        raise UsageError(f"no variant given: pass --variant NAME (one of {', '.join(variants.names())})")
    preset = variants.get(name)
    # The variant and smoke choose the presets below them, so they are settled first; the command line wins.
    smoke_settings = [s for s in user if s.key == "smoke"]
    user = [s for s in user if s.key not in ("variant", "smoke")]
    layers = [Setting("variant", name, "--variant" if variant else "config"), *smoke_settings]
    if smoke:
        layers.append(Setting("smoke", True, "--smoke"))
    cfg, where, problems = _apply(RunConfig(), layers)
    layers = _flatten(preset.settings, f"variant {name}")
    if cfg.smoke:
        layers += _flatten(variants.SMOKE, "smoke preset")
    cfg, where_later, problems_later = _apply(cfg, layers + user)
    where.update(where_later)
    problems += problems_later
    # keys whose value could not be read keep an earlier value: do not report them twice
    unread = {p.key for p in problems}
    messages = [p.message for p in problems] + cfg.problems(where, skip=unread)
    if messages:
        raise UsageError(_join(messages))
    return cfg


def dump(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML: `--config` on it reproduces the run (in a new run directory: the
    run directory is where the file lies, so output_dir is left out)."""
    tree = cfg.to_dict()
    tree.pop("output_dir")
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")


def field_docs() -> dict[str, tuple[str, str]]:
    """Dotted key -> (type, docstring) for every setting of the schema."""
    return {key: (_type_name(tp), doc) for key, (tp, doc) in _schema().items()}


@dataclass(frozen=True)
class _Problem:
    key: str
    message: str


def _apply(cfg: RunConfig, settings: list[Setting]) -> tuple[RunConfig, dict[str, str], list[_Problem]]:
    schema = _schema()
    where: dict[str, str] = {}
    problems: list[_Problem] = []
    for s in settings:
        if s.key not in schema:
            close = difflib.get_close_matches(s.key, schema, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "see `launch/train.py --list-keys`"
            problems.append(_Problem(s.key, f"{s.where}: unknown key {s.key!r} ({hint})"))
            continue
        try:
            value = _coerce(s.value, schema[s.key][0])
        except ValueError as err:
            problems.append(_Problem(s.key, f"{s.where}: {s.key}={s.value!r}: {err}"))
            continue
        section, _, name = s.key.rpartition(".")
        setattr(_resolve(cfg, section), name, value)
        if not s.where.startswith(("variant ", "smoke preset")):
            where[s.key] = s.where
    return cfg, where, problems


def _resolve(obj: Any, dotted: str) -> Any:
    for part in filter(None, dotted.split(".")):
        obj = getattr(obj, part)
    return obj


@functools.cache
def _schema(cls: type = RunConfig, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Dotted key -> (type, docstring) of every leaf field, docstrings read from the class source."""
    hints = typing.get_type_hints(cls)
    docs = _attribute_docs(cls)
    out: dict[str, tuple[Any, str]] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_schema(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (tp, docs.get(f.name, ""))
    return out


def _attribute_docs(cls: type) -> dict[str, str]:
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())  # type: ignore[attr-defined]
    return docs


def _coerce(value: Any, tp: Any) -> Any:
    """Convert `value` (typed YAML or an override string) to `tp`; ValueError says what is expected."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)))
    if origin is Literal:
        if value not in args:
            raise ValueError(f"must be one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            except yaml.YAMLError as err:
                raise ValueError(f"is not a valid YAML list ({_yaml_problem(err)}); write "
                                 "[q_proj, v_proj] or q_proj,v_proj") from None
        if not isinstance(value, list) or not all(isinstance(v, str) and "\0" not in v for v in value):
            raise ValueError("must be a list of names, e.g. [q_proj, v_proj] or q_proj,v_proj")
        return [v.strip() for v in value]
    if tp is bool:
        return _coerce_bool(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError("must be a whole number")
        try:
            return int(value.strip()) if isinstance(value, str) else value
        except ValueError:
            raise ValueError("must be a whole number") from None
    if tp is float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number (not nan or inf)")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if "\0" in value:
            raise ValueError("must not contain a NUL character")
        return value
    raise TypeError(f"unsupported config type {tp}")  # a schema bug, not a user error


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError("must be true or false")


def _type_name(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return "|".join(map(str, args))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if typing.get_origin(tp) is list:
        return f"list[{_type_name(args[0])}]"
    return "None" if tp is type(None) else tp.__name__


def _parse_override(text: str) -> Setting:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"override {text!r} is not KEY=VALUE (e.g. optim.lr=2e-4)")
    return Setting(key.strip(), value.strip(), f"override {text!r}")


def _read_yaml(path_text: str) -> list[Setting]:
    """Settings of a YAML file, each with its file:line."""
    path = Path(path_text)
    if not _is_file(path):
        kind = "a directory, not a file" if _is_dir(path) else "no such file"
        raise UsageError(f"--config {path}: {kind}: name a YAML file, e.g. a run's config.yaml")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UsageError(f"--config {path}: cannot read it ({err.strerror})") from None
    text = utf8_text(raw, str(path), "save the file as UTF-8")
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        if root is None:
            return []
        if not isinstance(root, yaml.MappingNode):
            raise UsageError(f"{path}:{root.start_mark.line + 1}: the config must be a mapping of keys to values")
        settings = list(_walk_yaml(loader, root, "", path))
    except yaml.YAMLError as err:
        raise UsageError(f"{path}:{_yaml_line(err, text)}: invalid YAML: {_yaml_problem(err)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    first: dict[str, str] = {}
    for setting in settings:
        if setting.key in first:
            raise UsageError(f"{setting.where}: {setting.key} is set a second time (first at {first[setting.key]}): "
                             "keep one of them")
        first[setting.key] = setting.where
    return settings


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's account of `err` in one line (a reader error, a control character in the text, has no
    `problem`: its text says it, over two lines)."""
    return (getattr(err, "problem", None) or str(err)).splitlines()[0]


def _yaml_line(err: yaml.YAMLError, text: str) -> int:
    """The line of `text` that holds `err`: a parser's mark, or the reader's position in the text."""
    mark = getattr(err, "problem_mark", None)
    if mark is not None:
        return mark.line + 1
    return text[:getattr(err, "position", 0)].count("\n") + 1


def _walk_yaml(loader: yaml.SafeLoader, node: yaml.MappingNode, prefix: str, path: Path):
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        if isinstance(value_node, yaml.MappingNode):
            yield from _walk_yaml(loader, value_node, f"{key}.", path)
        else:
            yield Setting(key, loader.construct_object(value_node, deep=True), f"{path}:{key_node.start_mark.line + 1}")


def _flatten(tree: dict[str, Any], where: str, prefix: str = "") -> list[Setting]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _flatten(value, where, f"{prefix}{key}.")
        else:
            out.append(Setting(f"{prefix}{key}", value, where))
    return out


def _last(settings: list[Setting], key: str) -> Any:
    values = [s.value for s in settings if s.key == key]
    return values[-1] if values else None


def _join(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems in the configuration:\n" + "\n".join(f"  - {p}" for p in problems)
