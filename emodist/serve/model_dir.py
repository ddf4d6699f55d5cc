"""A trained model's directory (`model/` of a run, or an export): written in the HF layout at the end of
training, and read back the way the run computed.

    export_model(accelerator, model, tokenizer, run_dir / "model", cfg)   # at the end of training
    model, tokenizer = load_trained("runs/x/model")                       # predict, export, tests

A full fine-tune is a `save_pretrained` directory (sharded safetensors, id2label in config.json); a LoRA
run is its adapter with the head, plus the base's config.json carrying the labels. The tokenizer is saved
in both.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from emodist.config import RunConfig
from emodist.models.builder import load_pretrained, load_tokenizer, one_4bit_kernel
from emodist.runtime.errors import (
    NoSpace,
    UsageError,
    format_bytes,
    free_bytes,
    out_of_space,
)
from emodist.runtime.files import free_name, open_to_umask


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
    from transformers import AutoConfig, AutoModelForSequenceClassification

    tokenizer = load_tokenizer(str(model_dir), setting=None)
    adapter_file = model_dir / "adapter_config.json"
    if not adapter_file.exists():
        _check_weights(model_dir)
        model = load_pretrained(AutoModelForSequenceClassification.from_pretrained, str(model_dir), setting=None)
        return model.to(device).eval(), tokenizer

    from peft import PeftModel
    from transformers import BitsAndBytesConfig

    base = _own_base(model_dir, json.loads(adapter_file.read_text(encoding="utf-8"))["base_model_name_or_path"])
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
    model = load_pretrained(AutoModelForSequenceClassification.from_pretrained, base, f"{adapter_file}: base_model_name_or_path",
                            config=config, dtype=dtype, **kwargs)
    if quantization:
        one_4bit_kernel(model)  # the scores the run reported, not those of bitsandbytes' CPU inference kernel
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = PeftModel.from_pretrained(model, model_dir)
    return (model.eval() if quantization else model.to(device).eval()), tokenizer


def _own_base(model_dir: Path, base: str) -> str:
    """The base of a run's adapter: a tiny --smoke run keeps its base beside model/ (smoke-base/), and
    adapter_config.json names it by its path when it was trained. A run moved since (`--overwrite` moves it
    aside, a copy elsewhere) reads its own base there, not what that path holds now: another run's base of the
    same shapes loaded without a word, and the moved run predicted with it."""
    own = model_dir.parent / "smoke-base"
    return str(own) if Path(base).name == own.name and own.is_dir() else base


def _check_weights(model_dir: Path) -> None:
    """UsageError when `model_dir` holds no weights file transformers reads (one file, or a sharded one's index;
    transformers would name the directory as if it were model.name_or_path), naming what is there instead: an
    ONNX graph without its export.json, or nothing."""
    from transformers.utils import (
        SAFE_WEIGHTS_INDEX_NAME,
        SAFE_WEIGHTS_NAME,
        WEIGHTS_INDEX_NAME,
        WEIGHTS_NAME,
    )

    if any((model_dir / name).is_file() for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME,
                                                     WEIGHTS_INDEX_NAME)):
        return
    if (model_dir / "model.onnx").is_file():
        raise UsageError(f"{model_dir}: holds model.onnx but no export.json naming it, so it is no ONNX export "
                         "emodist serves: export it again from its run directory (launch/export.py RUN --onnx)")
    raise UsageError(f"{model_dir}: no weights there (no {SAFE_WEIGHTS_NAME} or {WEIGHTS_NAME}, nor a shard index): the "
                     "model is incomplete; export it again from its run directory")


def export_model(accelerator, model, tokenizer, directory: Path, cfg: RunConfig) -> list[str]:
    """Write the trained model in HF format to `directory` (gathers on every rank, writes on rank 0); the
    names of the files of an earlier `directory` that emodist did not write, kept in the new one.

    Full fine-tune: `save_pretrained` with sharded safetensors (export.max_shard_size).
    LoRA: `adapter_config.json` + `adapter_model.safetensors` (the head included, via modules_to_save),
    and the base's config.json carrying id2label/label2id. The tokenizer is saved in both cases.
    """
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # under ZeRO-3 every rank takes part in the gather
    if accelerator.is_main_process:
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # left by an attempt killed while exporting
        try:
            _save_pretrained(accelerator.unwrap_model(model), tokenizer, tmp, state_dict, cfg)
            open_to_umask(tmp)
        except Exception as err:  # noqa: BLE001 - a full disk surfaces as OSError, RuntimeError or SafetensorError
            if not out_of_space(err, tmp):
                raise
            free = free_bytes(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            raise NoSpace(f"no space left on the disk of {directory} while exporting the model ({format_bytes(free)} "
                          "were free); the partial export was removed and the final checkpoint is kept: free some "
                          "space, then run the same command with --resume auto to export it") from err
        kept = _replace_model_files(directory, tmp) if directory.exists() else []
        if not directory.exists():
            tmp.rename(directory)
    accelerator.wait_for_everyone()
    return kept if accelerator.is_main_process else []


MODEL_FILE = re.compile(r"(model|pytorch_model|adapter_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)(\.index\.json)?"
                        r"|(config|generation_config|adapter_config|tokenizer(_config)?|special_tokens_map|added_tokens"
                        r"|thresholds)\.json|tokenizer\.model|vocab\.(txt|json)|merges\.txt|chat_template\.jinja")
"""The files emodist writes in a model/ directory: what save_pretrained writes (the weights, an earlier
export's shards among them), the tokenizer's, and thresholds.json."""


def model_files(names) -> list[str]:
    """Those of `names` (files of a model/ directory) that emodist wrote there (MODEL_FILE); a user's own files
    (notes, a predict output) are not among them."""
    return [name for name in names if MODEL_FILE.fullmatch(name)]


def _replace_model_files(directory: Path, new: Path) -> list[str]:
    """Put the files of the fresh export `new` in place of the model's files of `directory`, the earlier export
    (its thresholds.json too: the finish writes the new weights' after), and remove `new`; the names of the
    files left in `directory` that emodist did not write. Those stay where they are throughout: a stop part
    way leaves them, and the final checkpoint exports the model again. A README.md there other than the card
    written now (a LoRA model's) stays where it is when it is the user's own; an earlier finish's card (an older
    emodist's, or one edited since) is replaced and kept beside as README.earlier.md; peft's template is replaced."""
    card, earlier = new / "README.md", directory / "README.md"
    if card.is_file() and earlier.is_file() and earlier.read_bytes() != card.read_bytes():
        text = earlier.read_text(encoding="utf-8", errors="replace")
        if ADAPTER_CARD_HEADING in text:
            earlier.rename(free_name(directory / "README.earlier.md", lambda n: directory / f"README.earlier-{n}.md"))
        elif PEFT_TEMPLATE not in text:
            card.unlink()
    written = {p.name for p in new.iterdir()}
    for name in {*model_files(p.name for p in directory.iterdir()), *written}:
        target = directory / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    for name in written:
        (new / name).rename(directory / name)
    new.rmdir()
    return sorted({p.name for p in directory.iterdir()} - written)


ADAPTER_CARD_HEADING = "# A LoRA adapter of an emodist run"
PEFT_TEMPLATE = "# Model Card for Model ID"
"""The heading of peft's empty model card, which emodist kept in model/ before it wrote its own."""


def adapter_card(cfg: RunConfig) -> str:
    """README.md of a LoRA model/: what the directory holds and how to load it (peft alone loads the base
    without the classifier's labels, and transformers alone does not read an adapter directory)."""
    from emodist.serve.card import QUANTIZED

    quantization = cfg.model.quantization
    bnb = {"nf4": "load_in_4bit=True, bnb_4bit_quant_type=\"nf4\",\n        bnb_4bit_use_double_quant=True, "
                  f"bnb_4bit_compute_dtype=torch.{cfg.model.compute_dtype}", "int8": "load_in_8bit=True"}.get(quantization)
    quantized = f",\n    quantization_config=BitsAndBytesConfig({bnb})" if bnb else ""
    name = cfg.model.name_or_path  # the hub lists an adapter under its base by this; a local path names none there
    base = f"base_model: {name}\n" if not cfg.smoke and not Path(name).is_absolute() and not Path(name).exists() else ""
    return f"""---
{base}library_name: peft
tags: [emodist, lora, multi-label-classification]
---

{ADAPTER_CARD_HEADING} ({cfg.variant})

The run's adapter (`adapter_model.safetensors`, `adapter_config.json`, whose base_model_name_or_path names
the base{f", trained on it loaded in {QUANTIZED[quantization]}" if bnb else ""}), the classifier's `config.json` (its labels, id2label,
problem_type), the tokenizer, and `thresholds.json`, the per-label thresholds tuned on dev.

- emodist: `python launch/predict.py THIS_DIRECTORY "I can't believe it worked!"`.
- One standalone model that `transformers.pipeline` loads (the adapter merged into its base):
  `python launch/export.py RUN_DIRECTORY`.
- peft: the base needs the classifier's labels, which the base alone does not have:

```python
{"import torch" + chr(10) if quantization == "nf4" else ""}from peft import AutoPeftModelForSequenceClassification
from transformers import AutoConfig{", BitsAndBytesConfig" if bnb else ""}

path = "THIS_DIRECTORY"
labels = AutoConfig.from_pretrained(path)
model = AutoPeftModelForSequenceClassification.from_pretrained(
    path, num_labels=labels.num_labels, id2label=labels.id2label, label2id=labels.label2id,
    problem_type=labels.problem_type{quantized})   # a sigmoid per label: torch.sigmoid(model(**inputs).logits)
```
"""


def _save_pretrained(unwrapped, tokenizer, directory: Path, state_dict: dict, cfg: RunConfig) -> None:
    if cfg.model.method == "lora":
        unwrapped.save_pretrained(directory, state_dict=state_dict)
        base = unwrapped.get_base_model()
        base.config.architectures = [type(base).__name__]  # the classifier, not the checkpoint it came from
        base.config.save_pretrained(directory)
        (directory / "README.md").write_text(adapter_card(cfg), encoding="utf-8")  # in place of peft's empty template
    else:
        unwrapped.save_pretrained(directory, state_dict=state_dict, max_shard_size=cfg.export.max_shard_size)
    save_tokenizer(tokenizer, directory, cfg.data.max_length)


def save_tokenizer(tokenizer, directory: Path, max_length: int, input_names: list[str] | None = None) -> None:
    """Save `tokenizer` as its model is served: model_max_length the run's max_length (what `pipeline(...,
    truncation=True)` reads), and a tokenizer.json that cuts texts there, unpadded. Readers of tokenizer.json alone
    (transformers.js, Rust servers, ONNX Runtime users) apply what it says, and it held the settings of the
    tokenizer's last call: a training batch's, or none (an ONNX export crashed past 512 tokens). `input_names`: the
    inputs its model takes (an ONNX graph takes no token_type_ids). The tokenizer in use is left as it was."""
    kept = tokenizer.model_max_length, tokenizer.model_input_names, dict(tokenizer.init_kwargs)
    tokenizer.model_max_length = max_length
    if input_names is not None:
        tokenizer.model_input_names = tokenizer.init_kwargs["model_input_names"] = list(input_names)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and max_length < 10**6:  # transformers sets them again at every call: nothing else changes
        backend.enable_truncation(max_length=max_length)
        backend.no_padding()
    try:
        tokenizer.save_pretrained(directory)
    finally:
        tokenizer.model_max_length, tokenizer.model_input_names, tokenizer.init_kwargs = kept
