"""How a detector's box sits on a face: one fitted relation, used in both directions.

A face detector's box is not the box the model was trained on. Training crops are squares of
``crop_scale`` times the side of the *landmark square* (centre and longer side of the tight box
around the 68 points, :mod:`pyg_sdfl.geometry`); the Haar detector returns a square that sits
higher on the face (around the eyes) and, on 300-W, is a little larger. Conversely, dlib's shape
predictor was trained on its own HOG detector's boxes and wants a box of that style when it is
given a landmark box.

Both are the same concept, a **detector box model** (:class:`DetectorBoxModel`): a relation between
a detector's box and the landmark box of the same face, a few scalars in units of the box size,
fitted on training faces (pairs found by :func:`pyg_sdfl.geometry.match_detection`), usable
both ways:

* ``squares(detector_boxes)``: detector box -> landmark square (to crop a detected face);
* ``detector_boxes(landmark_boxes)``: landmark box -> detector-style box (to feed a model trained
  on detector boxes, such as dlib's shape predictor).

Two parametrisations implement it; each is exact in the direction it was fitted in (and the
committed results were measured with them, so their numbers are kept bit for bit):

:class:`BoxMapping` (Haar, shipped as ``pyg_sdfl/weights/haar_box_mapping.json``), fitted
detector -> landmark square by a trimmed mean (``pyg-sdfl fit-box-mapping``), with ``x0, y0, w, h``
the detector box:

    cx   = x0 + a_x * w           (landmark-square centre)
    cy   = y0 + a_y * h
    side = s * sqrt(w * h)        (landmark-square side: the longer side of the landmark box)

and the inverse for square detector boxes (Haar's are): ``w = h = side / s``, ``x0 = cx - a_x w``,
``y0 = cy - a_y h``.

:class:`BoxStyle` (dlib, fitted by ``benchmarks/peers.py``), fitted landmark box -> detector box by
medians, with ``c, w, h`` the landmark box's centre and size:

    c' = c + (dx w, dy h)        w' = sx w        h' = sy h

and the inverse ``w = w' / sx``, ``h = h' / sy``, ``c = c' - (dx w, dy h)``, then the landmark square.

The Landmarker crops ``crop_scale * side`` around ``(cx, cy)``, exactly as at training time.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from pyg_sdfl.detection.base import Detector
from pyg_sdfl.geometry import box_square, check_boxes, landmark_box, landmark_square, match_detection
from pyg_sdfl.json_files import read_json

__all__ = [
    "DetectorBoxModel",
    "BoxMapping",
    "BoxStyle",
    "fit_box_mapping",
    "fit_box_style",
    "mapping_errors",
    "summarize_errors",
    "collect_box_pairs",
    "match_annotated_faces",
    "default_box_mapping_path",
    "load_default_box_mapping",
    "detector_mapping_path",
    "load_mapping",
    "load_detector_mapping",
    "mapping_from_dict",
]


class DetectorBoxModel(Protocol):
    """A detector's box <-> the face's landmark geometry (see the module docstring)."""

    def squares(self, detector_boxes: Any) -> np.ndarray:
        """Detector boxes ``(M, 4)`` -> landmark squares ``(M, 3)`` as ``cx, cy, side``."""
        ...

    def detector_boxes(self, landmark_boxes: Any) -> np.ndarray:
        """Landmark boxes ``(M, 4)`` -> detector-style boxes ``(M, 4)``."""
        ...


def _centre_size(boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes ``(M, 4)`` -> centres ``(M, 2)`` and sizes ``(M, 2)``."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2.0, boxes[:, 2:] - boxes[:, :2]


@dataclass(frozen=True)
class BoxMapping:
    """Detector box <-> landmark square, the Haar parametrisation (formulas in the module docstring).

    Attributes:
        a_x, a_y: centre offsets in units of the detector box's width and height.
        s: landmark-square side over the detector box's side ``sqrt(w h)``.
        detector: the detector settings the mapping was fitted with (use the same at inference).
        info: provenance and fit statistics (faces used, residuals), free-form.
    """

    a_x: float
    a_y: float
    s: float
    detector: Dict[str, Any] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("a_x", "a_y", "s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"BoxMapping.{name} must be a finite number, got {value!r}")
        if self.s <= 0:
            raise ValueError(f"BoxMapping.s must be positive, got {self.s}")

    def squares(self, detector_boxes: Any) -> np.ndarray:
        """Detector boxes ``(M, 4)`` -> landmark squares ``(M, 3)`` as ``cx, cy, side``:
        ``cx = x0 + a_x w``, ``cy = y0 + a_y h``, ``side = s sqrt(w h)``."""
        b = check_boxes(detector_boxes, "detector boxes")
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        return np.stack([b[:, 0] + self.a_x * w, b[:, 1] + self.a_y * h, self.s * np.sqrt(w * h)], axis=1)

    def detector_boxes(self, landmark_boxes: Any) -> np.ndarray:
        """Landmark boxes ``(M, 4)`` -> square detector boxes ``(M, 4)``, the inverse of
        :meth:`squares`: from the landmark square ``(cx, cy, side)``, ``w = h = side / s``,
        ``x0 = cx - a_x w``, ``y0 = cy - a_y h``."""
        cx, cy, side = box_square(check_boxes(landmark_boxes, "landmark boxes")).T
        w = side / self.s
        x0, y0 = cx - self.a_x * w, cy - self.a_y * w
        return np.stack([x0, y0, x0 + w, y0 + w], axis=1)

    def crop_squares(self, detections: Sequence[Any]) -> np.ndarray:
        """Detections (:class:`~pyg_sdfl.detection.base.Detection`) -> oriented landmark squares
        ``(M, 4)`` as ``cx, cy, side, angle``: :meth:`squares` of their boxes, angle 0 (a box says
        nothing of the face's roll)."""
        if not len(detections):
            return np.zeros((0, 4))
        sq = self.squares(np.stack([d.box for d in detections]))
        return np.concatenate([sq, np.zeros((len(sq), 1))], axis=1)

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": "box", **asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BoxMapping":
        missing = {"a_x", "a_y", "s"} - set(d)
        if missing:
            raise ValueError(f"box mapping is missing {sorted(missing)}")
        return cls(float(d["a_x"]), float(d["a_y"]), float(d["s"]), dict(d.get("detector", {})), dict(d.get("info", {})))

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "BoxMapping":
        return cls.from_dict(read_json(path, "box mapping file"))


@dataclass(frozen=True)
class BoxStyle:
    """Landmark box <-> detector box, the dlib parametrisation: ``c' = c + (dx w, dy h)``,
    ``w' = sx w``, ``h' = sy h`` (``c, w, h`` of the landmark box; module docstring).

    ``dx, dy`` are centre offsets in units of the landmark box's width and height (``dy > 0``:
    the detector box sits lower); ``sx, sy`` its size ratios. The identity is ``BoxStyle(0, 0, 1, 1)``.
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

    def detector_boxes(self, landmark_boxes: Any) -> np.ndarray:
        """Landmark boxes ``(M, 4)`` -> boxes of this style ``(M, 4)``."""
        centre, size = _centre_size(check_boxes(landmark_boxes, "boxes", allow_empty=True))
        new_centre = centre + np.array([self.dx, self.dy]) * size
        half = np.array([self.sx, self.sy]) * size / 2.0
        return np.concatenate([new_centre - half, new_centre + half], axis=1)

    def squares(self, detector_boxes: Any) -> np.ndarray:
        """Detector boxes ``(M, 4)`` -> landmark squares ``(M, 3)``, the inverse of
        :meth:`detector_boxes`: ``w = w' / sx``, ``h = h' / sy``, ``c = c' - (dx w, dy h)``, then
        the centre and the longer side."""
        centre, size = _centre_size(check_boxes(detector_boxes, "detector boxes"))
        size = size / np.array([self.sx, self.sy])
        centre = centre - np.array([self.dx, self.dy]) * size
        return np.concatenate([centre, size.max(axis=1, keepdims=True)], axis=1)

    def to_dict(self) -> Dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def fit_box_style(landmark_boxes: Any, detector_boxes: Any, robust: bool = True) -> BoxStyle:
    """Learn the :class:`BoxStyle` that maps ``landmark_boxes (M, 4)`` onto ``detector_boxes (M, 4)``.

    Per face ``m``: ``dx_m = (c'_x - c_x) / w``, ``dy_m = (c'_y - c_y) / h``, ``sx_m = w' / w``,
    ``sy_m = h' / h``; each parameter is their median (``robust=True``, insensitive to a few
    mismatched pairs) or mean. Landmark boxes of zero width or height raise ``ValueError``.
    """
    src = check_boxes(landmark_boxes, "landmark_boxes", allow_empty=True)
    dst = check_boxes(detector_boxes, "detector_boxes", allow_empty=True)
    if src.shape != dst.shape:
        raise ValueError(f"landmark_boxes {src.shape} and detector_boxes {dst.shape} must pair up one to one")
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


def _relative_targets(det: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Per face, the three quantities the mapping models as constants:
    ``((cx - x0) / w, (cy - y0) / h, side / sqrt(w h))``."""
    w, h = det[:, 2] - det[:, 0], det[:, 3] - det[:, 1]
    return np.stack([(squares[:, 0] - det[:, 0]) / w, (squares[:, 1] - det[:, 1]) / h,
                     squares[:, 2] / np.sqrt(w * h)], axis=1)


def mapping_errors(mapping: DetectorBoxModel, detector_boxes: np.ndarray, squares: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-face errors of the mapped squares against the true landmark squares ``(M, 3)``:
    ``centre`` = centre distance / true side, ``side_ratio`` = mapped side / true side."""
    pred = mapping.squares(detector_boxes)
    sq = np.asarray(squares, dtype=np.float64).reshape(-1, 3)
    return {"centre": np.linalg.norm(pred[:, :2] - sq[:, :2], axis=1) / sq[:, 2], "side_ratio": pred[:, 2] / sq[:, 2]}


def summarize_errors(errors: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Median, mean and 90th percentile of :func:`mapping_errors`' centre error, and the median,
    10th and 90th percentiles of its side ratio."""
    c, r = errors["centre"], errors["side_ratio"]
    return {
        "centre_error_over_side_median": float(np.median(c)),
        "centre_error_over_side_mean": float(np.mean(c)),
        "centre_error_over_side_p90": float(np.percentile(c, 90)),
        "side_ratio_median": float(np.median(r)),
        "side_ratio_p10": float(np.percentile(r, 10)),
        "side_ratio_p90": float(np.percentile(r, 90)),
    }


def fit_box_mapping(
    detector_boxes: np.ndarray,
    squares: np.ndarray,
    trim: Optional[float] = 4.0,
    detector: Optional[Mapping[str, Any]] = None,
    info: Optional[Mapping[str, Any]] = None,
) -> BoxMapping:
    """Least-squares fit of :class:`BoxMapping` to pairs of detector boxes ``(M, 4)`` and true
    landmark squares ``(M, 3)`` (``cx, cy, side``).

    Each parameter is a constant in relative units (``(cx - x0) / w`` etc.), so its
    least-squares estimate is the mean of the per-face values; errors are weighted alike for
    small and large faces. With ``trim``, faces whose value lies more than ``trim`` robust standard
    deviations (1.4826 x MAD) from the median in any of the three are dropped first (wrong
    matches); the count is recorded in ``info``.
    """
    det = check_boxes(detector_boxes, "detector boxes")
    sq = np.asarray(squares, dtype=np.float64)
    if sq.ndim != 2 or sq.shape[1] != 3 or sq.shape[0] != det.shape[0]:
        raise ValueError(f"squares must have shape ({det.shape[0]}, 3) as cx, cy, side, got {sq.shape}")
    if not np.isfinite(sq).all() or (sq[:, 2] <= 0).any():
        raise ValueError("squares must be finite with positive sides")
    if det.shape[0] < 3:
        raise ValueError(f"need at least 3 face pairs to fit a box mapping, got {det.shape[0]}")
    rel = _relative_targets(det, sq)
    keep = np.ones(len(rel), dtype=bool)
    if trim is not None:
        med = np.median(rel, axis=0)
        mad = 1.4826 * np.median(np.abs(rel - med), axis=0)
        keep = (np.abs(rel - med) <= trim * np.maximum(mad, 1e-12)).all(axis=1)
    a_x, a_y, s = rel[keep].mean(axis=0)
    fit_info = dict(info or {})
    fit_info.update({"faces_paired": int(len(rel)), "faces_used": int(keep.sum()),
                     "faces_trimmed": int((~keep).sum()), "trim_robust_sd": trim})
    mapping = BoxMapping(float(a_x), float(a_y), float(s), dict(detector or {}), fit_info)
    fit_info["residuals_used"] = summarize_errors(mapping_errors(mapping, det[keep], sq[keep]))
    fit_info["residuals_all_paired"] = summarize_errors(mapping_errors(mapping, det, sq))
    return mapping


def match_annotated_faces(samples: Sequence[Any], detector: Detector, progress: bool = False
                          ) -> Tuple[List[Tuple[Any, np.ndarray]], int, float]:
    """Run ``detector`` on every annotated face's image and keep the detection that matches the
    face (:func:`~pyg_sdfl.geometry.match_detection`, no IoU threshold: the centre inside the
    landmark box and the best IoU).

    ``samples`` are :class:`~pyg_sdfl.data.sample.FaceSample` (one annotated face per image, as in
    300-W). Returns ``([(detection, landmarks (N, 2)), ...], faces_without_match, detector_seconds)``
    (the time spent in the detector alone); ``progress`` shows a bar on a terminal.
    """
    import sys
    import time

    from tqdm import tqdm

    pairs, missed, seconds = [], 0, 0.0
    for sample in tqdm(samples, desc=f"detecting ({getattr(detector, 'name', 'detector')})", unit="img",
                       disable=None if progress else True, file=sys.stderr):  # None: off when not a terminal
        pts = np.asarray(sample.landmarks, dtype=np.float64)
        image = sample.load_image()
        t0 = time.perf_counter()
        detections = detector(image)
        seconds += time.perf_counter() - t0
        k = match_detection(landmark_box(pts), [d.box for d in detections])
        if k is None:
            missed += 1
        else:
            pairs.append((detections[k], pts))
    return pairs, missed, seconds


def collect_box_pairs(samples: Sequence[Any], detector: Detector) -> Tuple[np.ndarray, np.ndarray, int]:
    """:func:`match_annotated_faces` as arrays: ``(detector_boxes (M, 4), true landmark squares (M, 3),
    faces_without_match)``."""
    pairs, missed, _ = match_annotated_faces(samples, detector)
    boxes = [d.box for d, _ in pairs]
    squares = [landmark_square(pts) for _, pts in pairs]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(squares, dtype=np.float64).reshape(-1, 3), missed


def default_box_mapping_path() -> Path:
    """Where the package's fitted Haar mapping lives: ``pyg_sdfl/weights/haar_box_mapping.json``
    (:func:`detector_mapping_path` of ``"haar"``)."""
    return detector_mapping_path("haar")


def load_default_box_mapping() -> Optional[BoxMapping]:
    """The package's fitted mapping, or ``None`` when the file is absent."""
    path = default_box_mapping_path()
    return BoxMapping.load(path) if path.is_file() else None


def detector_mapping_path(name: str) -> Path:
    """Where the package's fitted mapping of detector ``name`` lives:
    ``pyg_sdfl/weights/<name>_box_mapping.json`` (whether or not it is there)."""
    from importlib.resources import files

    return Path(str(files("pyg_sdfl.weights") / f"{name}_box_mapping.json"))


def mapping_from_dict(d: Mapping[str, Any]) -> Any:
    """A mapping record -> :class:`BoxMapping` (``kind`` "box" or absent, as in the files written
    before keypoint mappings existed) or :class:`~pyg_sdfl.detection.keypoint_mapping.KeypointMapping`
    (``kind`` "keypoints")."""
    kind = d.get("kind", "box")
    if kind == "box":
        return BoxMapping.from_dict(d)
    if kind == "keypoints":
        from pyg_sdfl.detection.keypoint_mapping import KeypointMapping

        return KeypointMapping.from_dict(d)
    raise ValueError(f"unknown box mapping kind {kind!r} (expected 'box' or 'keypoints')")


def load_mapping(path: Union[str, Path]) -> Any:
    """A mapping file (either kind, :func:`mapping_from_dict`); errors name the file."""
    data = read_json(path, "box mapping file")
    try:
        return mapping_from_dict(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def load_detector_mapping(name: str) -> Optional[Any]:
    """The package's fitted mapping of detector ``name``, or ``None`` when it has none."""
    path = detector_mapping_path(name)
    return load_mapping(path) if path.is_file() else None
