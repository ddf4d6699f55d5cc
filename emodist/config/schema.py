"""The run configuration's schema: one dataclass per section, each field with its default and its
docstring (the docstrings are the reference: `launch/train.py --list-keys` prints them).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from emodist.config import rules
from emodist.runtime.errors import UsageError

Precision = Literal["auto", "no", "fp16", "bf16"]


Dtype = Literal["float32", "bfloat16", "float16"]


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
    packing: bool = False
    """Pack the texts of each training batch end to end into rows as long as its longest text, attention
    confined to each text: the same texts and logits as the padded batch (within float rounding), without
    its padding. Composes with group_by_length; with group_by_length=false the batches are random and still
    unpadded. The rows' width rounds up to pad_to_multiple_of (unset: 16: on a CPU, 25% less peak memory than
    exact widths and no slower). Evaluation batches stay padded (sorted by length, they pad little)."""
    pad_to_multiple_of: int | None = None
    """Batches pad to their longest text rounded up to a multiple of this. Unset: 8 on GPUs (tensor-core
    tiles), 1 on CPUs, where rounding up only adds work (measured on GoEmotions: 21% more tokens than the
    real ones at 8, 3% at 1); packed rows (data.packing): 16 on both."""
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
    loss: Literal["bce", "focal", "asl"] = "bce"
    """Training loss (emodist/train/losses.py): `bce` binary cross-entropy; `focal` focal loss (train.focal_gamma);
    `asl` asymmetric loss (train.asl_gamma_pos, train.asl_gamma_neg, train.asl_clip), which down-weights the
    easy negatives that dominate a many-label problem. The dev and test loss reported stays BCE."""
    focal_gamma: float = 2.0
    """Focusing exponent of train.loss=focal (0: BCE)."""
    asl_gamma_pos: float = 0.0
    """Focusing exponent of the positives with train.loss=asl."""
    asl_gamma_neg: float = 4.0
    """Focusing exponent of the negatives with train.loss=asl."""
    asl_clip: float = 0.05
    """Probability margin of train.loss=asl: a negative whose probability is below it costs nothing."""
    threshold_objective: Literal["f1_macro", "f1_micro", "jaccard_samples"] = "f1_macro"
    """What the per-label decision thresholds tuned on dev at the end maximise (emodist/scoring/thresholds.py):
    `f1_macro` (each label's own F1), `f1_micro` (F1 over all decisions) or `jaccard_samples` (each text's
    predicted set against its true set). summary.json shows all three at the chosen thresholds."""
    threshold_bootstrap: int = 30
    """Each per-label threshold is the mean of the thresholds tuned on this many resamples of the dev texts
    (0: the one tuned on dev itself). A rare label's best dev threshold rests on a handful of texts; the
    average moves less with them and carried better to unseen texts in every measurement so far
    (bench/RESULTS.md)."""
    mixed_precision: Precision = "auto"
    """Autocast precision of the forward pass (accelerate `mixed_precision`). `auto`: the base's own
    precision for a bfloat16/float16 base; otherwise bf16 where the hardware computes it natively
    (recent GPUs; CPUs with AVX512-BF16 or AMX), fp16 on older GPUs, else no (emulated bf16 matmuls on
    a plain AVX2 CPU run ~20x slower than float32). It decides over accelerate launch's --mixed_precision, which
    is refused when it asks for another precision."""
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
    """Save a resumable checkpoint every this many optimizer steps, and at each evaluation that beats the best dev
    F1 so far, so that the best one is kept (0: only at the end, and no best checkpoint)."""
    keep_last_checkpoints: int = 2
    """How many resumable checkpoints to keep; older ones are deleted after a newer one is complete."""
    compile: bool = False
    """Compile each repeated transformer block with torch.compile (inductor, dynamic shapes) in place
    (`nn.Module.compile`): dropout, GELU, LayerNorm and the residual adds run fused, and the names of the
    weights in checkpoints and the exported model do not change; resumes stay exact. The first steps wait for
    the compiler (6-23 s more per run for minilm on 2 CPU cores, measured). Measured on a 2-core AVX2 CPU: steps no faster (GEMMs
    are three quarters of them) and 7% less peak memory; GPUs, where the fused kernels matter more, are
    not measured yet (bench/RESULTS.md). Not under DeepSpeed."""
    check_memory: bool = True
    """On a GPU, refuse to start (before any weight is loaded) a run whose memory plan (launch/plan.py) needs more
    than the GPU has; false starts it anyway."""

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
            for key, message in rules.problems(self) if key not in skip
        ]
