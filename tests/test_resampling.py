"""pyg_sdfl.resampling.halved: padding to a multiple of 2^t, then exact 2 x 2 means."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pyg_sdfl.resampling import halved


@pytest.mark.parametrize("shape, times", [((13, 22, 3), 2), ((16, 8), 3), ((5, 7), 1), ((9, 9, 3), 0)])
@pytest.mark.parametrize("border", [cv2.BORDER_REPLICATE, cv2.BORDER_CONSTANT])
def test_halved_is_the_mean_of_blocks_of_the_padded_image(shape, times, border):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    f = 2**times
    ph, pw = -shape[0] % f, -shape[1] % f
    widths = ((0, ph), (0, pw)) + ((0, 0),) * (len(shape) - 2)
    padded = np.pad(image, widths, mode="edge" if border == cv2.BORDER_REPLICATE else "constant").astype(np.float64)
    blocks = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f, *shape[2:]).mean(axis=(1, 3))
    out = halved(image, times, border)
    assert out.shape == blocks.shape and out.dtype == np.uint8
    assert np.abs(out - blocks).max() <= 0.5 * times + 1e-9  # one uint8 rounding per halving
