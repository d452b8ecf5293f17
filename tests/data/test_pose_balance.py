import numpy as np
import pytest

from pyg_sdfl.data.balance import first_component_scores, pose_balanced_weights, procrustes_align


def _similarity(shape, angle, scale, shift):
    c, s = np.cos(angle), np.sin(angle)
    return scale * shape @ np.array([[c, -s], [s, c]]).T + shift


def _posed_shapes(m=300, n=20, seed=0):
    """A base shape deformed along one 'yaw' mode with a skewed amount t (few extreme poses),
    then moved, scaled and rotated at random (which Procrustes must remove)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 2))
    mode = rng.normal(size=(n, 2))
    mode -= mode.mean(axis=0)
    t = np.concatenate([rng.normal(0, 0.1, m - 40), rng.uniform(0.8, 1.5, 40)])
    raw = base[None] + 0.5 * t[:, None, None] * mode[None] + rng.normal(0, 0.005, (m, n, 2))
    moved = np.stack([_similarity(s, rng.uniform(-0.6, 0.6), rng.uniform(20, 80), rng.uniform(0, 300, 2)) for s in raw])
    return raw, moved, t


def test_procrustes_removes_similarity_transforms():
    rng = np.random.default_rng(1)
    shape = rng.normal(size=(30, 2))
    copies = np.stack([_similarity(shape, a, s, rng.uniform(-50, 50, 2)) for a, s in [(0.0, 1.0), (1.0, 3.0), (-2.5, 0.2)]])
    aligned = procrustes_align(copies)
    np.testing.assert_allclose(aligned[1], aligned[0], atol=1e-9)
    np.testing.assert_allclose(aligned[2], aligned[0], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(aligned, axis=(1, 2)), 1.0)
    np.testing.assert_allclose(aligned.mean(axis=1), 0.0, atol=1e-12)
    # a mirror image is not a rotation: it must not be aligned onto the original
    mirrored = copies[:1] * np.array([-1.0, 1.0])
    assert not np.allclose(procrustes_align(np.concatenate([copies[:1], mirrored]))[1], aligned[0], atol=1e-3)


def test_first_component_follows_the_pose_mode():
    _, moved, t = _posed_shapes()
    scores = first_component_scores(moved)
    assert abs(np.corrcoef(scores, t)[0, 1]) > 0.99


def test_weights_balance_bins_and_favour_rare_poses():
    raw, moved, t = _posed_shapes()
    w = pose_balanced_weights(moved, bins=9)
    assert w.shape == (300,) and np.all(w > 0) and w.sum() == pytest.approx(1.0)
    # independent binning of the same scores: equal-width bins over their range
    scores = first_component_scores(moved)
    edges = np.linspace(scores.min(), scores.max(), 10)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, 8)
    counts = np.bincount(which, minlength=9)
    np.testing.assert_allclose(w, (1 / counts[which]) / (1 / counts[which]).sum())
    per_bin = np.bincount(which, weights=w, minlength=9)
    np.testing.assert_allclose(per_bin[counts > 0], 1 / (counts > 0).sum())  # every non-empty bin drawn equally
    assert w[t > 0.8].mean() > 3 * w[np.abs(t) < 0.1].mean()
    # the weights do not depend on where/how big/how rotated faces are
    np.testing.assert_allclose(pose_balanced_weights(raw, bins=9), w, rtol=1e-6)


def test_degenerate_and_bad_inputs():
    same = np.repeat(np.random.default_rng(0).normal(size=(1, 10, 2)), 5, axis=0)
    np.testing.assert_allclose(pose_balanced_weights(same), 0.2)
    with pytest.raises(ValueError, match=r"\(M, N, 2\)"):
        pose_balanced_weights(np.zeros((5, 10)))
    bad = same.copy()
    bad[2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pose_balanced_weights(bad)
    with pytest.raises(ValueError, match="bins"):
        pose_balanced_weights(same, bins=0)
    with pytest.raises(ValueError, match="degenerate"):
        pose_balanced_weights(np.zeros((3, 10, 2)))


def test_real_300w_weights(w300_root):
    from pyg_sdfl.data import read_300w, stack_landmarks

    shapes = stack_landmarks(read_300w(w300_root, folders=["train/afw"]))
    w = pose_balanced_weights(shapes)
    assert w.shape == (337,) and w.sum() == pytest.approx(1.0) and w.max() > 2 * w.min()
    # the first component is dominated by yaw: the nose tip (30) moves sideways relative to the eyes
    scores = first_component_scores(shapes)
    eye_mid = (shapes[:, 36, 0] + shapes[:, 45, 0]) / 2
    nose_offset = (shapes[:, 30, 0] - eye_mid) / (shapes[:, 45, 0] - shapes[:, 36, 0])
    assert abs(np.corrcoef(scores, nose_offset)[0, 1]) > 0.7
