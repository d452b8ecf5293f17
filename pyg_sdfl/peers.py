"""Peer landmarkers for side-by-side comparisons: dlib's 68-point shape predictor.

The peer is optional: ``pip install ".[peers]"`` installs ``dlib-bin`` (dlib's Python module,
prebuilt) and ``face-recognition-models``, whose package folder ships
``models/shape_predictor_68_face_landmarks.dat`` (dlib's ensemble-of-regression-trees model,
trained on iBUG 300-W, 68 points in the same order as our ``"300w"`` scheme). Nothing here
downloads anything; without the extra, :func:`require_dlib` raises an ``ImportError`` that names
the extra. The box geometry (:func:`landmark_boxes`, :func:`box_iou`, :class:`BoxStyle`,
:func:`fit_box_style`, :func:`match_detection`) needs neither.

Boxes are float ``(M, 4)`` arrays ``x0, y0, x1, y1`` in the package's coordinates (0-based pixel
centres, :mod:`pyg_sdfl.data`); as in :mod:`pyg_sdfl.detection`, a box covering pixel columns
``i..j`` runs from ``i - 0.5`` to ``j + 0.5``, so dlib's integer, inclusive
``rectangle(left, top, right, bottom)`` is ``(left - 0.5, top - 0.5, right + 0.5, bottom + 0.5)``.
A landmark box is the tight box of the points themselves.

Box styles. A shape predictor is trained on boxes of one style (dlib's: its own HOG face
detector's) and is fed the wrong style at its peril. :class:`BoxStyle` converts a tight
landmark box (centre ``c``, size ``w x h``) into another style with four scalars:

    c' = c + (dx w, dy h)        w' = sx w        h' = sy h

:func:`fit_box_style` learns them from pairs (landmark box, detector box) of training faces.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from pyg_sdfl.detection import _check_boxes, box_iou  # one box check and IoU for detection and the peers benchmark

__all__ = [
    "PEERS_EXTRA_HINT",
    "DLIB_68_MODEL",
    "BoxStyle",
    "DlibFaceDetector",
    "DlibShapePredictor",
    "box_iou",
    "dlib_model_path",
    "fit_box_style",
    "landmark_boxes",
    "match_detection",
    "require_dlib",
]

PEERS_EXTRA_HINT = 'pip install ".[peers]"  (dlib-bin + face-recognition-models)'
DLIB_68_MODEL = "shape_predictor_68_face_landmarks.dat"


# ----------------------------------------------------------------------------- box geometry
def _boxes(boxes: Any, name: str) -> np.ndarray:
    """``(M, 4)`` boxes; empty ones (x1 == x0) allowed: the detection module's check."""
    return _check_boxes(boxes, name, allow_empty=True)


def landmark_boxes(landmarks: Any) -> np.ndarray:
    """Tight boxes ``(M, 4)`` of landmarks ``(M, N, 2)`` (or one box ``(1, 4)`` from ``(N, 2)``)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[-1] != 2 or pts.shape[1] == 0:
        raise ValueError(f"landmarks must have shape (M, N, 2) or (N, 2); got {np.shape(landmarks)}")
    if not np.isfinite(pts).all():
        raise ValueError("landmarks contain NaN or infinite values")
    return np.concatenate([pts.min(axis=1), pts.max(axis=1)], axis=1)


def _centre_size(boxes: np.ndarray):
    return (boxes[:, :2] + boxes[:, 2:]) / 2.0, boxes[:, 2:] - boxes[:, :2]


@dataclass(frozen=True)
class BoxStyle:
    """Landmark box -> box of another style: ``c' = c + (dx w, dy h)``, ``w' = sx w``, ``h' = sy h``.

    ``dx, dy`` are centre offsets in units of the landmark box's width and height (``dy > 0``:
    the new box sits lower); ``sx, sy`` its size ratios. The identity is ``BoxStyle(0, 0, 1, 1)``.
    """

    dx: float = 0.0
    dy: float = 0.0
    sx: float = 1.0
    sy: float = 1.0

    def __post_init__(self) -> None:
        for name in ("dx", "dy", "sx", "sy"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"BoxStyle.{name} must be finite, got {getattr(self, name)!r}")
        if self.sx <= 0 or self.sy <= 0:
            raise ValueError(f"BoxStyle scales must be positive, got sx={self.sx}, sy={self.sy}")

    def apply(self, boxes: Any) -> np.ndarray:
        """Convert landmark boxes ``(M, 4)`` to this style, ``(M, 4)``."""
        centre, size = _centre_size(_boxes(boxes, "boxes"))
        new_centre = centre + np.array([self.dx, self.dy]) * size
        half = np.array([self.sx, self.sy]) * size / 2.0
        return np.concatenate([new_centre - half, new_centre + half], axis=1)

    def to_dict(self) -> Dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def fit_box_style(landmark_box: Any, target_box: Any, robust: bool = True) -> BoxStyle:
    """Learn the :class:`BoxStyle` that maps ``landmark_box (M, 4)`` onto ``target_box (M, 4)``.

    Per face ``m``: ``dx_m = (c'_x - c_x) / w``, ``dy_m = (c'_y - c_y) / h``, ``sx_m = w' / w``,
    ``sy_m = h' / h``; each parameter is their median (``robust=True``, insensitive to a few
    mismatched pairs) or mean. Landmark boxes of zero width or height raise ``ValueError``.
    """
    src, dst = _boxes(landmark_box, "landmark_box"), _boxes(target_box, "target_box")
    if src.shape != dst.shape:
        raise ValueError(f"landmark_box {src.shape} and target_box {dst.shape} must pair up one to one")
    c, s = _centre_size(src)
    c2, s2 = _centre_size(dst)
    if (s <= 0).any():
        raise ValueError("landmark boxes of zero width or height cannot define a box style")
    offsets = (c2 - c) / s
    scales = s2 / s
    reduce = np.median if robust else np.mean
    return BoxStyle(
        dx=float(reduce(offsets[:, 0])), dy=float(reduce(offsets[:, 1])),
        sx=float(reduce(scales[:, 0])), sy=float(reduce(scales[:, 1])),
    )


def match_detection(landmark_box: Any, detections: Any, min_iou: float = 0.3) -> Optional[int]:
    """Index of the detection ``(K, 4)`` that overlaps the face's landmark box ``(4,)`` most, or
    ``None`` when there is no detection or the best IoU is below ``min_iou``."""
    det = np.asarray(detections, dtype=np.float64).reshape(-1, 4)
    if det.shape[0] == 0:
        return None
    iou = box_iou(landmark_box, det)[0]
    best = int(np.argmax(iou))
    return best if iou[best] >= min_iou else None


# ----------------------------------------------------------------------------- dlib
def require_dlib() -> Any:
    """Import and return ``dlib``; ``ImportError`` naming the ``[peers]`` extra when absent."""
    try:
        return importlib.import_module("dlib")
    except ImportError as err:
        raise ImportError(f"dlib is not installed; install the peers extra: {PEERS_EXTRA_HINT}") from err


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


def _rgb_uint8(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"image must be uint8 (H, W) grayscale or (H, W, 3) RGB; got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def _rectangle(dlib: Any, box: Any) -> Any:
    """Box ``x0, y0, x1, y1`` -> dlib's inclusive integer rectangle (nearest pixel edges)."""
    x0, y0, x1, y1 = _boxes(box, "box")[0]
    left, top = int(round(x0 + 0.5)), int(round(y0 + 0.5))
    right, bottom = max(left, int(round(x1 - 0.5))), max(top, int(round(y1 - 0.5)))
    return dlib.rectangle(left, top, right, bottom)


def _from_rectangle(rect: Any) -> Tuple[float, float, float, float]:
    return rect.left() - 0.5, rect.top() - 0.5, rect.right() + 0.5, rect.bottom() + 0.5


class DlibShapePredictor:
    """dlib's shape predictor: ``(image, box) -> (N, 2)`` float64 landmarks in image pixels.

    Args:
        model_path: a ``.dat`` model; default :func:`dlib_model_path` (the 68-point model).

    ``image`` is uint8 RGB ``(H, W, 3)`` or grayscale; ``box`` is ``x0, y0, x1, y1`` (snapped to
    the nearest pixel edges: dlib's rectangles are integer). dlib returns integer pixel positions (its ``point`` type), so the
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
        shape = self._predictor(_rgb_uint8(image), _rectangle(self._dlib, box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def __repr__(self) -> str:
        return f"DlibShapePredictor({self.model_path.name}, {self.num_points} points)"


class DlibFaceDetector:
    """dlib's frontal face detector (HOG + linear SVM): ``image -> (K, 4)`` boxes, best first.

    Args:
        upsample: times the image is upsampled before detection (finds faces smaller than
            about 80 / 2**upsample pixels); 0 is enough for faces of 80 px and more.
    """

    def __init__(self, upsample: int = 0) -> None:
        if int(upsample) < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        self._dlib = require_dlib()
        self.upsample = int(upsample)
        self._detector = self._dlib.get_frontal_face_detector()

    def __call__(self, image: Any, upsample: Optional[int] = None) -> np.ndarray:
        times = self.upsample if upsample is None else int(upsample)
        rects, scores, _ = self._detector.run(_rgb_uint8(image), times, 0.0)
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        boxes = np.array([_from_rectangle(r) for r in rects], dtype=np.float64).reshape(-1, 4)
        return boxes[order]
