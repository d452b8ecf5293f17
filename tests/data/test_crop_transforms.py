"""Crops and augmentation (the crop matrix itself: tests/test_geometry.py) checked against hand values, OpenCV's own conventions and the
pixels themselves (blobs drawn at landmarks must land on the transformed landmarks)."""

import cv2
import numpy as np
import pytest

from pyg_sdfl.data import read_300w
from pyg_sdfl.data.transforms import (
    AugmentConfig,
    flip_landmarks,
    denormalise_image,
    normalise_image,
    paint_occlusion,
    random_occlusion,
    sample_occlusion,
    warp_sample,
)
from pyg_sdfl.geometry import apply_affine, crop_matrix, crop_square
from pyg_sdfl.schemes import get_scheme

PERM68 = get_scheme("300w").flip_permutation
PROBES = [36, 45, 30, 48, 54, 8]  # eye corners, nose tip, mouth corners, chin: far apart


def _blob_image(h, w, points, sigma=2.0):
    """Black RGB image with a Gaussian blob (peak 255) centred on each (sub-pixel) point."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    for x, y in points:
        img = np.maximum(img, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)))
    return np.repeat(np.round(255 * img).astype(np.uint8)[:, :, None], 3, axis=2)


def _centroid(img, near, radius=7):
    x0, y0 = int(round(near[0])), int(round(near[1]))
    win = img[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1, 0].astype(np.float64)
    yy, xx = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    return np.array([(win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()])


def _hom(M):
    return np.vstack([M, [0, 0, 1]])


@pytest.fixture(scope="module")
def real_face(w300_root):
    return read_300w(w300_root, folders=["train/afw"])[0]


# ---------------------------------------------------------------- flips
def test_flip_twice_is_identity():
    pts = np.random.default_rng(1).uniform(0, 200, (68, 2))
    once = flip_landmarks(pts, 211, PERM68)
    np.testing.assert_allclose(flip_landmarks(once, 211, PERM68), pts, atol=1e-12)
    assert not np.allclose(once, pts)
    M = crop_matrix((90, 100), 150, 256, rotation_deg=12, flip=True)
    mirror = crop_matrix((127.5, 127.5), 256, 256, flip=True)  # mirror within the crop
    np.testing.assert_allclose(apply_affine(apply_affine(apply_affine(pts, M), mirror), mirror), apply_affine(pts, M), atol=1e-9)


def test_flipped_left_eye_corner_lands_on_right_corner(real_face):
    lm = real_face.landmarks.astype(np.float64)
    w = real_face.load_image().shape[1]
    flipped = flip_landmarks(lm, w, PERM68)
    np.testing.assert_allclose(flipped[36], [w - 1 - lm[45, 0], lm[45, 1]])
    np.testing.assert_allclose(flipped[45], [w - 1 - lm[36, 0], lm[36, 1]])
    assert flipped[36, 0] < flipped[45, 0]  # index 36 is still the image-left corner
    # with pixels: a blob on the original left corner 36 shows up at the flipped landmark 45
    img = _blob_image(*real_face.load_image().shape[:2], lm[PROBES])
    crop, pts = warp_sample(img, lm, crop_matrix(*_center_side(lm), 256, flip=True), 256, PERM68)
    for j in PROBES:
        np.testing.assert_allclose(_centroid(crop, pts[PERM68[j]]), pts[PERM68[j]], atol=0.1)
    assert _centroid(crop, pts[45]) == pytest.approx(pts[45], abs=0.1)


def _center_side(lm, scale=1.2):
    cx, cy, side = crop_square(lm, scale)
    return (cx, cy), side


def test_flip_in_matrix_equals_flipping_the_crop(real_face):
    image = real_face.load_image()
    lm = real_face.landmarks
    center, side = _center_side(lm)
    plain, pts = warp_sample(image, lm, crop_matrix(center, side, 256, rotation_deg=10), 256)
    mirrored, pts_m = warp_sample(image, lm, crop_matrix(center, side, 256, rotation_deg=10, flip=True), 256, PERM68)
    reference = cv2.flip(plain, 1)  # the matrix's mirror is the last step, as cv2.flip after the warp
    assert np.abs(mirrored.astype(int) - reference.astype(int)).mean() < 0.5
    np.testing.assert_allclose(pts_m, flip_landmarks(pts, 256, PERM68), atol=1e-4)


def test_mirroring_matrix_requires_permutation():
    with pytest.raises(ValueError, match="flip_perm"):
        warp_sample(np.zeros((10, 10, 3), np.uint8), np.zeros((68, 2)), crop_matrix((5, 5), 8, 16, flip=True), 16)
    with pytest.raises(ValueError, match="3 entries for 68"):
        flip_landmarks(np.zeros((68, 2)), 10, (0, 1, 2))


# ---------------------------------------------------------------- the warp moves pixels like landmarks
@pytest.mark.parametrize("rotation,scale,shift,flip", [(25.0, 1.1, (7.0, -4.0), False), (-33.0, 0.92, (-12.0, 9.0), True)])
def test_warp_moves_bright_pixels_to_transformed_landmarks(real_face, rotation, scale, shift, flip):
    lm = real_face.landmarks.astype(np.float64)
    h, w = real_face.load_image().shape[:2]
    img = _blob_image(h, w, lm[PROBES])
    center, side = _center_side(lm)
    M = crop_matrix(center, side, 256, rotation, scale, shift, flip)
    crop, pts = warp_sample(img, lm, M, 256, PERM68)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    for j in PROBES:
        i = PERM68[j] if flip else j  # the output index that holds original landmark j
        np.testing.assert_allclose(_centroid(crop, pts[i]), pts[i], atol=0.1)


# ---------------------------------------------------------------- augmentation draws
def test_augment_config_draws_within_bounds_and_reproducibly():
    cfg = AugmentConfig(rotation=40, translation=30, scale=0.1, flip=0.5, occlusion_prob=0.5, occlusion_fraction=0.2)
    draws = [cfg.sample(np.random.default_rng([3, i]), 256) for i in range(400)]
    rot = np.array([d.rotation_deg for d in draws])
    assert np.abs(rot).max() <= 40 and rot.min() < -30 and rot.max() > 30
    assert all(0.9 <= d.scale <= 1.1 for d in draws)
    assert all(abs(v) <= 30 for d in draws for v in d.shift)
    assert 0.4 < np.mean([d.flip for d in draws]) < 0.6
    assert 0.4 < np.mean([d.occlusion_box is not None for d in draws]) < 0.6
    assert cfg.sample(np.random.default_rng(7), 256) == cfg.sample(np.random.default_rng(7), 256)
    off = AugmentConfig(rotation=0, translation=0, scale=0, flip=0, occlusion_prob=0)
    assert off.sample(np.random.default_rng(0), 256) == type(draws[0])()


@pytest.mark.parametrize("kwargs,message", [
    ({"rotation": -1}, "rotation"), ({"scale": 1.0}, "scale"), ({"flip": 1.5}, "flip"),
    ({"occlusion_prob": -0.1}, "occlusion_prob"), ({"occlusion_fraction": 0}, "occlusion_fraction"),
])
def test_augment_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**kwargs)


def test_occlusion_covers_the_area_fraction_with_one_colour():
    rng = np.random.default_rng(0)
    for _ in range(50):
        (x0, y0, x1, y1), colour = sample_occlusion(256, 200, 0.2, rng)
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 256
        assert abs((x1 - x0) * (y1 - y0) - 0.2 * 256 * 200) <= (x1 - x0) + (y1 - y0)
    img = np.zeros((64, 64, 3), np.uint8)
    out, (x0, y0, x1, y1) = random_occlusion(img, np.random.default_rng(5), 0.2)
    assert out is img
    painted = np.zeros((64, 64), bool)
    painted[y0:y1, x0:x1] = True
    assert (img[painted] == img[y0, x0]).all() and (img[~painted] == 0).all()
    paint_occlusion(img, (0, 0, 2, 3), (1, 2, 3))
    assert img[2, 1].tolist() == [1, 2, 3] and img[3, 0].tolist() != [1, 2, 3]


def test_normalise_image_values():
    crop = np.zeros((2, 3, 3), np.uint8)
    crop[1, 2] = (255, 0, 128)
    out = normalise_image(crop)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 1, 2], [(1 - 0.485) / 0.229, -0.456 / 0.224, (128 / 255 - 0.406) / 0.225], rtol=1e-6)
    np.testing.assert_allclose(out[:, 0, 0], [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)


def test_denormalise_inverts_normalise_for_arrays_and_tensors():
    import torch

    crop = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(denormalise_image(normalise_image(crop)), crop)
    np.testing.assert_array_equal(denormalise_image(torch.from_numpy(normalise_image(crop))), crop)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        denormalise_image(np.zeros((5, 7, 3)))


def test_normalise_image_is_the_elementwise_formula_bit_for_bit():
    """The lookup gives the bits of (x / 255 - mean) / std in float32, for every level in each channel,
    on contiguous crops and on views (a mirrored crop)."""
    from pyg_sdfl.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    rng = np.random.default_rng(1)
    crop = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    crop[1, :, :] = np.arange(47)[:, None] * 5  # levels 0 .. 230 in every channel
    crop[2, :, :] = 255
    for image in (crop, crop[:, ::-1], np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)):
        x = image.astype(np.float32)
        x *= 1.0 / 255.0
        x -= IMAGENET_MEAN
        x /= IMAGENET_STD
        expected = np.ascontiguousarray(x.transpose(2, 0, 1))
        out = normalise_image(image)
        assert out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, expected)
