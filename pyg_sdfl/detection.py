"""Face detection for inference on arbitrary photos, and the detector-box -> crop mapping.

A face detector's box is not the box the model was trained on. Training crops are squares of
``crop_scale`` times the side of the *landmark* box (the tight box around the 68 points, jaw to
brows); the Haar face detector returns a square that sits higher on the face (around the eyes)
and, on 300-W, is a little larger than the landmark box. :class:`BoxMapping` is the learned link between the two: three scalars fitted
by least squares on the 300-W training set (``pyg-sdfl fit-box-mapping``),

    cx   = x0 + a_x * w           (landmark-square centre)
    cy   = y0 + a_y * h
    side = s * sqrt(w * h)        (landmark-square side: the longer side of the landmark box)

where ``x0, y0, w, h`` is the detector box. The Landmarker then crops ``crop_scale * side`` around
``(cx, cy)``, exactly as at training time.

Box convention (the package's): 0-based pixel *centres*; a box ``(x0, y0, x1, y1)`` covering pixel
columns ``i..j`` runs from ``i - 0.5`` to ``j + 0.5``. OpenCV's rectangle ``(x, y, w, h)`` is thus
``(x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5)``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "HAAR_CASCADE",
    "Detection",
    "HaarFaceDetector",
    "BoxMapping",
    "box_iou",
    "match_detection",
    "landmark_square",
    "square_to_box",
    "collect_box_pairs",
    "fit_box_mapping",
    "fit_box_mapping_on_samples",
    "mapping_errors",
    "default_box_mapping_path",
    "load_default_box_mapping",
]

HAAR_CASCADE = "haarcascade_frontalface_default.xml"


def _cascade_path(name: str) -> Path:
    """A cascade file from OpenCV's own ``cv2.data`` folder (shipped with opencv-python)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if folder and (Path(folder) / name).is_file():
        return Path(folder) / name
    raise FileNotFoundError(
        f"Haar cascade {name!r} not found in OpenCV's cv2.data folder ({folder!r}); "
        "install the pinned opencv-python-headless (4.12), which ships it"
    )


def _check_boxes(boxes: Any, where: str, allow_empty: bool = False) -> np.ndarray:
    """``(M, 4)`` float64 boxes x0, y0, x1, y1 (one ``(4,)`` box becomes ``(1, 4)``); finite, and with
    x1 > x0, y1 > y0 (x1 >= x0, y1 >= y0 with ``allow_empty``)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{where}: boxes must have shape (M, 4) as x0, y0, x1, y1, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: boxes contain NaN or infinite values")
    if allow_empty:
        bad = np.flatnonzero((arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1]))
        rule = "x1 < x0 or y1 < y0"
    else:
        bad = np.flatnonzero((arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1]))
        rule = "x1 <= x0 or y1 <= y0"
    if bad.size:
        raise ValueError(f"{where}: box {arr[bad[0]].tolist()} has {rule} (expected x0, y0, x1, y1)")
    return arr


# --------------------------------------------------------------------------------- detector
@dataclass(frozen=True, eq=False)
class Detection:
    """One detected face: ``box`` float64 ``(4,)`` x0, y0, x1, y1 (pixel-centre convention) and
    ``score``, the cascade's level weight (higher is more confident; not a probability)."""

    box: np.ndarray
    score: float


class HaarFaceDetector:
    """The classic frontal-face Haar cascade (Viola-Jones, ``haarcascade_frontalface_default.xml``
    from ``cv2.data``), run by OpenCV's ``CascadeClassifier.detectMultiScale3``. (OpenCV 5 ships
    neither the classifier nor the file, which is why the project pins opencv-python-headless 4.12.)

    The gray image is histogram-equalised first. Large images are detected on a copy whose
    longer side is at most ``max_side`` pixels (area interpolation) and the boxes are scaled
    back, so a 24-megapixel photo costs about as much as a 1-megapixel one. ``min_size`` is in
    pixels of that (possibly reduced) copy.

    The score is the cascade's last-stage sum, the best within the detection's cluster (OpenCV's
    ``levelWeights`` with ``outputRejectLevels=True``): larger for more face-like windows, not a
    probability, comparable between detections of this detector only.
    """

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 30,
        max_side: int = 1024,
        cascade: str = HAAR_CASCADE,
    ) -> None:
        if not scale_factor > 1:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor!r}")
        if int(min_neighbors) < 0 or int(min_size) < 1 or int(max_side) < 32:
            raise ValueError(
                f"need min_neighbors >= 0, min_size >= 1 and max_side >= 32; got {min_neighbors}, {min_size}, {max_side}"
            )
        self._cascade = cv2.CascadeClassifier(str(_cascade_path(cascade)))
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV could not load the Haar cascade {cascade!r}")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)
        self.max_side = int(max_side)
        self.cascade = cascade

    @property
    def params(self) -> Dict[str, Any]:
        """The settings, as stored next to a fitted :class:`BoxMapping`."""
        return {"cascade": self.cascade, "scale_factor": self.scale_factor, "min_neighbors": self.min_neighbors,
                "min_size": self.min_size, "max_side": self.max_side}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "HaarFaceDetector":
        return cls(**{k: params[k] for k in ("scale_factor", "min_neighbors", "min_size", "max_side", "cascade") if k in params})

    def __call__(self, image: np.ndarray) -> List[Detection]:
        """Faces in ``image`` (``(H, W, 3)`` uint8 RGB or ``(H, W)`` gray), most confident first."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"expected a uint8 (H, W, 3) RGB or (H, W) gray image, got {image.dtype} {image.shape}")
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        h, w = gray.shape
        factor = min(1.0, self.max_side / max(h, w))
        if factor < 1.0:
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        sx, sy = w / gray.shape[1], h / gray.shape[0]  # exact per-axis factors back to the original
        gray = cv2.equalizeHist(gray)
        rects, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        out = []
        for (x, y, bw, bh), score in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            # OpenCV's rectangle edges are at integer coordinates of the pixel-edge frame;
            # scale them back, then shift by half a pixel into the pixel-centre frame.
            box = np.array([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy], dtype=np.float64) - 0.5
            out.append(Detection(box=box, score=float(score)))
        out.sort(key=lambda d: -d.score)
        return out

    def __repr__(self) -> str:
        return f"HaarFaceDetector({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"


# --------------------------------------------------------------------------------- geometry
def box_iou(a: Any, b: Any) -> np.ndarray:
    """Intersection over union ``(M, K)`` of boxes ``a (M, 4)`` and ``b (K, 4)`` (continuous areas;
    empty boxes are allowed and give 0)."""
    a = _check_boxes(a, "box_iou a", allow_empty=True)
    b = _check_boxes(b, "box_iou b", allow_empty=True)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(axis=-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def landmark_square(landmarks: np.ndarray) -> Tuple[float, float, float]:
    """``(cx, cy, side)`` of the landmark box: its centre and its longer side (``(N, 2)`` input);
    the same as ``crop_box_from_landmarks(landmarks, scale=1.0)``."""
    from pyg_sdfl.data.transforms import crop_box_from_landmarks

    return crop_box_from_landmarks(landmarks, 1.0)


def square_to_box(cx: float, cy: float, side: float) -> np.ndarray:
    """A square ``(cx, cy, side)`` as a ``(4,)`` box x0, y0, x1, y1."""
    h = side / 2.0
    return np.array([cx - h, cy - h, cx + h, cy + h], dtype=np.float64)


def match_detection(detections: Sequence[Detection], landmark_box: np.ndarray) -> Optional[int]:
    """Index of the detection that belongs to the annotated face, or ``None``.

    The rule: among detections whose centre lies inside the landmark box, the one with the
    highest IoU with it.
    """
    if not detections:
        return None
    lb = _check_boxes(landmark_box, "landmark box")[0]
    boxes = np.stack([d.box for d in detections])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    inside = (centres[:, 0] >= lb[0]) & (centres[:, 0] <= lb[2]) & (centres[:, 1] >= lb[1]) & (centres[:, 1] <= lb[3])
    if not inside.any():
        return None
    iou = box_iou(boxes, lb)[:, 0]
    iou[~inside] = -1.0
    return int(np.argmax(iou))


# --------------------------------------------------------------------------------- mapping
@dataclass(frozen=True)
class BoxMapping:
    """Detector box -> landmark square (see the module docstring for the formula).

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

    def squares(self, boxes: np.ndarray) -> np.ndarray:
        """Detector boxes ``(M, 4)`` -> landmark squares ``(M, 3)`` as ``cx, cy, side``."""
        b = _check_boxes(boxes, "detector boxes")
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        return np.stack([b[:, 0] + self.a_x * w, b[:, 1] + self.a_y * h, self.s * np.sqrt(w * h)], axis=1)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

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
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"box mapping file not found: {path}")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(d)


def _relative_targets(det: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Per face, the three quantities the mapping models as constants:
    ``((cx - x0) / w, (cy - y0) / h, side / sqrt(w h))``."""
    w, h = det[:, 2] - det[:, 0], det[:, 3] - det[:, 1]
    return np.stack([(squares[:, 0] - det[:, 0]) / w, (squares[:, 1] - det[:, 1]) / h,
                     squares[:, 2] / np.sqrt(w * h)], axis=1)


def mapping_errors(mapping: BoxMapping, detector_boxes: np.ndarray, squares: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-face errors of the mapped squares against the true landmark squares ``(M, 3)``:
    ``centre`` = centre distance / true side, ``side_ratio`` = mapped side / true side."""
    pred = mapping.squares(detector_boxes)
    sq = np.asarray(squares, dtype=np.float64).reshape(-1, 3)
    return {"centre": np.linalg.norm(pred[:, :2] - sq[:, :2], axis=1) / sq[:, 2], "side_ratio": pred[:, 2] / sq[:, 2]}


def _summary(errors: Mapping[str, np.ndarray]) -> Dict[str, float]:
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
    det = _check_boxes(detector_boxes, "detector boxes")
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
    fit_info["residuals_used"] = _summary(mapping_errors(mapping, det[keep], sq[keep]))
    fit_info["residuals_all_paired"] = _summary(mapping_errors(mapping, det, sq))
    return mapping


def collect_box_pairs(samples: Sequence[Any], detector: HaarFaceDetector) -> Tuple[np.ndarray, np.ndarray, int]:
    """Run ``detector`` on every annotated face and pair the matching detection with the true
    landmark square. Returns ``(detector_boxes (M, 4), squares (M, 3), faces_without_match)``.

    ``samples`` are :class:`~pyg_sdfl.data.sample.FaceSample` (one annotated face per image, as in
    300-W); faces whose image has no detection matching :func:`match_detection` are counted, not
    paired.
    """
    boxes, squares, missed = [], [], 0
    for sample in samples:
        pts = np.asarray(sample.landmarks, dtype=np.float64)
        lbox = np.concatenate([pts.min(axis=0), pts.max(axis=0)])
        detections = detector(sample.load_image())
        k = match_detection(detections, lbox)
        if k is None:
            missed += 1
            continue
        boxes.append(detections[k].box)
        squares.append(landmark_square(pts))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(squares, dtype=np.float64).reshape(-1, 3), missed


def default_box_mapping_path() -> Path:
    """Where the package's fitted Haar mapping lives: ``pyg_sdfl/weights/haar_box_mapping.json``."""
    from importlib.resources import files

    return Path(str(files("pyg_sdfl.weights") / "haar_box_mapping.json"))


def load_default_box_mapping() -> Optional[BoxMapping]:
    """The package's fitted mapping, or ``None`` when the file is absent."""
    path = default_box_mapping_path()
    return BoxMapping.load(path) if path.is_file() else None


def fit_box_mapping_on_samples(
    samples: Sequence[Any], detector: Optional[HaarFaceDetector] = None, data: str = "", trim: Optional[float] = 4.0
) -> BoxMapping:
    """Detect every face of ``samples``, pair the detections with the annotated faces
    (:func:`match_detection`) and fit :class:`BoxMapping` on the pairs (:func:`fit_box_mapping`).
    ``data`` describes the samples for the record (e.g. "300-W train: afw, helen, lfpw")."""
    detector = detector or HaarFaceDetector()
    boxes, squares, missed = collect_box_pairs(samples, detector)
    if len(boxes) < 3:
        raise ValueError(f"the detector matched only {len(boxes)} of {len(samples)} faces: too few to fit a mapping")
    info = {"data": data, "faces_total": len(samples), "faces_unmatched": int(missed),
            "target": "landmark square: centre of the landmark box and its longer side (crop_box_from_landmarks, scale 1.0)",
            "detector_backend": f"cv2.CascadeClassifier (OpenCV {cv2.__version__})",
            "opencv_version": cv2.__version__}
    return fit_box_mapping(boxes, squares, trim=trim, detector=detector.params, info=info)
