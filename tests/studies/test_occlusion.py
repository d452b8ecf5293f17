"""pyg_sdfl.studies.occlusion: synthetic occluders, visible/occluded NME, evaluate_occlusion."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyg_sdfl.data.dataset import LandmarkDataset
from pyg_sdfl.data.transforms import normalise_image
from pyg_sdfl.geometry import landmark_box
from pyg_sdfl.studies.occlusion import (
    apply_occluder,
    band_mask,
    evaluate_occlusion,
    occluded_points,
    occluder_mask,
    patch_mask,
    visible_occluded_nme,
)

FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
# (image size, box): small and large, square, wide, tall, off-centre, fractional corners
BOXES = [
    (64, (10.0, 8.0, 52.0, 55.0)),
    (96, (8.3, 20.7, 87.6, 70.2)),
    (96, (30.4, 5.5, 62.9, 90.1)),
    (256, (21.5, 21.5, 234.5, 234.5)),
    (256, (100.2, 40.8, 140.6, 220.3)),
]
SIDES = ("left", "right", "top", "bottom")


def box_region(box, size):
    """Independent reference: pixel (r, c) covers [c - .5, c + .5) x [r - .5, r + .5); it belongs to
    the box when that cell meets the closed box [x0, x1] x [y0, y1]."""
    x0, y0, x1, y1 = box
    c = np.arange(size)
    cols = (c - 0.5 <= x1) & (c + 0.5 > x0)
    rows = (c - 0.5 <= y1) & (c + 0.5 > y0)
    return rows[:, None] & cols[None, :]


def measured(mask, box):
    region = box_region(box, mask.shape[0])
    return (mask & region).sum() / region.sum()


# ---------------------------------------------------------------------------- masks
@pytest.mark.parametrize("size,box", BOXES)
def test_band_coverage_and_shape(size, box):
    region = box_region(box, size)
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    for side in SIDES:
        previous = np.zeros((size, size), dtype=bool)
        for fraction in FRACTIONS:
            mask = band_mask(box, fraction, size, side=side)
            assert mask.shape == (size, size) and mask.dtype == bool
            assert abs(measured(mask, box) - fraction) <= 0.02, (side, fraction)
            assert not (mask & ~region).any(), "the band leaves the face box"
            assert (mask | ~previous).all(), "a wider band must contain the narrower one"
            previous = mask
            if fraction == 0:
                assert not mask.any()
                continue
            # contiguous from the requested side, spanning the box across
            if side in ("left", "right"):
                used = np.flatnonzero(mask.any(axis=0))
                assert (mask[rows][:, used]).all() and not mask[~region.any(axis=1)].any()
                edge = cols[0] if side == "left" else cols[-1]
                assert edge in used and np.all(np.diff(used) == 1)
            else:
                used = np.flatnonzero(mask.any(axis=1))
                assert (mask[used][:, cols]).all() and not mask[:, ~region.any(axis=0)].any()
                edge = rows[0] if side == "top" else rows[-1]
                assert edge in used and np.all(np.diff(used) == 1)


@pytest.mark.parametrize("size,box", BOXES)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_patch_coverage(size, box, seed):
    region = box_region(box, size)
    for fraction in FRACTIONS:
        mask = patch_mask(box, fraction, size, np.random.default_rng([seed, int(fraction * 10)]))
        assert abs(measured(mask, box) - fraction) <= 0.02, fraction
        assert not (mask & ~region).any(), "a patch leaves the face box"
        if fraction == 0:
            assert not mask.any()


def test_patches_are_deterministic_and_full_at_one():
    size, box = BOXES[1]
    a = patch_mask(box, 0.3, size, np.random.default_rng(5))
    b = patch_mask(box, 0.3, size, np.random.default_rng(5))
    c = patch_mask(box, 0.3, size, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(patch_mask(box, 1.0, size, np.random.default_rng(0)), box_region(box, size))
    # the evaluation occluders depend on (seed, kind, face) only
    for kind in ("band", "patches"):
        m1, info1 = occluder_mask(kind, box, 0.3, size, seed=3, face=11)
        m2, info2 = occluder_mask(kind, box, 0.3, size, seed=3, face=11)
        assert np.array_equal(m1, m2) and info1 == info2
    sides = {occluder_mask("band", box, 0.2, size, seed=0, face=i)[1]["side"] for i in range(20)}
    assert sides == {"left", "right"}


@pytest.mark.parametrize("bad", [-0.1, 1.01, float("nan"), "half"])
def test_bad_fraction_is_rejected(bad):
    size, box = BOXES[0]
    with pytest.raises(ValueError, match="fraction"):
        band_mask(box, bad, size)
    with pytest.raises(ValueError, match="fraction"):
        patch_mask(box, bad, size, np.random.default_rng(0))


@pytest.mark.parametrize("box", [(10, 10, 10, 40), (30, 10, 20, 40), (10, 40, 30, 39), (100, 100, 120, 130),
                                 (0, 0, float("nan"), 5)])
def test_degenerate_box_is_rejected(box):
    with pytest.raises(ValueError, match="box"):
        band_mask(box, 0.2, 64)
    with pytest.raises(ValueError, match="box"):
        patch_mask(box, 0.2, 64, np.random.default_rng(0))


def test_bad_side_is_rejected():
    with pytest.raises(ValueError, match="side"):
        band_mask(BOXES[0][1], 0.2, 64, side="middle")


def test_occluded_points_match_a_direct_check():
    rng = np.random.default_rng(0)
    size = 40
    mask = rng.random((size, size)) < 0.4
    points = np.concatenate([rng.uniform(-3, size + 3, size=(200, 2)),
                             rng.integers(0, size, size=(40, 2)) + 0.5,  # on pixel borders
                             rng.integers(0, size, size=(20, 2)).astype(float)])  # on pixel centres
    expected = np.zeros(len(points), dtype=bool)
    for n, (x, y) in enumerate(points):
        for r in range(size):
            for c in range(size):
                if c - 0.5 <= x < c + 0.5 and r - 0.5 <= y < r + 0.5:
                    expected[n] = mask[r, c]
    assert np.array_equal(occluded_points(points, mask), expected)
    assert np.array_equal(occluded_points(torch.from_numpy(points), mask), expected)


def test_landmarks_at_the_box_edge_are_in_the_band():
    pts = np.array([[10.3, 20.0], [30.0, 10.6], [49.7, 40.2], [25.0, 45.0]])
    box = landmark_box(pts)
    assert box.tolist() == [10.3, 10.6, 49.7, 45.0]
    full = band_mask(box, 1.0, 64)
    assert occluded_points(pts, full).all()
    assert occluded_points(pts, band_mask(box, 0.05, 64, "left")).tolist() == [True, False, False, False]
    assert occluded_points(pts, band_mask(box, 0.05, 64, "bottom")).tolist() == [False, False, False, True]


def test_occluder_pixels_match_the_training_augmentation():
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=bool)
    mask[5:20, 3:11] = True
    painted = crop.copy()
    painted[mask] = (128, 128, 128)  # what paint_occlusion does to the uint8 crop before normalising
    out = apply_occluder(torch.from_numpy(normalise_image(crop)), mask)
    assert torch.equal(out, torch.from_numpy(normalise_image(painted)))
    batch = torch.from_numpy(np.stack([normalise_image(crop)] * 2))
    masks = np.stack([mask, np.zeros_like(mask)])
    out2 = apply_occluder(batch, masks)
    assert torch.equal(out2[0], out) and torch.equal(out2[1], batch[1])
    with pytest.raises(ValueError, match="mask"):
        apply_occluder(batch, mask)


# ---------------------------------------------------------------------------- metric
def test_visible_occluded_nme_by_hand():
    rng = np.random.default_rng(2)
    target = rng.uniform(0, 100, size=(3, 68, 2))
    pred = target + rng.normal(0, 2, size=target.shape)
    occluded = np.zeros((3, 68), dtype=bool)
    occluded[0, [1, 5, 36]] = True
    occluded[2, :60] = True  # face 1: nothing occluded
    vis, occ = visible_occluded_nme(pred, target, occluded, "300w")
    for b in range(3):
        d = math.dist(target[b, 36], target[b, 45])
        errs = [math.dist(pred[b, i], target[b, i]) / d for i in range(68)]
        v = [e for e, o in zip(errs, occluded[b]) if not o]
        o = [e for e, o in zip(errs, occluded[b]) if o]
        assert vis[b] == pytest.approx(sum(v) / len(v), rel=1e-12)
        if o:
            assert occ[b] == pytest.approx(sum(o) / len(o), rel=1e-12)
        else:
            assert math.isnan(occ[b])
    everything = np.ones((3, 68), dtype=bool)
    vis_all, occ_all = visible_occluded_nme(torch.from_numpy(pred), torch.from_numpy(target), everything, "300w")
    assert np.isnan(vis_all).all() and np.isfinite(occ_all).all()
    with pytest.raises(ValueError, match="occluded"):
        visible_occluded_nme(pred, target, occluded.astype(int), "300w")


# ---------------------------------------------------------------------------- evaluation on a tiny model
@pytest.fixture(scope="module")
def tiny_cfg():
    from pyg_sdfl.config import compose

    return compose(["dataset=synthetic", "dataset.image_size=64"])


@pytest.fixture(scope="module")
def tiny_model(tiny_cfg):
    from pyg_sdfl.engine.builders import build_model
    from pyg_sdfl.graph import random_graph

    torch.manual_seed(0)
    return build_model(tiny_cfg, random_graph(68, 3, seed=0), 68)

def test_evaluate_occlusion_on_a_tiny_model(tiny_model, tiny_faces):
    from pyg_sdfl.engine.evaluation import evaluate

    fractions = (0.0, 0.2, 0.4)
    tiny_model.train()
    res = evaluate_occlusion(tiny_model, tiny_faces, "300w", fractions=fractions, seed=0, batch_size=4)
    assert tiny_model.training, "the model's mode is restored"
    assert set(res) == {"band", "patches"}
    keys = {"nme_all", "nme_visible", "nme_occluded", "nme_visible_clean", "faces", "faces_with_occluded",
            "mean_occluded_points", "coverage_mean", "coverage_max_error"}
    for kind, per in res.items():
        assert list(per) == list(fractions)
        for fraction, stats in per.items():
            assert set(stats) == keys
            assert stats["faces"] == 6
            assert stats["coverage_max_error"] <= 0.02
            assert stats["coverage_mean"] == pytest.approx(fraction, abs=0.02)
        clean = per[0.0]
        assert clean["nme_all"] == pytest.approx(clean["nme_visible"], rel=1e-9)
        assert clean["nme_visible_clean"] == pytest.approx(clean["nme_visible"], rel=1e-9)
        assert clean["faces_with_occluded"] == 0 and clean["mean_occluded_points"] == 0
        assert math.isnan(clean["nme_occluded"])
        assert per[0.4]["mean_occluded_points"] > per[0.2]["mean_occluded_points"] > 0
    # crop-pixel NME equals the engine's original-image NME (a similarity transform apart)
    reference = evaluate(tiny_model, tiny_faces, tiny_faces.scheme)["summary"]["all"]["nme"]
    assert res["band"][0.0]["nme_all"] == pytest.approx(reference, rel=1e-5)
    # the same seed gives the same occluders (and results); another seed other patches
    again = evaluate_occlusion(tiny_model, tiny_faces, "300w", kinds=("patches",), fractions=(0.2,), seed=0)
    assert again["patches"][0.2] == res["patches"][0.2]
    other = evaluate_occlusion(tiny_model, tiny_faces, "300w", kinds=("patches",), fractions=(0.2,), seed=1)
    assert other["patches"][0.2]["nme_all"] != res["patches"][0.2]["nme_all"]


def test_evaluate_occlusion_rejects_bad_input(tiny_model, tiny_faces):
    with pytest.raises(ValueError, match="kind"):
        evaluate_occlusion(tiny_model, tiny_faces, "300w", kinds=("scarf",))
    with pytest.raises(ValueError, match="fraction"):
        evaluate_occlusion(tiny_model, tiny_faces, "300w", fractions=(0.2, 1.5))
    from pyg_sdfl.data.transforms import AugmentConfig

    augmented = LandmarkDataset(tiny_faces.samples, "300w", image_size=64, augment=AugmentConfig())
    with pytest.raises(ValueError, match="augment"):
        evaluate_occlusion(tiny_model, augmented, "300w")

