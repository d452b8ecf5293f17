"""pyg_sdfl.detection.base.reduced_copy: the copy detectors run on, and its factors back."""
from __future__ import annotations

import numpy as np
import pytest

from pyg_sdfl.detection.base import reduced_copy


def test_a_small_image_is_its_own_copy():
    image = np.zeros((480, 640, 3), np.uint8)
    copy, sx, sy = reduced_copy(image, 640)
    assert copy is image and sx == sy == 1.0


@pytest.mark.parametrize("shape, max_side", [((2999, 4001), 1024), ((3000, 4000), 1000), ((1500, 1100), 1024),
                                             ((2001, 777), 640)])
def test_the_copy_keeps_positions_and_its_size(shape, max_side):
    """A blob's centroid on the copy, times the factors, is the blob's centre on the original (pixel-edge
    frame) to 0.05 copy px; the longer side is ``max_side``; gray images too."""
    h, w = shape
    centre = np.array([0.83 * w + 0.3, 0.21 * h - 0.4])  # pixel centres: x + 0.5 on the pixel-edge frame
    sigma = max(h, w) / 150
    ys, xs = np.ogrid[0:h, 0:w]
    image = (255 * np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))).astype(np.uint8)
    for img in (image, np.repeat(image[..., None], 3, axis=2)):
        copy, sx, sy = reduced_copy(img, max_side)
        assert max(copy.shape[:2]) == max_side and copy.shape[2:] == img.shape[2:]
        assert copy.shape[1] == round(w * max_side / max(h, w)) and copy.shape[0] == round(h * max_side / max(h, w))
        plane = copy.astype(np.float64) if copy.ndim == 2 else copy[..., 0].astype(np.float64)
        gy, gx = np.mgrid[0:plane.shape[0], 0:plane.shape[1]]
        found = np.array([(plane * (gx + 0.5)).sum(), (plane * (gy + 0.5)).sum()]) / plane.sum()  # copy's edge frame
        np.testing.assert_allclose(found * [sx, sy], centre + 0.5, atol=0.05 * max(sx, sy))


def test_fine_stripes_average_out():
    stripes = np.zeros((3000, 4000), np.uint8)
    stripes[:, ::2] = 255  # aliases badly when point-sampled
    copy, _, _ = reduced_copy(stripes, 1000)
    assert np.abs(copy.astype(np.float64) - 127.5).max() <= 1
