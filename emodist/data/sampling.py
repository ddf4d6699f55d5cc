"""Batches of similar lengths: less padding, the same examples.

Padding to the longest text of a random batch wastes about half the compute on GoEmotions (its texts
run from 3 to 50+ tokens). `LengthGroupedBatches` takes the epoch's random order, cuts it into
mega-batches of `group_size` steps, sorts each mega-batch by length and slices it into micro-batches,
so a batch pads to a length close to that of every text in it; then it shuffles the steps. The step
holding the longest batch goes first, so a run that would run out of memory does so at once.

Distributed: the sampler yields the micro-batches of all ranks, the `num_processes x accumulation`
batches of one optimizer step next to each other; accelerate's `BatchSamplerShard` deals batch i to
rank i % num_processes. The count of batches is a multiple of that, so no rank needs a repeated example
(every example is seen exactly once per epoch across the ranks), and one process accumulating two
batches trains on the same steps as two processes. The order depends on (seed, epoch) only, so a
resumed run that skips the batches it already trained on sees the same batches as the uninterrupted run.

`by_length` orders evaluation and inference: one sorted pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

GROUP_SIZE = 50
"""Steps per mega-batch (the transformers LengthGroupedSampler's factor): large enough for little
padding, small enough that the length order does not bias a stretch of training."""


class LengthGroupedBatches:
    """Micro-batches of indices into `lengths`, grouped by length (or in random order, `group=False`).

    `batch_size=None` tells accelerate the batches may differ in size: the last mega-batch is split
    into near-equal batches so that their count is a multiple of `per_step`.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, num_processes: int = 1, accumulation: int = 1,
                 seed: int = 0, group: bool = True, group_size: int = GROUP_SIZE):
        self.per_step = num_processes * accumulation
        """Micro-batches per optimizer step, over all ranks."""
        if len(lengths) < self.per_step:
            raise ValueError(f"{len(lengths)} examples cannot fill the {self.per_step} micro-batches of one step "
                             f"({num_processes} processes x {accumulation} accumulated)")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.num_processes = num_processes
        self.micro_batch_size = batch_size
        self.batch_size = None  # accelerate: variable-size batches, shard them whole
        self.seed = seed
        self.group = group
        self.mega = batch_size * self.per_step * group_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch over all ranks (a multiple of per_step)."""
        return sum(len(part) for part in self._plan(np.arange(len(self.lengths))))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        groups = []
        for mega in self._megabatches(order):
            if self.group:  # stable sort: ties keep the random order
                mega = mega[np.argsort(-self.lengths[mega], kind="stable")]
            batches = self._split(mega)
            steps = [batches[i:i + self.per_step] for i in range(0, len(batches), self.per_step)]
            groups.append(steps)
        if self.group:
            # the longest step first; the rest of the steps in a random order across and within mega-batches
            steps = [step for mega in groups for step in mega]
            longest = max(range(len(steps)), key=lambda i: int(self.lengths[steps[i][0]].max()))
            rest = [steps[i] for i in rng.permutation(len(steps)) if i != longest]
            steps = [steps[longest], *rest]
        else:
            steps = [step for mega in groups for step in mega]
        for step in steps:
            for batch in step:
                yield batch.tolist()

    def _megabatches(self, order: np.ndarray) -> list[np.ndarray]:
        megas = [order[i:i + self.mega] for i in range(0, len(order), self.mega)]
        if len(megas) > 1 and len(megas[-1]) < self.per_step:
            megas[-2:] = [np.concatenate(megas[-2:])]  # too few for one full step: join the one before
        return megas

    def _plan(self, order: np.ndarray) -> list[list[np.ndarray]]:
        return [self._split(mega) for mega in self._megabatches(order)]

    def _split(self, mega: np.ndarray) -> list[np.ndarray]:
        """Consecutive batches of at most micro_batch_size, as many as a multiple of per_step, their sizes
        differing by at most one (full mega-batches split into full batches).

        Micro-batches of one that cannot fill whole steps (16 per step and 803 examples) would leave some
        batches empty: the last mega-batch then holds one step fewer, and its shortest texts go in pairs.
        """
        count = math.ceil(len(mega) / self.micro_batch_size)
        count = math.ceil(count / self.per_step) * self.per_step
        if count > len(mega):  # only with batches of one; the mega-batch holds at least one step's worth
            return np.array_split(mega[::-1], len(mega) // self.per_step * self.per_step)[::-1]
        return np.array_split(mega, count)


def by_length(lengths: Sequence[int], longest_first: bool = True) -> np.ndarray:
    """Indices that order `lengths` longest first, or shortest first (stable: equal lengths keep their order)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.argsort(-lengths if longest_first else lengths, kind="stable")
