import itertools

import pytest

from mumo.data.sampler import ResumableBatchSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_epochs_are_permutations_and_drop_the_tail():
    s = ResumableBatchSampler(10, 3, seed=0)
    batches = take(s, 6)
    assert len(s) == 3 and all(len(b) == 3 for b in batches)
    for epoch in (batches[:3], batches[3:]):
        flat = [i for b in epoch for i in b]
        assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    assert batches[:3] != batches[3:]  # a new order each epoch


def test_resuming_at_any_batch_gives_the_same_stream():
    full = take(ResumableBatchSampler(20, 4, seed=3), 12)
    for start in (1, 5, 7):
        assert take(ResumableBatchSampler(20, 4, seed=3, start=start), 12 - start) == full[start:]
    assert take(ResumableBatchSampler(20, 4, seed=4), 12) != full


def test_ranks_split_a_global_batch():
    whole = take(ResumableBatchSampler(16, 4, seed=0), 2)
    parts = [take(ResumableBatchSampler(16, 2, seed=0, rank=r, world_size=2), 2) for r in (0, 1)]
    for j in range(2):
        assert sorted(parts[0][j] + parts[1][j]) == sorted(whole[j])


def test_too_small_data_set():
    with pytest.raises(ValueError, match="smaller than one global batch"):
        ResumableBatchSampler(3, 4, seed=0)
