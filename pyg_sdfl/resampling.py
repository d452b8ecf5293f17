"""Exact halvings of an image: the cheap, alias-free first part of a large downscale.

OpenCV's area resize takes a fast path at an exact factor of 2 (each output pixel the mean of 2 x 2);
at any other factor it costs about ten times as much. :func:`halved` pads the image to a multiple of
``2^t`` pixels and halves it ``t`` times, so that every halving is exact. The crops of
:func:`pyg_sdfl.inference.warp_crop` and the detectors' :func:`pyg_sdfl.detection.base.reduced_copy`
both shrink large images this way before one bilinear step.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["halved"]


def halved(image: np.ndarray, times: int, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """``image`` ``(H, W)`` or ``(H, W, C)`` padded on the right and bottom to a multiple of ``f = 2^times``
    pixels (``border``: an OpenCV border type; ``cv2.BORDER_CONSTANT`` pads black), then halved
    ``times`` times, each pixel the mean of 2 x 2: ``(ceil(H / f), ceil(W / f)[, C])``. It covers the
    padded frame, so a pixel centre ``p`` of ``image`` lands at ``(p + 0.5) / f - 0.5``."""
    f = 2 ** int(times)
    pad_y, pad_x = -image.shape[0] % f, -image.shape[1] % f
    if pad_x or pad_y:
        image = cv2.copyMakeBorder(image, 0, pad_y, 0, pad_x, border, value=0)
    for _ in range(int(times)):
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return image
