"""The length-grouped train batches: every example once per epoch across ranks, the same batches for the
same (seed, epoch), the same rest of the epoch after a mid-epoch resume, and less padding."""

from __future__ import annotations

import numpy as np
import pytest
from accelerate.data_loader import BatchSamplerShard, SkipBatchSampler

from emodist.data.sampling import LengthGroupedBatches, by_length


def goemotions_like(n: int, seed: int = 0) -> np.ndarray:
    """Token counts shaped like GoEmotions under the MiniLM tokenizer: mean ~19, a long tail to ~55."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.gamma(4.0, 4.8, size=n).astype(int) + 3, 3, 60)


def rank_batches(sampler: LengthGroupedBatches, rank: int) -> list[list[int]]:
    """What accelerate hands `rank`: the sampler wrapped the way `prepare` wraps it under DDP."""
    if sampler.num_processes == 1:
        return list(sampler)
    return list(BatchSamplerShard(sampler, sampler.num_processes, rank, split_batches=False, even_batches=True))


def padded(batches: list[list[int]], lengths: np.ndarray) -> int:
    return sum(int(lengths[b].max()) * len(b) for b in batches)


@pytest.mark.parametrize("processes", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [1, 5, 97, 1600, 3203, 6401])
def test_every_example_exactly_once_per_epoch_across_ranks(processes, size):
    if size < processes:
        with pytest.raises(ValueError, match=f"cannot fill the {processes} micro-batches of one step"):
            LengthGroupedBatches(goemotions_like(size), 16, processes)
        return
    sampler = LengthGroupedBatches(goemotions_like(size), 16, processes, seed=3, group_size=4)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        per_rank = [rank_batches(sampler, r) for r in range(processes)]
        seen = sorted(i for batches in per_rank for batch in batches for i in batch)
        assert seen == list(range(size))
        assert len({len(b) for b in per_rank}) == 1  # every rank takes the same number of steps
        assert len(per_rank[0]) * processes == len(sampler)
        assert all(0 < len(batch) <= 16 for batches in per_rank for batch in batches)


def test_full_mega_batches_give_full_batches_and_only_the_tail_is_split_evenly():
    sampler = LengthGroupedBatches(goemotions_like(2 * 16 * 2 * 4 + 37), 16, num_processes=2, group_size=4)
    sizes = sorted(len(b) for b in sampler)
    # two full mega-batches (8 batches of 16 each) and a tail of 37 in 4 batches (a multiple of 2 ranks)
    assert sizes == [9, 9, 9, 10] + [16] * 16


def test_one_process_accumulating_two_gets_the_steps_of_two_processes():
    """The 1-process-with-accumulation vs 2-process equivalence (tests/test_distributed.py) needs the same
    examples in every optimizer step: the list of batches depends on batches per step, not on ranks."""
    lengths = goemotions_like(3203)
    one = LengthGroupedBatches(lengths, 16, num_processes=1, accumulation=2, seed=4)
    two = LengthGroupedBatches(lengths, 16, num_processes=2, accumulation=1, seed=4)
    assert list(one) == list(two)
    assert len(one) % 2 == 0


def test_same_seed_and_epoch_same_batches_else_different():
    lengths = goemotions_like(3000)
    a, b = LengthGroupedBatches(lengths, 32, 2, seed=7), LengthGroupedBatches(lengths, 32, 2, seed=7)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b)
    assert list(a) != list(LengthGroupedBatches(lengths, 32, 2, seed=8))


@pytest.mark.parametrize("processes", [1, 2])
def test_a_resume_mid_epoch_sees_the_rest_of_the_same_epoch(processes):
    """The resumed run builds a new sampler, sets the epoch and skips what it trained on (accelerate's
    skip_first_batches wraps the rank's batches in a SkipBatchSampler): it gets the uninterrupted rest."""
    lengths = goemotions_like(2500)
    uninterrupted = LengthGroupedBatches(lengths, 16, processes, seed=1)
    uninterrupted.set_epoch(2)
    for rank in range(processes):
        full = rank_batches(uninterrupted, rank)
        resumed = LengthGroupedBatches(lengths, 16, processes, seed=1)
        resumed.set_epoch(2)
        shard = resumed if processes == 1 else BatchSamplerShard(resumed, processes, rank)
        assert list(SkipBatchSampler(shard, skip_batches=37)) == full[37:]


def test_grouping_removes_most_padding_and_random_batches_keep_it():
    lengths = goemotions_like(8192)
    real = int(lengths.sum())
    grouped = padded(list(LengthGroupedBatches(lengths, 32)), lengths) / real
    shuffled = padded(list(LengthGroupedBatches(lengths, 32, group=False)), lengths) / real
    assert grouped < 1.05
    assert shuffled > 1.6


def test_random_batches_are_the_seeded_permutation_in_order():
    lengths = goemotions_like(100)
    batches = list(LengthGroupedBatches(lengths, 32, seed=5, group=False))
    assert [len(b) for b in batches] == [25, 25, 25, 25]
    flat = [i for b in batches for i in b]
    assert flat == np.random.default_rng([5, 0]).permutation(100).tolist()


def test_the_longest_batch_comes_first_and_batches_hold_similar_lengths():
    lengths = goemotions_like(4000)
    batches = list(LengthGroupedBatches(lengths, 32, num_processes=2, seed=2))
    assert lengths[batches[0]].max() == lengths.max()
    spreads = [int(lengths[b].max() - lengths[b].min()) for b in batches[:-4]]
    assert np.median(spreads) <= 2


def test_by_length_is_stable_either_way():
    assert by_length([3, 9, 3, 12, 9]).tolist() == [3, 1, 4, 0, 2]
    assert by_length([3, 9, 3, 12, 9], longest_first=False).tolist() == [0, 2, 1, 4, 3]


def test_by_length_keeps_the_order_of_ties_in_long_lists_and_takes_unsigned_lengths():
    """numpy's default sort is not stable past a few dozen items; unsigned lengths negated would wrap."""
    lengths = np.random.default_rng(0).integers(1, 4, 300)
    for longest_first in (True, False):
        order = by_length(lengths, longest_first)
        key = -lengths if longest_first else lengths
        assert order.tolist() == sorted(range(300), key=lambda i: (key[i], i))
    assert by_length(np.array([3, 9, 3, 12], dtype=np.uint32)).tolist() == [3, 1, 0, 2]


def test_ties_in_a_mega_batch_keep_the_random_order():
    """Equal lengths: the stable sort leaves the seeded permutation as it is, so batches are its slices."""
    lengths = np.full(200, 7)
    batches = list(LengthGroupedBatches(lengths, 10, seed=3, group_size=20))
    order = np.random.default_rng([3, 0]).permutation(200)
    assert sorted(map(tuple, batches)) == sorted(tuple(order[i:i + 10].tolist()) for i in range(0, 200, 10))


@pytest.mark.parametrize(("examples", "sizes"), [
    (9, [3, 2, 2, 2]),    # a mega-batch of 8 and 1 left, too few for a step of 2: joined, 9 in 4 batches
    (10, [4, 4, 1, 1]),   # 8 and 2 left: a step of two batches of one, on their own
    (8, [4, 4]),          # one mega-batch, no tail
])
def test_a_tail_too_small_for_a_step_joins_the_mega_batch_before(examples, sizes):
    """micro-batches of 4, 2 per step (2 processes), mega-batches of one step (8 examples)."""
    sampler = LengthGroupedBatches(np.arange(examples), 4, num_processes=2, group=False, group_size=1)
    assert sorted((len(b) for b in sampler), reverse=True) == sizes and len(sampler) == len(sizes)
    assert sorted(i for b in sampler for i in b) == list(range(examples))


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize(("examples", "processes", "accumulation"), [(803, 1, 16), (803, 2, 8), (97, 3, 2), (17, 1, 16)])
def test_batches_of_one_that_cannot_fill_whole_steps_pair_the_shortest_texts(examples, processes, accumulation, group):
    """train.micro_batch_size=1 (a 7B LoRA on one GPU) with 16 per step: 803 examples are 50 steps and 3 over.
    The split left empty batches, an internal error in the collator hours into an epoch (GoEmotions: at batch
    28,402), again after every resume; now 3 batches hold two texts, the shortest of the mega-batch."""
    lengths = goemotions_like(examples, seed=examples)
    sampler = LengthGroupedBatches(lengths, 1, processes, accumulation, seed=5, group=group, group_size=1000)
    per_step = processes * accumulation
    batches = [b for r in range(processes) for b in rank_batches(sampler, r)]
    assert sorted(i for b in batches for i in b) == list(range(examples))
    assert len(batches) == len(sampler) == examples // per_step * per_step
    pairs, singles = [b for b in batches if len(b) == 2], [b for b in batches if len(b) == 1]
    assert len(pairs) == examples % per_step and len(pairs) + len(singles) == len(batches)
    if group:  # one mega-batch: the paired texts are no longer than any text that has a batch to itself
        assert max(lengths[i] for b in pairs for i in b) <= min(lengths[b[0]] for b in singles)
