"""The epoch order and each rank's slice of it (pyg_sdfl/engine/sampling.py)."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from pyg_sdfl.engine.sampling import GlobalBatchShards, epoch_generator, epoch_order


def _loader_batches(n, batch, seed, epoch, weights=None):
    """What the training loop's DataLoader drew before the order was made explicit."""
    generator = epoch_generator(seed, epoch)
    sampler = None
    if weights is not None:
        sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), n, replacement=True,
                                        generator=generator)
    loader = DataLoader(list(range(n)), batch_size=batch, shuffle=sampler is None, sampler=sampler,
                        generator=generator, drop_last=n >= batch)
    return [b.tolist() for b in loader]


@pytest.mark.parametrize("weighted", [False, True])
def test_one_process_gets_the_batches_a_shuffling_dataloader_draws(weighted):
    n, batch = 103, 16
    weights = np.linspace(0.2, 3.0, n) if weighted else None
    for epoch in (0, 1, 7):
        ours = list(GlobalBatchShards(epoch_order(n, 3, epoch, weights), batch))
        assert ours == _loader_batches(n, batch, 3, epoch, weights)
    assert epoch_order(n, 3, 0) != epoch_order(n, 3, 1)  # a new order every epoch


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_split_each_global_batch_into_disjoint_slices(world):
    order = epoch_order(70, 0, 0)
    whole = list(GlobalBatchShards(order, 16))
    shards = [list(GlobalBatchShards(order, 16, world, rank)) for rank in range(world)]
    assert all(len(s) == len(whole) == 4 for s in shards)  # 70 // 16 full batches; the short one is dropped
    for step, batch in enumerate(whole):
        assert [i for s in shards for i in s[step]] == batch
        assert all(len(s[step]) == 16 // world for s in shards)


def test_a_short_final_batch_is_kept_for_one_process_only():
    assert [len(b) for b in GlobalBatchShards(list(range(10)), 16, drop_last=False)] == [10]
    with pytest.raises(ValueError, match="do not fill one global batch"):
        GlobalBatchShards(list(range(10)), 16, world_size=2, rank=0)


def test_the_global_batch_must_divide_among_the_processes():
    with pytest.raises(ValueError, match="multiple of the 3 processes; use e.g. 15"):
        GlobalBatchShards(list(range(64)), 16, world_size=3, rank=0)
    with pytest.raises(ValueError, match="out of range"):
        GlobalBatchShards(list(range(64)), 16, world_size=2, rank=2)
