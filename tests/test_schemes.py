import numpy as np
import pytest

from pyg_sdfl.schemes import LandmarkScheme, get_scheme, register_scheme, SCHEMES


@pytest.mark.parametrize("name,n,io", [("300w", 68, (36, 45)), ("wflw", 98, (60, 72)), ("cofw", 29, (8, 9))])
def test_builtin_schemes(name, n, io):
    s = get_scheme(name)
    assert s.num_points == n and s.inter_ocular == io
    perm = np.asarray(s.flip_permutation)
    assert np.array_equal(perm[perm], np.arange(n))
    # the outer eye corners swap under a flip
    assert perm[io[0]] == io[1]


def test_300w_pupils_and_parts():
    s = get_scheme("300w")
    assert s.left_pupil == tuple(range(36, 42)) and s.right_pupil == tuple(range(42, 48))
    assert s.part_of(40) == "left_eye" and s.part_of(0) == "jaw"


def test_unknown_scheme_lists_known():
    with pytest.raises(KeyError, match="known"):
        get_scheme("nope")


def test_new_scheme_is_one_declaration():
    s = LandmarkScheme("toy3", 3, (2, 1, 0), (0, 2), (0,), (2,))
    try:
        register_scheme(s)
        assert get_scheme("toy3") is s
        with pytest.raises(ValueError, match="already"):
            register_scheme(s)
    finally:
        SCHEMES.pop("toy3", None)


def test_bad_scheme_rejected():
    with pytest.raises(ValueError, match="involution"):
        LandmarkScheme("bad", 3, (1, 2, 0), (0, 2), (0,), (2,))
    with pytest.raises(ValueError, match="match scheme"):
        get_scheme("300w").check_landmarks(np.zeros((5, 98, 2)))
