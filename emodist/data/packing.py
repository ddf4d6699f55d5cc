"""Packed batches (data.packing): the texts of a batch laid end to end in rows, without padding between them.

A padded batch computes every text at the length of its longest text. A packed batch places the texts,
longest first, into rows as long as that longest text rounded up to a multiple of a few tokens (first
fit), so its rows hold the batch's real tokens and only the ends of some rows pad. Every token carries its position within its own text
(`position_ids` restart at 0 per text): that is how the model tells the texts of a row apart, so that
attention stays within each text (`emodist.models.packing`), and `pool_index` names the one token per
text the classification head reads.

A packed batch holds the same texts as the padded one, with their labels in the same order, so the
sampler, the loss, accumulation, sharding across ranks and resume are those of padded batches. Rows are
as wide as the padded batch but for that rounding, so each token's attention spans no more than padded.
"""

from __future__ import annotations

import numpy as np

PACKED_MULTIPLE = 16
"""Packed rows' width is rounded up to a multiple of this unless data.pad_to_multiple_of says otherwise.
Measured on minilm, 4,096 GoEmotions texts in random batches, a 2-core AMD EPYC with AVX512-BF16 (bf16
autocast, what train.mixed_precision=auto picks there), two alternating runs each:
exact widths (1) made the heap grow step after step to a peak RSS of 1,497-1,559 MiB, at 87-90 examples/s
(step medians 350-358 ms); 16 kept it at 1,144-1,151 MiB, at 92-104 examples/s (298-344 ms), on fewer tokens
(wider rows take more texts: 94% real against 92%). Fewer distinct shapes leave fewer odd-sized holes in a
heap that keeps freed memory (emodist.runtime.hostmem)."""

POOLS = ("first", "last")
"""Which token of a text the head reads: its first ([CLS]: BERT, DistilBERT) or its last (decoders: the
rightmost token that is not the pad token, as transformers' sequence classifiers pool a padded row)."""


class PackedCollator:
    """Packs a list of tokenized examples (input_ids, any other per-token field, labels) into one batch:

    input_ids, attention_mask (1: a token of a text, 0: the padding at a row's end), position_ids
    (restarting at 0 per text) and every other per-token field, shaped (rows, longest text rounded up to a
    multiple of `pad_to_multiple_of`, as padded batches are); pool_index,
    the flat index (row * length + column) of each text's pooled token, in the examples' order; labels
    (texts, labels), float.
    """

    def __init__(self, pad_id: int, pool: str, pad_to_multiple_of: int = 1):
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, not {pool!r}")
        self.pad_id = pad_id
        self.pool = pool
        self.multiple = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict:
        import torch

        ids = [np.asarray(f["input_ids"], dtype=np.int64) for f in features]
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        if not len(ids) or lengths.min() < 1:
            raise ValueError("a packed batch needs at least one text, and no empty one")
        width = -(-int(lengths.max()) // self.multiple) * self.multiple
        rows, starts = place(lengths, width)
        fields = [k for k in features[0] if k not in ("input_ids", "attention_mask", "labels")]
        batch = {"input_ids": np.full((rows, width), self.pad_id, dtype=np.int64)}
        batch.update({k: np.zeros((rows, width), dtype=np.int64) for k in (*fields, "attention_mask", "position_ids")})
        for i, (row, col) in enumerate(starts):
            span = slice(col, col + lengths[i])
            batch["input_ids"][row, span] = ids[i]
            batch["attention_mask"][row, span] = 1
            batch["position_ids"][row, span] = np.arange(lengths[i])
            for k in fields:
                batch[k][row, span] = features[i][k]
        out = {k: torch.from_numpy(v) for k, v in batch.items()}
        out["pool_index"] = torch.from_numpy(starts[:, 0] * width + starts[:, 1] + self._offsets(ids))
        out["labels"] = torch.tensor(np.asarray([f["labels"] for f in features], dtype=np.float32))
        return out

    def _offsets(self, ids: list[np.ndarray]) -> np.ndarray:
        """The pooled token's position within each text."""
        if self.pool == "first":
            return np.zeros(len(ids), dtype=np.int64)
        # the rightmost non-pad token, 0 when every token is the pad token (transformers' argmax over zeros)
        return np.array([int(np.flatnonzero(x != self.pad_id)[-1]) if (x != self.pad_id).any() else 0 for x in ids],
                        dtype=np.int64)


def place(lengths: np.ndarray, width: int) -> tuple[int, np.ndarray]:
    """First-fit decreasing: (row count, (row, column) of each text's first token) for texts of `lengths`
    laid into rows of `width` tokens, the longest first (ties in the given order), each into the first row
    with room left."""
    free: list[int] = []
    starts = np.zeros((len(lengths), 2), dtype=np.int64)
    for i in np.argsort(-lengths, kind="stable"):
        row = next((r for r, room in enumerate(free) if room >= lengths[i]), len(free))
        if row == len(free):
            free.append(width)
        starts[i] = (row, width - free[row])
        free[row] -= int(lengths[i])
    return len(free), starts
