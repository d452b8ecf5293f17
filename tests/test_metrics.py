"""Metrics: hand-computed NME, FR, CED, AUC and subset summaries, with their edge cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pyg_sdfl.metrics import auc, ced_curve, failure_rate, nme, normalisation_distance, summarize
from pyg_sdfl.schemes import get_scheme


def face_300w(seed: int = 0) -> np.ndarray:
    """One 300-W face (1, 68, 2) with outer eye corners 36/45 at (10, 50) and (70, 50)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(20, 60, size=(1, 68, 2))
    t[0, 36] = (10, 50)
    t[0, 45] = (70, 50)
    return t


# ---------------------------------------------------------------- normalisers

def test_inter_ocular_per_scheme():
    t = face_300w()
    assert normalisation_distance(t, "300w").tolist() == [60.0]
    wflw = np.zeros((2, 98, 2))
    wflw[:, 60] = (0, 0)
    wflw[:, 72] = [(3, 4), (6, 8)]
    np.testing.assert_allclose(normalisation_distance(wflw, "wflw"), [5.0, 10.0])
    cofw = np.zeros((1, 29, 2))
    cofw[0, 8], cofw[0, 9] = (1, 1), (1, 9)
    np.testing.assert_allclose(normalisation_distance(cofw, get_scheme("cofw")), [8.0])


def test_inter_pupil():
    t = face_300w()
    # left eye 36..41 centred on (20, 50), right eye 42..47 centred on (60, 80): distance 50
    t[0, 36:42] = [(18, 50), (22, 50), (20, 48), (20, 52), (19, 49), (21, 51)]
    t[0, 42:48] = [(60, 80)] * 6
    np.testing.assert_allclose(normalisation_distance(t, "300w", "inter_pupil"), [50.0])
    cofw = np.zeros((1, 29, 2))
    cofw[0, 16], cofw[0, 17] = (0, 0), (12, 5)
    np.testing.assert_allclose(normalisation_distance(cofw, "cofw", "inter_pupil"), [13.0])


def test_box():
    t = np.zeros((1, 68, 2))
    t[0, :, 0] = np.linspace(5, 45, 68)  # width 40
    t[0, :, 1] = np.linspace(90, 0, 68)  # height 90
    np.testing.assert_allclose(normalisation_distance(t, "300w", "box"), [60.0])


def test_normaliser_errors():
    t = face_300w()
    t[0, 45] = t[0, 36]
    with pytest.raises(ValueError, match=r"inter_ocular normalisation distance is zero for faces \[0\]"):
        normalisation_distance(t, "300w")
    with pytest.raises(ValueError, match="unknown normalisation mode 'iod'.*inter_ocular, inter_pupil, box"):
        normalisation_distance(face_300w(), "300w", "iod")
    with pytest.raises(ValueError, match=r"expected \(B, 68, 2\)"):
        normalisation_distance(np.zeros((1, 98, 2)), "300w")
    with pytest.raises(KeyError, match="unknown landmark scheme"):
        normalisation_distance(face_300w(), "aflw")


# ---------------------------------------------------------------- NME

def test_nme_hand_value_numpy_and_torch():
    t = face_300w()
    p = t + (3.0, 4.0)  # every point 5 px off
    p[0, 0] += (6.0, 8.0)  # one point 5 + 10 = 15 px off
    expected = (67 * 5 + 15) / 68 / 60
    np.testing.assert_allclose(nme(p, t, "300w"), [expected])
    out = nme(torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(t), "300w")
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [expected], rtol=1e-6)
    np.testing.assert_allclose(nme(t, t, "300w"), [0.0])


def test_nme_batch_and_modes():
    t = np.concatenate([face_300w(0), face_300w(1) * 2])
    p = t + (0.0, 3.0)
    d = normalisation_distance(t, "300w", "box")
    np.testing.assert_allclose(nme(p, t, "300w", mode="box"), 3.0 / d)
    np.testing.assert_allclose(nme(p, t, "300w"), [3.0 / 60, 3.0 / 120])


def test_nme_with_visible_mask():
    t = face_300w()
    p = t.copy()
    p[0, :10] += (0.0, 12.0)  # 10 points 12 px off, the rest exact
    mask = np.zeros((1, 68), dtype=bool)
    mask[0, 5:20] = True  # 5 of the 15 visible points are off
    np.testing.assert_allclose(nme(p, t, "300w", visible_mask=mask), [5 * 12 / 15 / 60])
    np.testing.assert_allclose(nme(p, t, "300w", visible_mask=torch.ones(1, 68, dtype=torch.bool)), [10 * 12 / 68 / 60])
    with pytest.raises(ValueError, match="selects no point for faces"):
        nme(p, t, "300w", visible_mask=np.zeros((1, 68), dtype=bool))
    with pytest.raises(ValueError, match="visible_mask must have shape"):
        nme(p, t, "300w", visible_mask=np.ones((68,), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        nme(p, t, "300w", visible_mask=np.ones((1, 68)))


def test_nme_bad_input():
    t = face_300w()
    with pytest.raises(ValueError, match=r"pred of shape \(1, 67, 2\) does not match scheme '300w'"):
        nme(t[:, :67], t, "300w")
    with pytest.raises(ValueError, match="different numbers of faces"):
        nme(np.concatenate([t, t]), t, "300w")
    with pytest.raises(ValueError, match="target contains NaN"):
        bad = t.copy()
        bad[0, 3, 1] = np.nan
        nme(t, bad, "300w")
    with pytest.raises(ValueError, match="empty"):
        nme(np.zeros((0, 68, 2)), np.zeros((0, 68, 2)), "300w")
    with pytest.raises(ValueError, match=r"expected \(B, 68, 2\)"):
        nme(t[0], t[0], "300w")


# ---------------------------------------------------------------- FR

def test_failure_rate_cases():
    assert failure_rate([0.01, 0.05, 0.09]) == 0.0  # none fail
    assert failure_rate([0.11, 0.5]) == 1.0  # all fail
    assert failure_rate([0.1, 0.1000001, 0.02, 0.3]) == 0.5  # exactly at threshold: success
    assert failure_rate(np.array([0.07, 0.09]), threshold=0.08) == 0.5
    assert failure_rate(torch.tensor([0.2, 0.0])) == 0.5


@pytest.mark.parametrize("fn", [failure_rate, auc, ced_curve, summarize])
def test_empty_and_bad_errors(fn):
    with pytest.raises(ValueError, match="empty"):
        fn([])
    with pytest.raises(ValueError, match="NaN"):
        fn([0.1, float("nan")])
    with pytest.raises(ValueError, match="1-D"):
        fn([[0.1, 0.2]])
    with pytest.raises(ValueError, match="negative"):
        fn([-0.1])


def test_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        failure_rate([0.1], threshold=0)
    with pytest.raises(ValueError, match="step"):
        auc([0.1], step=0)


# ---------------------------------------------------------------- CED and AUC

def test_ced_curve_grid_and_values():
    x, y = ced_curve([0.02005, 0.05005, 0.2, 0.0])
    assert len(x) == 1001 and x[0] == 0.0 and x[-1] == 0.1
    assert np.diff(x).max() <= 1e-4 + 1e-12
    assert y[0] == 0.25  # the zero error counts at x = 0
    assert y[200] == 0.25 and y[201] == 0.5  # 0.02005 counted from x = 0.0201
    assert y[500] == 0.5 and y[501] == 0.75
    assert y[-1] == 0.75
    assert np.all(np.diff(y) >= 0)
    # a step that does not divide the threshold: spacing at most step, endpoint exact
    x, _ = ced_curve([0.05], threshold=0.1, step=3e-4)
    assert len(x) == 335 and x[-1] == 0.1 and np.diff(x).max() <= 3e-4


def test_auc_hand_values():
    # errors half-way between grid points: the trapezoid equals the exact area (t - e) per face
    # (0.1 - 0.02005 + 0.1 - 0.05005 + 0) / 3 / 0.1 = 0.433
    assert auc([0.02005, 0.05005, 0.2]) == pytest.approx(0.433, abs=1e-9)
    assert auc([0.0, 0.0]) == pytest.approx(1.0)  # all perfect
    assert auc([0.1000001, 3.0]) == 0.0  # all fail
    # exactly at the threshold: counted only at the last grid point -> half a step of area
    assert auc([0.1]) == pytest.approx(0.5e-4 / 0.1, rel=1e-6)
    assert auc([0.04005], threshold=0.08) == pytest.approx((0.08 - 0.04005) / 0.08, abs=1e-9)


def test_auc_close_to_the_continuous_integral():
    rng = np.random.default_rng(0)
    e = rng.gamma(2.0, 0.03, size=500)
    exact = np.mean(np.clip(0.1 - e, 0, None)) / 0.1  # integral of the step CED over [0, 0.1]
    assert auc(e) == pytest.approx(exact, abs=1e-4 / 0.1)
    assert failure_rate(e) == pytest.approx(np.mean(e > 0.1))


# ---------------------------------------------------------------- summaries

def test_summarize_by_subset():
    nmes = [0.05, 0.15, 0.02005, 0.12]
    tags = [["common"], ["challenging"], "common", ("challenging", "pose")]
    s = summarize(nmes, tags)
    assert list(s) == ["all", "challenging", "common", "pose"]
    assert s["all"]["count"] == 4 and s["all"]["nme"] == pytest.approx(0.0850125)
    assert s["all"]["fr"] == 0.5
    assert s["common"] == pytest.approx({"nme": 0.035025, "fr": 0.0, "auc": auc([0.05, 0.02005]), "count": 2})
    assert s["common"]["auc"] == pytest.approx((0.05 + 0.07995 + 0.5e-4) / 2 / 0.1, abs=1e-9)
    assert s["challenging"] == {"nme": pytest.approx(0.135), "fr": 1.0, "auc": 0.0, "count": 2}
    assert s["pose"]["count"] == 1 and s["pose"]["fr"] == 1.0
    assert list(summarize(nmes)) == ["all"]


def test_summarize_checks():
    with pytest.raises(ValueError, match=r"one entry per face \(2\), got 3 entries"):
        summarize([0.1, 0.2], [["a"], ["b"], ["c"]])
    with pytest.raises(ValueError, match="reserved"):
        summarize([0.1], [["all"]])
    with pytest.raises(ValueError, match="strings"):
        summarize([0.1], [[3]])
