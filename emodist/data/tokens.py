"""Tokenized splits (cached on disk by the fingerprints of their texts and tokenizer) and their batches.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from emodist.data.sets import EmotionData, _fingerprint
from emodist.runtime.errors import UsageError
from emodist.runtime.files import cache_root


def tokenize(data: EmotionData, tokenizer, max_length: int, cache_dir: str | None, accelerator) -> dict:
    """Tokenized `datasets.Dataset` per split (the tokenizer's model inputs and float labels), cached.

    The cache key covers the tokenizer, max_length, texts and targets, so a cached split is reused only
    for exactly the same input. The local main process tokenizes first and the others read its cache.
    """
    import datasets

    root = cache_root(cache_dir) / "tokenized"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"the tokenization cache {root} cannot be created ({err.strerror}): set data.cache_dir (or "
                         "$EMODIST_CACHE) to a writable directory") from None
    tokenizer_id = _tokenizer_fingerprint(tokenizer)

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    out = {}
    with accelerator.local_main_process_first():
        for split, part in data.splits.items():
            key = _fingerprint(tokenizer_id, str(max_length), *part.texts, part.targets.tobytes())
            raw = datasets.Dataset.from_dict({"text": part.texts, "labels": part.targets.tolist()})
            cached = root / f"{split}-{key}.arrow"

            def tokenized(raw=raw, cached=cached, key=key, split=split):
                return raw.map(encode, batched=True, batch_size=1000, remove_columns=["text"],
                               cache_file_name=str(cached), new_fingerprint=key, desc=f"tokenize {split}")
            try:
                out[split] = tokenized()
            except Exception as err:  # noqa: BLE001 - pyarrow's errors of a damaged file have no common base
                if not cached.is_file():
                    raise
                print(f"emodist: the cached tokens {cached} do not read ({type(err).__name__}): tokenizing again",
                      file=sys.stderr)
                cached.unlink()  # ours, and derived: the texts are tokenized again into it
                out[split] = tokenized()
    return out


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        state = repr(sorted(tokenizer.get_vocab().items()))
    else:  # truncation and padding are per-call settings the backend keeps from its last call
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        state = json.dumps(state, sort_keys=True)
    return _fingerprint(state, type(tokenizer).__name__, str(tokenizer.padding_side))


def collator(tokenizer, pad_to_multiple_of: int = 8):
    """Pads a list of tokenized examples to the longest, rounded up to a multiple of `pad_to_multiple_of`."""
    from transformers import DataCollatorWithPadding

    multiple = pad_to_multiple_of if pad_to_multiple_of > 1 else None
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple, return_tensors="pt")


def lengths(dataset) -> np.ndarray:
    """Token count of every example of a tokenized split (read from the Arrow column, no decoding)."""
    import pyarrow.compute as pc

    column = dataset.with_format("arrow")[:]["input_ids"]
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
