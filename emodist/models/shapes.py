"""A model's shapes without its weights: its config (a local config.json, or the sizes the variants' bases
ship with), built on the meta device, every weight counted where it sits.

    shapes = model_shapes(cfg, num_labels=28)       # no download, no weight read
    shapes.linears, shapes.others, shapes.largest_layer

What the memory plan (`emodist.models.memory`) reads.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from emodist.config import RunConfig
from emodist.runtime.errors import UsageError


@dataclass
class Shapes:
    """What the plan reads of a model built on the meta device."""

    model_type: str
    hidden: int
    layers: int
    q_dim: int
    """Query width: heads x head_dim (Gemma's head_dim makes it differ from `hidden`)."""
    kv_dim: int
    intermediate: int
    linears: list[tuple[str, int, int]] = field(default_factory=list)
    """Every nn.Linear: (qualified name, in_features, out_features), bias folded into `others`."""
    others: list[tuple[str, int]] = field(default_factory=list)
    """Every other weight tensor (embeddings, norms, biases): (qualified name, elements)."""
    largest_layer: int = 0
    """The most weights one module holds itself (DeepSpeed's `largest_layer_params`)."""
    config: object = None
    """The transformers config the shapes were built from."""

    @property
    def input_embedding(self) -> int:
        """Weights of the input (word) embedding matrix."""
        return sum(n for name, n in self.others if name.endswith(("embed_tokens.weight", "word_embeddings.weight")))

    @property
    def total(self) -> int:
        return sum(i * o for _, i, o in self.linears) + sum(n for _, n in self.others)


def model_shapes(cfg: RunConfig, num_labels: int, source: str | None = None) -> Shapes:
    """The shapes of the model `cfg` trains (or of the base in the directory `source`), built on the meta
    device: no weight is read."""
    import torch
    from transformers import initialization
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    from emodist.models.builder import unreadable_file, what_does_not_load

    local = next((d for d in (source, None if cfg.smoke else cfg.model.name_or_path)
                  if d is not None and (Path(d) / "config.json").is_file()), None)
    try:
        config = model_config(cfg, num_labels, source)
        with torch.device("meta"), initialization.no_init_weights(), _without_zero3():
            model = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)](config)
    except Exception as err:
        if local is None or not (isinstance(err, OSError) or unreadable_file(Path(local), err)):  # shipped or smoke
            raise
        raise UsageError(f"model.name_or_path={local}: {what_does_not_load(Path(local), err)}") from None
    linears, others, largest = [], [], 0
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        largest = max(largest, own)
        if isinstance(module, torch.nn.Linear):
            linears.append((name, module.in_features, module.out_features))
            if module.bias is not None:
                others.append((f"{name}.bias", module.bias.numel()))
        else:
            others += [(f"{name}.{n}" if name else n, p.numel()) for n, p in module.named_parameters(recurse=False)]
    c = config
    hidden = getattr(c, "hidden_size", None) or c.dim
    heads = getattr(c, "num_attention_heads", None) or c.n_heads
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    kv = (getattr(c, "num_key_value_heads", None) or heads) * head_dim
    return Shapes(c.model_type, hidden, getattr(c, "num_hidden_layers", None) or c.n_layers, heads * head_dim, kv,
                  getattr(c, "intermediate_size", None) or c.hidden_dim, linears, others, largest, c)


@contextlib.contextmanager
def _without_zero3():
    """transformers' ZeRO-3 integration set aside: under a ZeRO-3 launch every model (and the base model a
    decoder's classifier builds with AutoModel.from_config) would be built inside DeepSpeed's zero.Init and
    its weights initialised, which meta tensors cannot do."""
    from transformers.integrations import deepspeed

    active = deepspeed._hf_deepspeed_config_weak_ref  # no public way to set it aside and back
    deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = active


def model_config(cfg: RunConfig, num_labels: int, source: str | None = None):
    """The model's config without its weights: `source`'s or a local directory's config.json, the shipped
    sizes of the variants' bases, or the smoke sizes. UsageError when none is known here."""
    from transformers import AutoConfig

    from emodist.config import variants
    from emodist.models.smoke import REAL_SIZES, SMOKE_VOCAB_SIZE, TINY_SIZES

    m = cfg.model
    labels = {"num_labels": num_labels, "problem_type": "multi_label_classification"}
    if source is not None and (Path(source) / "config.json").is_file():
        return AutoConfig.from_pretrained(source, **labels)
    if cfg.smoke:
        sizes = REAL_SIZES[m.architecture] if m.smoke_size == "real" else {"vocab_size": SMOKE_VOCAB_SIZE,
                                                                           **TINY_SIZES[m.architecture]}
        return AutoConfig.for_model(m.architecture, **sizes, **labels)
    if (Path(m.name_or_path) / "config.json").is_file():
        return AutoConfig.from_pretrained(m.name_or_path, **labels)
    shipped = {v.base_model for v in variants.VARIANTS.values() if v.settings["model"]["architecture"] == m.architecture}
    if m.name_or_path in shipped:
        return AutoConfig.for_model(m.architecture, **REAL_SIZES[m.architecture], **labels)
    raise UsageError(f"model.name_or_path={m.name_or_path}: its shapes are not known here (the variants' bases ship "
                     "theirs): point it at a local directory holding the model's config.json")
