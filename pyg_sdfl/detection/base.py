"""What a face detector is: ``image -> list of Detection``, most confident first.

Every detector of :mod:`pyg_sdfl.detection` follows the :class:`Detector` protocol, and
:func:`check_detections` is the check a detector's output must pass (the protocol test runs it on
every registered detector). Boxes follow :mod:`pyg_sdfl.geometry` (0-based pixel centres,
``x0, y0, x1, y1``).

A detector is registered by one YAML file, ``pyg_sdfl/configs/detector/<name>.yaml``: its class
as ``_target_`` and every constructor parameter with its default
(:mod:`pyg_sdfl.detection.registry` builds it with Hydra). An optional package a detector needs is
imported when the detector is built, never when its module is imported, and its absence is an
``ImportError`` naming the extra that installs it (``pip install ".[peers]"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable

import cv2
import numpy as np

from pyg_sdfl.geometry import check_boxes
from pyg_sdfl.resampling import halved

__all__ = ["Detection", "Detector", "check_image", "check_detections", "reduced_copy"]


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected face.

    Attributes:
        box: float64 ``(4,)`` ``x0, y0, x1, y1`` (pixel-centre convention, :mod:`pyg_sdfl.geometry`).
        score: the detector's confidence (larger is more face-like; each detector's own scale,
            not a probability, comparable between detections of one detector only).
        keypoints: float64 ``(5, 2)`` (eyes, nose tip, mouth corners) for detectors that give
            them, else ``None``.
    """

    box: np.ndarray
    score: float
    keypoints: Optional[np.ndarray] = None


@runtime_checkable
class Detector(Protocol):
    """A face detector: ``detector(image)`` with ``image`` ``(H, W, 3)`` uint8 RGB (or ``(H, W)``
    gray, :func:`check_image`) returns the faces found as a list of :class:`Detection`, most
    confident first (empty when there is none); bad input is a ``ValueError``.

    Every detector class of the package also has

    * ``name``: a class attribute, the name it is registered under (its YAML file's stem,
      ``"haar"`` for ``configs/detector/haar.yaml``);
    * ``params``: a property, the constructor's settings as a JSON-serialisable dict, so that
      ``cls(**detector.params)`` builds an equal detector (a fitted box mapping stores them, and
      :func:`pyg_sdfl.detection.registry.detector_from_record` rebuilds a detector from
      ``{"name": detector.name, **detector.params}``);
    * ``from_params(params)``: a classmethod, ``cls(**params)`` restricted to the keys it knows.

    Where a detector is only called (:func:`pyg_sdfl.detection.mapping.collect_box_pairs`, the
    Landmarker), any callable with the same signature works.
    """

    name: str

    @property
    def params(self) -> Dict[str, Any]:
        ...

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Detector":
        ...

    def __call__(self, image: np.ndarray) -> List[Detection]:
        ...


def check_image(image: Any) -> np.ndarray:
    """A detector's input: uint8 ``(H, W, 3)`` RGB or ``(H, W)`` gray, returned C-contiguous;
    ``ValueError`` otherwise."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected a uint8 (H, W, 3) RGB or (H, W) gray image, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def reduced_copy(image: np.ndarray, max_side: int) -> Tuple[np.ndarray, float, float]:
    """``image`` itself when its longer side is at most ``max_side``, else a copy shrunk to that
    side; with the exact per-axis factors back to the original, ``(copy, sx, sy)``: a point ``x`` on
    the copy's pixel-edge frame is ``x * sx`` on the original's. Detectors run on it so that a
    24-megapixel photo costs about as much as a 1-megapixel one.

    The shrink by ``r = max(H, W) / max_side`` is ``h = floor(log2 r)`` halvings (means of 2 x 2
    pixels: OpenCV's fast area path, the image first padded by repeating its last row and column to
    a multiple of ``2^h``), then one bilinear resize by the rest, ``r / 2^h`` in ``[1, 2)``: 5.5 against
    46 ms for one area resize at the exact factor, a 4000 x 3000 photo to 1024 px on one core (AMD EPYC
    VM); 11.5 against 83 ms at 6000 x 4000.
    """
    h, w = image.shape[:2]
    factor = max_side / max(h, w)
    if factor >= 1.0:
        return image, 1.0, 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    halvings = max(0, math.floor(math.log2(1.0 / factor) + 1e-9))
    f = 2**halvings
    small = halved(image, halvings)  # covers the padded frame, f * its size in original pixels
    copy = small if (small.shape[1], small.shape[0]) == size else cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)
    return copy, f * small.shape[1] / copy.shape[1], f * small.shape[0] / copy.shape[0]


def check_detections(detections: Any, image_shape: Sequence[int]) -> List[Detection]:
    """Check a detector's output on an image of shape ``image_shape``; return it unchanged.

    It must be a list of :class:`Detection`, each with a finite float64 ``(4,)`` box of positive
    size that overlaps the image (``-0.5 .. W - 0.5`` by ``-0.5 .. H - 0.5``), a finite float score
    and ``keypoints`` ``None`` or a finite ``(5, 2)`` array; sorted by score, highest first.
    ``ValueError`` naming the first problem otherwise.
    """
    if not isinstance(detections, list):
        raise ValueError(f"a detector must return a list of Detection, got {type(detections).__name__}")
    H, W = int(image_shape[0]), int(image_shape[1])
    for i, d in enumerate(detections):
        if not isinstance(d, Detection):
            raise ValueError(f"detection {i} is a {type(d).__name__}, not a Detection")
        if not isinstance(d.box, np.ndarray) or d.box.shape != (4,) or d.box.dtype != np.float64:
            raise ValueError(f"detection {i}: box must be a float64 (4,) array, got {d.box!r}")
        x0, y0, x1, y1 = check_boxes(d.box, f"detection {i}")[0]
        if x1 < -0.5 or y1 < -0.5 or x0 > W - 0.5 or y0 > H - 0.5:
            raise ValueError(f"detection {i}: box {d.box.tolist()} lies outside the {W}x{H} image")
        if not isinstance(d.score, float) or not np.isfinite(d.score):
            raise ValueError(f"detection {i}: score must be a finite float, got {d.score!r}")
        if d.keypoints is not None:
            kp = np.asarray(d.keypoints)
            if kp.shape != (5, 2) or not np.isfinite(kp).all():
                raise ValueError(f"detection {i}: keypoints must be None or a finite (5, 2) array, got shape {kp.shape}")
    scores = [d.score for d in detections]
    if scores != sorted(scores, reverse=True):
        raise ValueError(f"detections must be sorted by score, highest first; got {scores}")
    return detections
