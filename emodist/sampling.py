"""Batches of similar lengths: less padding, the same examples.

Padding to the longest text of a random batch wastes about half the compute on GoEmotions (its texts
run from 3 to 50+ tokens). `LengthGroupedBatches` takes the epoch's random order, cuts it into
mega-batches of `group_size` steps, sorts each mega-batch by length and slices it into micro-batches,
so a batch pads to a length close to that of every text in it; then it shuffles the steps. The step
holding the longest batch goes first, so a run that would run out of memory does so at once.

Distributed: the sampler yields the micro-batches of all ranks, a step's `num_processes` batches
next to each other; accelerate's `BatchSamplerShard` deals batch i to rank i % num_processes. The
count of batches is a multiple of `num_processes`, so no rank needs a repeated example: every example
is seen exactly once per epoch across the ranks. The order depends on (seed, epoch) only, so a resumed
run that skips the batches it already trained on sees the same batches as the uninterrupted run.

`by_length` is the evaluation order: longest first, one sorted pass.
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
    into near-equal batches so that their count is a multiple of `num_processes`.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, num_processes: int = 1, seed: int = 0,
                 group: bool = True, group_size: int = GROUP_SIZE):
        if len(lengths) < num_processes:
            raise ValueError(f"{len(lengths)} examples cannot fill a batch on each of {num_processes} processes")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.micro_batch_size = batch_size
        self.batch_size = None  # accelerate: variable-size batches, shard them whole
        self.num_processes = num_processes
        self.seed = seed
        self.group = group
        self.mega = batch_size * num_processes * group_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch over all ranks (a multiple of num_processes)."""
        return sum(len(part) for part in self._plan(np.arange(len(self.lengths))))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        groups = []
        for mega in self._megabatches(order):
            if self.group:  # stable sort: ties keep the random order
                mega = mega[np.argsort(-self.lengths[mega], kind="stable")]
            batches = self._split(mega)
            steps = [batches[i:i + self.num_processes] for i in range(0, len(batches), self.num_processes)]
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
        if len(megas) > 1 and len(megas[-1]) < self.num_processes:
            megas[-2:] = [np.concatenate(megas[-2:])]  # too few to give every rank one: join the one before
        return megas

    def _plan(self, order: np.ndarray) -> list[list[np.ndarray]]:
        return [self._split(mega) for mega in self._megabatches(order)]

    def _split(self, mega: np.ndarray) -> list[np.ndarray]:
        """Consecutive batches of at most micro_batch_size, as many as a multiple of num_processes, their
        sizes differing by at most one (full mega-batches split into full batches)."""
        count = math.ceil(len(mega) / self.micro_batch_size)
        count = math.ceil(count / self.num_processes) * self.num_processes
        return np.array_split(mega, count)


def by_length(lengths: Sequence[int]) -> np.ndarray:
    """Indices that order `lengths` longest first (stable: equal lengths keep their order)."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
