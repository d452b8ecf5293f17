"""The order in which one training epoch visits the faces, and each process's share of it.

One rule for one process and for several: :func:`epoch_order` draws the epoch's global order
(a shuffle, or a pose-balanced weighted draw with replacement) from a generator seeded with
``seed * 100_003 + epoch``, and :class:`GlobalBatchShards` cuts it into global batches of
``batch_size`` faces and hands rank ``r`` of ``W`` the ``r``-th slice of ``batch_size / W`` faces of
each. Every global batch is therefore the same set of faces however many processes train, and
with one process the batches are exactly those a ``DataLoader(shuffle=True, generator=...)`` (or
``sampler=WeightedRandomSampler(...)``) with that generator yields, which :func:`epoch_order`
reproduces draw for draw (``tests/engine/test_sampling.py`` checks it against the DataLoader).
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler, WeightedRandomSampler

__all__ = ["epoch_generator", "epoch_order", "GlobalBatchShards"]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch ``epoch`` (0-based) of a run seeded ``seed``."""
    return torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))


def epoch_order(num_items: int, seed: int, epoch: int, weights: Optional[np.ndarray] = None) -> List[int]:
    """The epoch's global order of item indices, ``num_items`` long.

    Without ``weights``: a permutation (``RandomSampler``). With ``weights`` ``(num_items,)``: a draw
    of ``num_items`` indices with replacement, ``P(i) = w_i / sum(w)`` (``WeightedRandomSampler``).
    Draws as a ``DataLoader`` with ``generator=epoch_generator(seed, epoch)`` does: the loader first
    takes one 64-bit draw for its workers' base seed, then the sampler draws.
    """
    generator = epoch_generator(seed, epoch)
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the DataLoader's base-seed draw
    if weights is None:
        sampler: Sampler = RandomSampler(range(num_items), generator=generator)
    else:
        if len(weights) != num_items:
            raise ValueError(f"{len(weights)} sampling weights for {num_items} items")
        sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_items, replacement=True,
                                        generator=generator)
    return list(sampler)


class GlobalBatchShards(Sampler[List[int]]):
    """Batch sampler: rank ``rank``'s part of each global batch of ``order``.

    Global batch ``s`` is ``order[s*B : (s+1)*B]`` (``B = batch_size``); rank ``r`` of ``W`` gets its
    slice ``[r*B/W, (r+1)*B/W)``. With ``drop_last`` a short final batch is left out (as a
    ``DataLoader`` with ``drop_last=True`` does); without it, it is kept for a single process
    and still left out for several (ranks would step with unequal batches).

    Raises ``ValueError`` when ``B`` is not a multiple of ``W``, or when several processes would get
    no full global batch.
    """

    def __init__(self, order: Sequence[int], batch_size: int, world_size: int = 1, rank: int = 0,
                 drop_last: bool = True) -> None:
        batch_size, world_size, rank = int(batch_size), int(world_size), int(rank)
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"batch_size={batch_size}, world_size={world_size}, rank={rank}: out of range")
        if batch_size % world_size:
            raise ValueError(f"train.batch_size={batch_size} is the global batch and must be a multiple of the "
                             f"{world_size} processes; use e.g. {batch_size - batch_size % world_size or world_size}")
        if world_size > 1 and len(order) < batch_size:
            raise ValueError(f"{len(order)} training faces do not fill one global batch of train.batch_size="
                             f"{batch_size}: lower the batch size to train over {world_size} processes")
        self.order = list(order)
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank
        self.drop_last = bool(drop_last) or world_size > 1

    def __len__(self) -> int:
        full, rest = divmod(len(self.order), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[List[int]]:
        per_rank = self.batch_size // self.world_size
        for step in range(len(self)):
            batch = self.order[step * self.batch_size:(step + 1) * self.batch_size]
            if self.world_size == 1:
                yield batch
            else:
                yield batch[self.rank * per_rank:(self.rank + 1) * per_rank]
