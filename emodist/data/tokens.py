"""Tokenized splits (cached on disk by the fingerprints of their texts and tokenizer) and their batches.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from emodist.data.sets import EmotionData, _fingerprint
from emodist.runtime import files
from emodist.runtime.errors import (
    NOT_WRITABLE_ERRNOS,
    NoSpace,
    UsageError,
    format_bytes,
    free_bytes,
    out_of_space,
)
from emodist.runtime.files import cache_root


def tokenize(data: EmotionData, tokenizer, max_length: int, cache_dir: str | None, accelerator) -> dict:
    """Tokenized `datasets.Dataset` per split (the tokenizer's model inputs and float labels), cached.

    The cache key covers the tokenizer, max_length, texts and targets, so a cached split is reused only
    for exactly the same input, and only while its file matches the checksum written beside it (a file that
    was damaged or edited is tokenized again). The local main process tokenizes first and the others read its
    cache.
    """
    import datasets

    root = cache_root(cache_dir) / "tokenized"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if err.errno not in NOT_WRITABLE_ERRNOS:  # a read-only one: tokenized in memory below
            raise UsageError(f"the tokenization cache {root} cannot be created ({err.strerror}): set data.cache_dir "
                             "(or $EMODIST_CACHE) to a writable directory") from None
    tokenizer_id = _tokenizer_fingerprint(tokenizer)
    writable = os.access(root, os.W_OK)  # a shared read-only cache is read as it is: no checksum can be kept there

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    out, said = {}, False
    with accelerator.local_main_process_first():
        for split, part in data.splits.items():
            key = _fingerprint(tokenizer_id, str(max_length), *part.texts, part.targets.tobytes())
            raw = datasets.Dataset.from_dict({"text": part.texts, "labels": part.targets.tolist()})
            cached = root / f"{split}-{key}.arrow"
            problem = _unverified(cached) if writable and cached.is_file() else None  # a damaged file may still read
            if problem:
                print(f"emodist: the cached tokens {cached} {problem}: tokenizing again", file=sys.stderr)
            kept = writable or cached.is_file()  # a read-only cache without these tokens: tokenized in memory
            if not kept and not said:
                print(f"emodist: the tokenization cache {root} is read-only and lacks this run's tokens: tokenizing "
                      "in memory (set data.cache_dir to a writable directory to keep them)", file=sys.stderr)
                said = True
            try:  # tokenized again, datasets writes a new file and renames it over the old: a launch reading it is safe
                out[split] = raw.map(encode, batched=True, batch_size=1000, remove_columns=["text"],
                                     cache_file_name=str(cached) if kept else None, keep_in_memory=not kept,
                                     load_from_cache_file=not problem, new_fingerprint=key, desc=f"tokenize {split}")
            except Exception as err:
                if isinstance(err, OSError) and err.errno in NOT_WRITABLE_ERRNOS:
                    raise UsageError(f"the tokenization cache {root} cannot be written ({err.strerror}): set "
                                     "data.cache_dir (or $EMODIST_CACHE) to a writable directory") from None
                if not out_of_space(err, root):
                    raise
                raise NoSpace(f"no space left for the tokenization cache {root} ({format_bytes(free_bytes(root))} "
                              "free there): free some space, or set data.cache_dir (or $EMODIST_CACHE) to a disk "
                              "with room") from None
            if writable and (problem or not _checksum(cached).is_file()):  # what a later launch checks it against
                files.write_text_atomic(_checksum(cached), files.sha256_of(cached) + "\n")
    return out


def _checksum(cached: Path) -> Path:
    return cached.with_suffix(".sha256")


def _unverified(cached: Path) -> str | None:
    """Why the cached tokens cannot be trusted (a file that reads can still hold other tokens), or None."""
    try:
        expected = _checksum(cached).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        expected = ""
    if not expected:
        return "carry no checksum (an older emodist wrote them, or it was killed writing them)"
    if files.sha256_of(cached) != expected:
        return "changed since they were written (they no longer match their checksum)"
    return None


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
