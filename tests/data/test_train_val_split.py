import numpy as np
import pytest

from pyg_sdfl.data.splits import train_val_split


def test_disjoint_complete_sorted_and_sized():
    train, val = train_val_split(2012, 0.1, seed=0)
    assert len(val) == 201 and len(train) == 1811
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(2012))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert train.dtype == np.int64 and val.dtype == np.int64


def test_deterministic_per_seed():
    a = train_val_split(500, 0.2, seed=3)
    b = train_val_split(500, 0.2, seed=3)
    c = train_val_split(500, 0.2, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    # not simply the last faces: a random part of the set
    assert a[1].min() < 100 and a[1].max() > 400


@pytest.mark.parametrize("num,fraction,message", [
    (10, 0.01, "empty validation split"),
    (3, 0.9, "no training faces"),
    (10, 0.0, "strictly between"),
    (10, 1.0, "strictly between"),
    (-1, 0.5, "non-negative"),
    (0, 0.5, "empty validation"),
])
def test_bad_splits_explain_themselves(num, fraction, message):
    with pytest.raises(ValueError, match=message):
        train_val_split(num, fraction, seed=0)
