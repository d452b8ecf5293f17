"""The model-free annotation-offset measurement: it finds an offset planted in synthetic labels,
reads 0 when there is none, keeps its vertical control at 0, and refuses mismatched inputs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pyg_sdfl.data.dataset import LandmarkDataset
from pyg_sdfl.data.synthetic import SyntheticFaces
from pyg_sdfl.schemes import get_scheme
from pyg_sdfl.studies.mirror_offset import annotation_offset, crop_mirror_offset, horizontal_shift, vertical_shift

PERM = get_scheme("300w").flip_permutation


def _blob_images(count: int, seed: int = 0, size: int = 96):
    """Images with one round blob per landmark at sub-pixel positions (mirror-symmetric marks)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    images, points = [], []
    for _ in range(count):
        pts = rng.uniform(12, size - 12, size=(68, 2))
        image = np.zeros((size, size))
        for x, y in pts:
            image += 200 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        points.append(pts)
    return images, points


@pytest.mark.parametrize("planted", [0.0, 0.7, -1.2])
def test_a_planted_offset_is_found(planted):
    images, points = _blob_images(40)
    result = annotation_offset(images, [p + [planted, 0.0] for p in points], PERM, radius=8)
    assert result.offset == pytest.approx(planted, abs=0.08)
    assert abs(result.vertical_control) < 0.08
    assert result.faces == 40 and result.per_point_shift.shape == (68,)


def test_shifts_of_a_known_translation():
    texture = cv2.GaussianBlur(np.random.default_rng(0).random((60, 60)), (0, 0), 2.0)
    a = texture[20:45, 20:45]
    right = texture[20:45, 18:43]  # the content 2 px to the right
    down = texture[19:44, 20:45]   # the content 1 px down
    assert horizontal_shift(right, a) == pytest.approx(2.0, abs=0.05)
    assert vertical_shift(down, a) == pytest.approx(1.0, abs=0.05)
    assert horizontal_shift(a, a) == pytest.approx(0.0, abs=1e-3) and vertical_shift(a, a) == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="too small"):
        horizontal_shift(a[:9, :9], a[:9, :9])


def test_the_crop_pipeline_check_sees_a_mismatched_convention():
    """Synthetic faces are labelled exactly (offset 0): crops mirrored with the matched convention
    show no offset; declaring 1 px of offset that is not there shows up as ~2 k px on the crops."""
    samples = list(SyntheticFaces(60, seed=1, image_size=128))
    exact = LandmarkDataset(samples, "300w", image_size=96, crop_scale=1.2, annotation_offset_x=0.0)
    assert abs(crop_mirror_offset(exact, range(len(exact)), radius=8).offset) < 0.15
    wrong = LandmarkDataset(samples, "300w", image_size=96, crop_scale=1.2, annotation_offset_x=1.0)
    assert crop_mirror_offset(wrong, range(len(wrong)), radius=8).offset < -0.3


def test_bad_inputs():
    images, points = _blob_images(2)
    with pytest.raises(ValueError, match="flip permutation"):
        annotation_offset(images, points, [0, 1, 2])
    with pytest.raises(ValueError, match="at least one face"):
        annotation_offset([], [], PERM)
