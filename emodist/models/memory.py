"""Will this run fit? Its memory per process, from the model's shapes alone: no weights, no network.

    placement = Placement(processes=4, zero_stage=3, device="cuda", precision="bf16")   # emodist.models.placement
    planned = memory.plan(cfg, placement, num_labels=28)
    planned.peak_bytes, planned.rows, target.fits(planned)
    memory.advice(cfg, placement, 28, target)     # what to change, when it does not fit

The shapes come from the model's config (the variants' bases ship theirs: `emodist.models.smoke.REAL_SIZES`;
a local model directory gives its config.json); the model is built on the meta device to count every
weight where it sits. Per process (the main rank: every rank holds as much, or less):

- base weights: the frozen weights in their dtype, or 4-bit NF4 with its quantization constants (double
  quantization: one 8-bit scale per 64 weights, one float32 per 256 scales), or 8-bit with a float32
  scale per row; the weights bitsandbytes leaves unquantized become float32 (peft's k-bit preparation);
- trainable weights, their gradients and the optimizer states (AdamW: two float32 per weight; 8-bit:
  two bytes, with a float32 scale per 256, and float32 states for tensors under 4096 weights); DDP keeps a
  second copy of the gradients in its buckets;
- under DeepSpeed, DeepSpeed's own accounting, which its estimators use (`estimate_zero2_model_states_mem_needs`,
  `estimate_zero3_model_states_mem_needs`), per trainable weight: ZeRO-2 holds its 16-bit copy whole and
  splits 18 bytes over the processes (16- and 32-bit gradients, float32 master, Adam); ZeRO-3 splits all
  18 and gathers the largest layer whole (4 bytes a weight); offloaded parts move to the host; beyond what
  the estimators count, ZeRO-3 keeps up to stage3_max_live_parameters weights gathered (16 bits) for reuse;
- activations for one micro batch of `data.max_length` tokens (the longest batch), every layer's saved
  tensors, or with gradient checkpointing each layer's input and one layer recomputed; a 4-bit layer's
  weight dequantized for its matmul;
- what the framework holds besides: on a GPU, CUDA's context (outside torch's allocator) and the
  allocator's slack; on a CPU, the process itself (Python, torch and the HF libraries, the data).

The model is always the one `emodist.models.build_model` builds; the plan is an estimate, measured against
real runs in bench/RESULTS.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from emodist.config import RunConfig
from emodist.models.builder import is_head_parameter
from emodist.models.placement import Placement, Target
from emodist.models.shapes import Shapes, model_shapes
from emodist.runtime.errors import UsageError, format_bytes

CUDA_CONTEXT_BYTES = 600 * 2**20
"""CUDA's context and kernels on the GPU, outside torch's allocator (what nvidia-smi shows beyond it); a
common figure, not measured here: no GPU yet (bench/gpu_check.sh prints the plan beside the peak reserved)."""
CUDA_SLACK = 0.05
"""The caching allocator's reserved-but-unused share at the peak (fragmentation, rounding to blocks);
assumed, like CUDA_CONTEXT_BYTES, until a GPU run measures it."""
CPU_PROCESS_BYTES = 600 * 2**20
"""A training process's own memory on a CPU: Python, torch, transformers, accelerate, peft, the tokenizer and
the data (measured: see bench/RESULTS.md, "Memory plan")."""

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
"""Bytes per weight of a 4-bit NF4 Linear with double quantization (bitsandbytes' block sizes 64 and 256)."""
EMBEDDING_ROWS_READ = 32_000
"""Input-embedding rows a base mapped from its checkpoint reads on a CPU: an English text set's vocabulary."""
ADAM_8BIT_MIN = 4096
"""bitsandbytes keeps float32 states for tensors of fewer weights than this (its `min_8bit_size`)."""


@dataclass
class Row:
    name: str
    bytes: int
    note: str
    on_host: bool = False
    """Offloaded to the host's memory (DeepSpeed), not the device's."""


MODEL_STATES = ("base weights", "gathered layer", "trainable weights", "gradients", "DDP gradient buckets",
                "master weights", "optimizer states")
"""The rows that hold weights, gradients and optimizer states (what DeepSpeed's estimators count)."""


@dataclass
class MemoryPlan:
    rows: list[Row]
    placement: Placement
    params_total: int
    params_trainable: int
    model: str
    shapes: Shapes
    """What the plan was made from (advice re-plans changes from it, without building the model again)."""

    @property
    def peak_bytes(self) -> int:
        """The device memory a process needs at its peak (on a CPU: its resident memory)."""
        return sum(row.bytes for row in self.rows if not row.on_host)

    def model_states(self, on_host: bool = False) -> int:
        """Bytes of the MODEL_STATES rows on the device (or, `on_host`, offloaded to the host)."""
        return sum(row.bytes for row in self.rows if row.name in MODEL_STATES and row.on_host == on_host)

    @property
    def host_bytes(self) -> int:
        """What DeepSpeed offloads to the host, per process."""
        return sum(row.bytes for row in self.rows if row.on_host)

    def to_json(self) -> dict:
        return {"model": self.model, "placement": asdict(self.placement), "params_total": self.params_total,
                "params_trainable": self.params_trainable, "peak_bytes": self.peak_bytes,
                "host_bytes": self.host_bytes, "rows": [asdict(row) for row in self.rows]}


def plan(cfg: RunConfig, placement: Placement, num_labels: int, shapes: Shapes | None = None) -> MemoryPlan:
    """The memory plan of the run `cfg` describes, on `placement`, for a head of `num_labels` labels."""
    shapes = shapes or model_shapes(cfg, num_labels)
    m = cfg.model
    heads = [(n, i, o) for n, i, o in shapes.linears if is_head_parameter(n, m.head_modules)]
    body = [(n, i, o) for n, i, o in shapes.linears if not is_head_parameter(n, m.head_modules)]
    head_others = [(n, k) for n, k in shapes.others if is_head_parameter(n, m.head_modules)]
    if m.method == "lora":
        targets = [(n, i, o) for n, i, o in body if n.rsplit(".", 1)[-1] in m.lora.target_modules]
        trainable = [m.lora.r * i for _, i, _ in targets] + [m.lora.r * o for _, _, o in targets]
        trainable += [i * o for _, i, o in heads] + [k for _, k in head_others]  # modules_to_save: a copy
    else:  # every weight trains: there is no frozen base
        targets = []
        trainable = [i * o for _, i, o in shapes.linears] + [k for _, k in shapes.others]
    rows = _base_rows(cfg, placement, shapes, body) if m.method == "lora" else []
    rows += _trainable_rows(cfg, placement, shapes, trainable)
    rows += _activation_rows(cfg, placement, shapes, targets, body)
    rows += _overhead_rows(placement, sum(row.bytes for row in rows if not row.on_host))
    return MemoryPlan(rows, placement, shapes.total + (sum(trainable) if m.method == "lora" else 0),
                      sum(trainable), m.name_or_path, shapes)


def _base_rows(cfg: RunConfig, p: Placement, shapes: Shapes, body: list) -> list[Row]:
    """The frozen base: its weights where they sit on this process."""
    m = cfg.model
    linear = sum(i * o for _, i, o in body)
    rest = shapes.total - linear
    deepspeed_half = p.zero_stage is not None and p.precision in ("bf16", "fp16")
    if m.quantization == "none":
        width = 2 if deepspeed_half else DTYPE_BYTES[m.dtype]
        size, what = shapes.total * width, f"{shapes.total:,} weights in {_dtype_name(width)}"
        if p.device == "cpu" and p.zero_stage is None and shapes.input_embedding:
            # loaded in its stored dtype, the base stays mapped from the checkpoint: of the input embedding, only
            # the rows the texts use are read into memory (measured: Gemma-2B's 256,000 rows, bench/RESULTS.md)
            read = min(shapes.input_embedding, EMBEDDING_ROWS_READ * shapes.hidden)
            size -= (shapes.input_embedding - read) * width
            what += f" (of the input embedding, the {EMBEDDING_ROWS_READ:,} rows a text set uses at most)"
    else:
        per_weight = NF4_BYTES if m.quantization == "nf4" else 1.0
        scales = 0 if m.quantization == "nf4" else sum(4 * o for _, _, o in body)
        # peft's k-bit preparation makes every unquantized weight float32 (not under ZeRO-3: emodist skips it)
        rest_width = DTYPE_BYTES[m.compute_dtype] if p.zero_stage == 3 else 4
        size = int(linear * per_weight) + scales + rest * rest_width
        what = (f"{linear:,} Linear weights in {'4-bit NF4' if m.quantization == 'nf4' else '8-bit'}, "
                f"{rest:,} others in {_dtype_name(rest_width)}")
    if p.zero_stage == 3:
        return [Row("base weights", size // p.processes, what + f", split over {p.processes} processes",
                    on_host=p.offload_params)]
    return [Row("base weights", size, what)]


def _trainable_rows(cfg: RunConfig, p: Placement, shapes: Shapes, trainable: list[int]) -> list[Row]:
    """The trainable weights, their gradients and the optimizer's states."""
    count = sum(trainable)
    if p.zero_stage is not None:
        return _deepspeed_rows(p, shapes, count)
    optimizer = cfg.optim.name
    if optimizer.endswith("8bit"):
        states = sum(2 * n + 8 * math.ceil(n / 256) if n >= ADAM_8BIT_MIN else 8 * n for n in trainable)
    else:
        states = 8 * count
    paged = " (paged: may spill to the host)" if optimizer.startswith("paged") and p.device == "cuda" else ""
    rows = [Row("trainable weights", 4 * count, f"{count:,} in float32"),
            Row("gradients", 4 * count, "float32")]
    if p.processes > 1:
        rows.append(Row("DDP gradient buckets", 4 * count, "a second float32 copy, all-reduced"))
    rows.append(Row("optimizer states", states, f"{optimizer}: {'8-bit' if '8bit' in optimizer else 'float32'} "
                                               f"exp_avg and exp_avg_sq{paged}"))
    return rows


def _deepspeed_rows(p: Placement, shapes: Shapes, count: int) -> list[Row]:
    """DeepSpeed's accounting of the trainable weights' model states (what its estimators count)."""
    n = p.processes
    rows = []
    if p.zero_stage == 3:
        gathered = 4 * shapes.largest_layer
        rows.append(Row("gathered layer", gathered, f"the largest layer ({shapes.largest_layer:,} weights) whole "
                                                    "for its forward and backward (16-bit weights and gradients)"))
        # DeepSpeed keeps gathered weights for reuse (the recomputed forward, the backward) up to its limit;
        # its estimators leave them out (measured on CPU: Gemma-2B, 2 processes, 1e9 vs 1e8 live: +1.8 GiB)
        live = min(p.max_live_parameters, shapes.total - shapes.largest_layer)
        rows.append(Row("live gathered weights", 2 * live, f"{live:,} more weights kept gathered in 16 bits for "
                                                           "reuse (stage3_max_live_parameters)"))
        rows.append(Row("trainable weights", 2 * count // n, f"{count:,} in 16 bits, split over {n} processes",
                        on_host=p.offload_params))
    else:
        rows.append(Row("trainable weights", 2 * count, f"{count:,} in 16 bits"))
    offload = p.offload_optimizer
    # ZeRO-2 keeps 16-bit and float32 partitions of the gradients on the device, float32 only when offloaded;
    # ZeRO-3 counts 4 bytes a weight (DeepSpeed's estimators: 2P + 18P/N and 18P/N, offloads apart)
    grads = 6 if p.zero_stage == 2 and not offload else 4
    rows += [Row("gradients", grads * count // n, f"{grads} bytes a weight, split over {n}", on_host=offload),
             Row("master weights", 4 * count // n, f"float32, split over {n}", on_host=offload),
             Row("optimizer states", 8 * count // n, f"Adam, float32, split over {n}", on_host=offload)]
    return rows


def _activation_rows(cfg: RunConfig, p: Placement, shapes: Shapes, targets: list, body: list) -> list[Row]:
    """One micro batch of the longest length: what the backward pass needs kept, and the layer in flight."""
    m, tokens = cfg.model, cfg.train.micro_batch_size * cfg.data.max_length
    half_compute = p.precision in ("bf16", "fp16") or (m.dtype != "float32" and m.quantization == "none")
    # the residual stream runs in the weights' dtype (float32 weights promote a half matmul output back)
    if p.zero_stage is not None:
        stream_width = 2  # DeepSpeed casts the whole model to its half precision
    elif m.method == "full":
        stream_width = 4  # trainable weights are float32
    else:
        stream_width = DTYPE_BYTES[m.compute_dtype if m.quantization != "none" else m.dtype]
    stream, matmul = _saved_per_token(shapes)
    per_layer = stream * stream_width + matmul * (2 if half_compute else 4)
    if m.method == "lora":  # each target keeps its dropped-out input (dropout > 0) and the rank-r product
        kept = sum((i if m.lora.dropout > 0 else 0) + m.lora.r for _, i, _ in targets) / max(shapes.layers, 1)
        per_layer += int(kept * 4)  # peft computes the adapters in float32
    layer = tokens * per_layer
    batch = f"micro batch {cfg.train.micro_batch_size} x {cfg.data.max_length} tokens"
    if m.gradient_checkpointing:
        rows = [Row("activations", tokens * shapes.hidden * stream_width * shapes.layers + layer,
                    f"{batch}, gradient checkpointing: {shapes.layers} layer inputs and one layer recomputed")]
    else:
        rows = [Row("activations", layer * shapes.layers, f"{batch}, {shapes.layers} layers' saved tensors")]
    if half_compute and p.zero_stage is None:
        float32 = [i * o for n, i, o in shapes.linears if m.method == "full" or is_head_parameter(n, m.head_modules)]
        if float32:  # autocast casts each float32 weight once per forward; the backward keeps the copy
            rows.append(Row("autocast copies", 2 * sum(float32), "16-bit copies of the float32 Linear weights, "
                                                                  "kept from the forward for the backward"))
    if m.quantization != "none" and body:
        largest = max(i * o for _, i, o in body)
        rows.append(Row("dequantized weight", largest * DTYPE_BYTES[m.compute_dtype],
                        "a quantized layer's weight, dequantized for its matmul"))
    return rows


def _saved_per_token(s: Shapes) -> tuple[int, int]:
    """Elements one layer keeps per token for its backward pass (attention through sdpa: no L^2 scores), as
    (on the residual stream, from the matmuls)."""
    if s.model_type in ("gemma", "mistral", "llama", "qwen2"):
        # stream: the residual and the 2 RMSNorm inputs; matmuls: the 2 norm outputs, q, k, v before and after
        # rotary, the attention output, the 4 SwiGLU tensors (gate, up, act(gate), their product)
        return 3 * s.hidden, 2 * s.hidden + 3 * s.q_dim + 3 * s.kv_dim + 4 * s.intermediate
    # BERT-like: stream: the attention input and the 2 LayerNorms' inputs and output; matmuls: q, k, v, the
    # attention output, the dense input, the FFN's input, GELU's input and output
    return 4 * s.hidden, 5 * s.hidden + 2 * s.intermediate


def _overhead_rows(p: Placement, subtotal: int) -> list[Row]:
    if p.device == "cuda":
        return [Row("allocator slack", int(CUDA_SLACK * subtotal), f"{CUDA_SLACK:.0%} of the above, reserved "
                                                                  "by torch's caching allocator"),
                Row("CUDA context", CUDA_CONTEXT_BYTES, "kernels and context, outside torch's allocator")]
    return [Row("process", CPU_PROCESS_BYTES, "Python, torch, the HF libraries, tokenizer and data")]


def _dtype_name(width: int) -> str:
    return {4: "float32", 2: "16 bits"}[width]


def label_count(cfg: RunConfig) -> int:
    """Labels of the head, known without reading the data: GoEmotions' 28, the synthetic set's; else 28."""
    from emodist.data import SYNTHETIC_CUES

    return len(SYNTHETIC_CUES) if cfg.data.dataset == "synthetic" else 28


def advice(cfg: RunConfig, placement: Placement, num_labels: int, target: Target,
           shapes: Shapes | None = None) -> list[dict]:
    """What to change so that the run fits `target`, each change alone, re-planned: [{"change", "peak_bytes",
    "fits"}], those that fit first, and in each group the change that costs least first (checkpointing,
    a smaller micro batch, an 8-bit optimizer, ZeRO-3 over the processes, a 4-bit base, offload to the host).
    `shapes`: the model's, when a plan has them already (`MemoryPlan.shapes`)."""
    import dataclasses

    shapes = shapes or model_shapes(cfg, num_labels)
    options = []

    def option(change: str, new_cfg: RunConfig | None = None, new_placement: Placement | None = None) -> dict:
        planned = plan(new_cfg or cfg, new_placement or placement, num_labels, shapes)
        return {"change": change, "peak_bytes": planned.peak_bytes, "fits": target.fits(planned)}

    def tried(change: str, new_cfg: RunConfig | None = None, new_placement: Placement | None = None) -> None:
        options.append(option(change, new_cfg, new_placement))

    def with_(section: str, **values) -> RunConfig:
        return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})

    if not cfg.model.gradient_checkpointing:
        tried("model.gradient_checkpointing=true", with_("model", gradient_checkpointing=True))
    micro = cfg.train.micro_batch_size
    while micro > 1:  # the largest micro batch that fits, or 1
        micro //= 2
        smaller = option(f"train.micro_batch_size={micro} (accumulation keeps the global batch)",
                         with_("train", micro_batch_size=micro))
        if smaller["fits"] or micro == 1:
            options.append(smaller)
            break
    if placement.zero_stage is None and cfg.optim.name in ("adamw", "paged_adamw"):
        tried("optim.name=adamw_8bit", with_("optim", name="adamw_8bit"))
    if placement.processes > 1 and placement.zero_stage != 3 and cfg.model.quantization != "int8":
        tried("--config_file accelerate_configs/deepspeed_zero3.yaml",
              new_placement=dataclasses.replace(placement, zero_stage=3))
    if cfg.model.method == "lora" and cfg.model.quantization == "none" and placement.zero_stage is None:
        tried("model.quantization=nf4 (QLoRA)", with_("model", quantization="nf4"))
    if placement.device == "cuda" and cfg.model.quantization == "none" and not placement.offload_optimizer:
        tried("--config_file accelerate_configs/deepspeed_zero3_offload.yaml",
              new_placement=dataclasses.replace(placement, zero_stage=3, offload_optimizer=True, offload_params=True))
    return sorted(options, key=lambda o: not o["fits"])  # those that fit first, each group cheapest first


def verdict(planned: MemoryPlan, target: Target) -> str:
    """One line: whether `planned` fits `target`, by how much."""
    room = target.room(planned.placement)
    shared = f" ({format_bytes(target.capacity)} shared by {planned.placement.per_node} processes)" if (
        target.device == "cpu" and planned.placement.per_node > 1) else ""
    where = f"{format_bytes(room)} of {target.source}{shared}"
    if target.fits(planned):
        return (f"fits: {format_bytes(planned.peak_bytes)} per process of {where} "
                f"({format_bytes(room - planned.peak_bytes)} to spare)")
    return (f"does not fit: {format_bytes(planned.peak_bytes)} per process, "
            f"{format_bytes(planned.peak_bytes - room)} more than {where}")


def check_fits(cfg: RunConfig, planned: MemoryPlan, target: Target, num_labels: int) -> None:
    """UsageError, in one line naming the change that makes it fit, when `planned` does not fit `target`."""
    if target.fits(planned):
        return
    fixes = [option["change"] for option in advice(cfg, planned.placement, num_labels, target, planned.shapes)
             if option["fits"]]
    fix = f"it fits with {fixes[0]}" if fixes else "no single change makes it fit"
    raise UsageError(f"the memory plan {verdict(planned, target)}: {fix} (python launch/plan.py shows the plan "
                     "and every option); train.check_memory=false starts it anyway")
