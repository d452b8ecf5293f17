"""Validation split carved from the training set (the test set is never used for model selection)."""
from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["train_val_split"]


def train_val_split(num: int, val_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Split ``range(num)`` into disjoint, sorted int64 index arrays ``(train_idx, val_idx)``.

    ``len(val_idx) = round(num * val_fraction)``; which faces go to validation depends only on
    ``(num, val_fraction, seed)`` (a NumPy ``default_rng(seed)`` permutation). Raises
    ``ValueError`` if either part would be empty.
    """
    if isinstance(num, bool) or int(num) != num or num < 0:
        raise ValueError(f"num must be a non-negative integer, got {num!r}")
    num = int(num)
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    num_val = int(round(num * float(val_fraction)))
    if num_val == 0:
        raise ValueError(
            f"val_fraction={val_fraction} of {num} faces gives an empty validation split; raise val_fraction"
        )
    if num_val >= num:
        raise ValueError(
            f"val_fraction={val_fraction} of {num} faces leaves no training faces; lower val_fraction"
        )
    perm = np.random.default_rng(int(seed)).permutation(num)
    return np.sort(perm[num_val:]).astype(np.int64), np.sort(perm[:num_val]).astype(np.int64)
