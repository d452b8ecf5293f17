"""Peer landmarkers for side-by-side comparisons: dlib's 68-point shape predictor.

The peer is optional: ``pip install ".[peers]"`` installs ``dlib-bin`` (dlib's Python module,
prebuilt) and ``face-recognition-models``, whose package folder ships
``models/shape_predictor_68_face_landmarks.dat`` (dlib's ensemble-of-regression-trees model,
trained on iBUG 300-W, 68 points in the same order as our ``"300w"`` scheme). Nothing here
downloads anything; without the extra, :func:`~pyg_sdfl.detection.dlib.require_dlib` and
:func:`dlib_model_path` raise errors that name the extra.

dlib's own face detector is :class:`pyg_sdfl.detection.dlib.DlibFaceDetector`; the box in its style
for a landmark box is :class:`pyg_sdfl.detection.mapping.BoxStyle`; boxes follow
:mod:`pyg_sdfl.geometry`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Union

import numpy as np

from pyg_sdfl.detection.base import check_image
from pyg_sdfl.detection.dlib import PEERS_EXTRA_HINT, box_to_rectangle, require_dlib

__all__ = ["DLIB_68_MODEL", "DlibShapePredictor", "dlib_model_path"]

DLIB_68_MODEL = "shape_predictor_68_face_landmarks.dat"


def dlib_model_path(name: str = DLIB_68_MODEL) -> Path:
    """Path of a dlib model file shipped by ``face-recognition-models`` (``models/<name>``).

    The package is located without importing it: its ``__init__`` imports ``pkg_resources``,
    which setuptools no longer provides (>= 81), so ``pose_predictor_model_location()`` fails on
    current environments while the file itself is there. ``FileNotFoundError`` names the extra.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"face-recognition-models is not installed; install the peers extra: {PEERS_EXTRA_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"{name} not found under {list(spec.submodule_search_locations)} (models/)")


class DlibShapePredictor:
    """dlib's shape predictor: ``(image, box) -> (N, 2)`` float64 landmarks in image pixels.

    Args:
        model_path: a ``.dat`` model; default :func:`dlib_model_path` (the 68-point model).

    ``image`` is uint8 RGB ``(H, W, 3)`` or grayscale; ``box`` is ``x0, y0, x1, y1`` (snapped to
    the nearest pixel edges by :func:`~pyg_sdfl.detection.dlib.box_to_rectangle`: dlib's
    rectangles are integer). dlib returns integer pixel positions (its ``point`` type), so the
    output is quantised to whole pixels: part of the peer as people use it.
    """

    def __init__(self, model_path: Union[str, Path, None] = None) -> None:
        self._dlib = require_dlib()
        self.model_path = Path(model_path) if model_path is not None else dlib_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"dlib model not found: {self.model_path}")
        self._predictor = self._dlib.shape_predictor(str(self.model_path))
        # dlib's Python API does not expose the model's part count before a prediction
        probe = self._predictor(np.zeros((8, 8), np.uint8), self._dlib.rectangle(0, 0, 7, 7))
        self.num_points = int(probe.num_parts)

    def __call__(self, image: Any, box: Any) -> np.ndarray:
        shape = self._predictor(check_image(image), box_to_rectangle(self._dlib, box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def __repr__(self) -> str:
        return f"DlibShapePredictor({self.model_path.name}, {self.num_points} points)"
