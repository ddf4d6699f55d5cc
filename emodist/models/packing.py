"""Packed batches in the model (data.packing; `emodist.data.packing` builds them).

    models.accept_packed(model)          # once, before accelerate.prepare
    logits = model(**packed_batch).logits  # one row of logits per text, as for a padded batch

A packed row holds several texts. `accept_packed` gives the classifier instance a forward that, when
called with `pool_index`, runs the base model with an attention mask confined to each text (the texts
are told apart by their `position_ids`, which restart at 0 per text; decoders' masks are causal within
each text too), reads each text's pooled token from the last hidden states and applies the classifier's
own head to it: BERT's pooler and classifier over [CLS], DistilBERT's pre_classifier, ReLU and
classifier over the first token, Gemma's and Mistral's score over the last token. Any other call is the
class's own forward. The forward is an attribute of the instance, so parameter names, state dicts,
checkpoints and `save_pretrained` do not change, and it runs inside whatever wraps the model (LoRA, DDP,
DeepSpeed, autocast).

The mask is the block-diagonal (rows, 1, length, length) mask transformers takes as-is: booleans for
the sdpa attention (on CPUs and GPUs), additive floats for the eager one.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from emodist.runtime.errors import UsageError

POOL = {"bert": "first", "distilbert": "first", "gemma": "last", "mistral": "last"}
"""Which token of a text each architecture's head reads (`emodist.data.packing.POOLS`)."""

CAUSAL = {"gemma", "mistral"}

MASKS = ("sdpa", "eager")
"""The attention implementations a ready 4D mask works with."""


def accept_packed(model: torch.nn.Module) -> None:
    """Let `model` (a transformers sequence classifier of one of POOL's architectures, or a PeftModel
    around one) take packed batches; UsageError naming why when it cannot."""
    classifier = model.get_base_model() if hasattr(model, "get_base_model") else model
    kind = classifier.config.model_type
    if kind not in POOL:
        raise UsageError(f"data.packing=true: packed batches are built for {', '.join(POOL)} models, not "
                         f"{kind}: set data.packing=false")
    attention = classifier.config._attn_implementation
    if attention not in MASKS:
        raise UsageError(f"data.packing=true: the model computes attention with {attention}, which takes no "
                         f"block-diagonal mask; packing works with {' or '.join(MASKS)}: set data.packing=false")
    classifier.forward = types.MethodType(_forward, classifier)


def _forward(self, *args, pool_index: torch.Tensor | None = None, **kwargs):
    if pool_index is None:
        return type(self).forward(self, *args, **kwargs)
    from transformers.modeling_outputs import SequenceClassifierOutput

    return SequenceClassifierOutput(logits=packed_logits(self, pool_index, **kwargs))


def packed_logits(classifier, pool_index: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  position_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    """(texts, labels) logits of a packed batch: the base model under a per-text mask, the head over each
    text's pooled token. Keyword arguments that are None (what PeftModel passes on) are left out."""
    config = classifier.config
    mask = block_mask(attention_mask, position_ids, causal=config.model_type in CAUSAL,
                      window=getattr(config, "sliding_window", None), eager=config._attn_implementation == "eager",
                      dtype=classifier.get_input_embeddings().weight.dtype)
    extra = {k: v for k, v in kwargs.items() if v is not None and k not in ("labels", "return_dict")}
    hidden = classifier.base_model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                   **extra).last_hidden_state
    pooled = hidden.flatten(0, 1)[pool_index]
    kind = config.model_type
    if kind == "bert":
        return classifier.classifier(classifier.dropout(classifier.bert.pooler(pooled[:, None])))
    if kind == "distilbert":
        return classifier.classifier(classifier.dropout(F.relu(classifier.pre_classifier(pooled))))
    return classifier.score(pooled)


def block_mask(attention_mask: torch.Tensor, position_ids: torch.Tensor, causal: bool, window: int | None,
               eager: bool, dtype: torch.dtype) -> torch.Tensor:
    """(rows, 1, length, length) mask letting each token attend to the tokens of its own text only (and, if
    `causal`, to those before it, within `window` tokens back when that is set): booleans, or for the eager
    attention 0 where attended and dtype's lowest value elsewhere. A text starts at each position_id 0;
    the padding at a row's end attends to the padding, so no row of the softmax is empty."""
    real = attention_mask.bool()
    text = torch.where(real, torch.cumsum((position_ids == 0) & real, dim=1), 0)
    allowed = text[:, :, None] == text[:, None, :]
    if causal or window:
        at = torch.arange(text.shape[1], device=text.device)
        back = at[:, None] - at[None, :]  # query position - key position
        if causal:
            allowed &= back >= 0
        if window:
            allowed &= back < window
    allowed = allowed[:, None]
    if not eager:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
