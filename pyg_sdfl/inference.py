"""Landmarks on arbitrary photos: load a trained model, find faces, crop, predict, map back.

    from pyg_sdfl.inference import Landmarker
    lm = Landmarker.from_pretrained()                  # the 300-W model shipped in pyg_sdfl/weights/
    faces = lm.predict("photo.jpg")                    # or an (H, W, 3) uint8 RGB array
    faces[0].landmarks                                 # (68, 2) in the photo's pixel coordinates

Each face is cropped exactly as at training time: a square of ``crop_scale`` (1.2) times the
side of the face's *landmark square* (centre and longer side of the tight box around its
landmarks), resized to ``image_size``. Where that square comes from:

- ``boxes`` given with ``box_type="landmark"`` (the default): each box is taken as a landmark box
  (jaw to brows, ear to ear), the square is its centre and longer side;
- ``boxes`` given with ``box_type="detector"``, or no boxes (the Haar face detector finds them):
  the detector box is mapped to the landmark square by the fitted
  :class:`~pyg_sdfl.detection.BoxMapping`.

Predictions come back through the inverse of the crop's affine map, in original-image pixel
coordinates (0-based pixel centres). All faces of an image go through the model in one batch.
Large faces are first shrunk (area interpolation) so that the final bilinear warp never
downsamples by more than 2x; the warp itself touches only the output pixels, so a huge image
costs little more than its decoding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import nn

from pyg_sdfl.data.sample import as_rgb_uint8, read_image
from pyg_sdfl.data.transforms import normalise_image
from pyg_sdfl.detection import BoxMapping, Detector, HaarFaceDetector, load_default_box_mapping
from pyg_sdfl.engine.builders import resolve_device
from pyg_sdfl.engine.checkpoint import CheckpointError, load_model
from pyg_sdfl.geometry import box_square, check_boxes, crop_matrix, crop_to_image, square_to_box
from pyg_sdfl.nn.flip_average import FlipAverage
from pyg_sdfl.schemes import LandmarkScheme, get_scheme

__all__ = ["Face", "Landmarker", "draw_faces", "warp_crop"]

ImageInput = Union[str, Path, np.ndarray]


@dataclass(eq=False)
class Face:
    """One face found in an image.

    Attributes:
        box: float64 ``(4,)`` ``x0, y0, x1, y1`` in the original image: the detector's box, or the
            box that was given.
        landmarks: float64 ``(N, 2)`` landmark coordinates in the original image (0-based pixel
            centres, ``x`` then ``y``).
        score: the detector's confidence (the Haar cascade's last-stage sum: larger is more
            face-like, not a probability), or ``1.0`` for a box that was given.
        crop_box: float64 ``(4,)`` the square the model saw, ``x0, y0, x1, y1`` in the original
            image (it may extend past the image; the outside is black).
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    crop_box: np.ndarray

    def to_dict(self, decimals: int = 2) -> Dict[str, Any]:
        """JSON-friendly ``{"box", "score", "crop_box", "landmarks"}`` (rounded lists)."""
        return {
            "box": [round(float(v), decimals) for v in self.box],
            "score": round(float(self.score), 4),
            "crop_box": [round(float(v), decimals) for v in self.crop_box],
            "landmarks": [[round(float(x), decimals), round(float(y), decimals)] for x, y in self.landmarks],
        }


def warp_crop(image: np.ndarray, matrix: np.ndarray, out_size: int, max_downscale: float = 2.0) -> np.ndarray:
    """Resample ``image`` (``(H, W, 3)`` uint8) through the original -> crop affine ``matrix``
    ``(2, 3)`` (no rotation) into an ``out_size`` square, black outside the image.

    When the crop shrinks the image by more than ``max_downscale``, the region under the crop is
    first reduced with area interpolation, and the bilinear warp does the rest: no aliasing on
    large faces, and only that region is ever resized.
    """
    M = np.asarray(matrix, dtype=np.float64)
    k = min(abs(M[0, 0]), abs(M[1, 1]))  # output pixels per input pixel
    H, W = image.shape[:2]
    if k * max_downscale >= 1.0:
        return cv2.warpAffine(image, M, (out_size, out_size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    # the crop's footprint: output edges -0.5 and S - 0.5 through the inverse map, plus a margin
    A_inv = np.linalg.inv(M[:, :2])
    corners = np.array([[-0.5, -0.5], [out_size - 0.5, out_size - 0.5]])
    span = (corners - M[:, 2]) @ A_inv.T
    r = k * max_downscale  # the area reduction, so that the warp shrinks by max_downscale
    margin = int(math.ceil(2.0 / r)) + 2  # two reduced pixels: the bilinear footprint at the crop's edge
    lo = np.floor(span.min(axis=0)).astype(int) - margin
    hi = np.ceil(span.max(axis=0)).astype(int) + margin
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], W), min(hi[1], H)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((out_size, out_size, 3), dtype=np.uint8)
    roi = image[y0:y1, x0:x1]
    size = (max(1, round(roi.shape[1] * r)), max(1, round(roi.shape[0] * r)))
    small = cv2.resize(roi, size, interpolation=cv2.INTER_AREA)
    sx, sy = size[0] / roi.shape[1], size[1] / roi.shape[0]
    # q = s * (p + 0.5 - origin) - 0.5 maps original pixel centres to the reduced image's;
    # the warp needs M o q^-1, with q^-1(q) = (q + 0.5) / s - 0.5 + origin
    inv_lin = np.diag([1.0 / sx, 1.0 / sy])
    inv_off = np.array([0.5 / sx - 0.5 + x0, 0.5 / sy - 0.5 + y0])
    M_small = np.concatenate([M[:, :2] @ inv_lin, (M[:, :2] @ inv_off + M[:, 2])[:, None]], axis=1)
    return cv2.warpAffine(small, M_small, (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


class Landmarker:
    """A trained landmark model ready for photos.

    Args:
        model: a :class:`~pyg_sdfl.nn.model.LandmarkModel` (``(B, 3, S, S)`` -> ``(B, N, 2)``
            crop pixels).
        scheme: the landmark scheme it predicts (name or object).
        image_size: ``S``, the crop side it was trained on.
        crop_scale: the crop's side over the landmark square's side at training time.
        box_mapping: detector box -> landmark square; needed to use the detector or
            ``box_type="detector"`` boxes.
        device: where the model runs ("cpu", "cuda", "auto").
        detector: the face detector (:class:`~pyg_sdfl.detection.Detector`); by default a
            :class:`~pyg_sdfl.detection.HaarFaceDetector` with the settings the mapping was fitted
            with (built on first use). Its boxes must be the kind ``box_mapping`` was fitted on.
        meta: provenance of the weights (training run, data, metrics), for information.
        batch_size: faces per forward pass (all faces of an image in one pass up to this many).
        flip_test: average each face's prediction with the un-mirrored prediction of its mirror
            image (:class:`~pyg_sdfl.nn.flip_average.FlipAverage`): twice the model cost.
    """

    def __init__(
        self,
        model: nn.Module,
        scheme: Union[str, LandmarkScheme],
        image_size: int,
        crop_scale: float,
        box_mapping: Optional[BoxMapping] = None,
        device: Union[str, torch.device] = "cpu",
        detector: Optional[Detector] = None,
        meta: Optional[Mapping[str, Any]] = None,
        batch_size: int = 64,
        flip_test: bool = False,
    ) -> None:
        if int(image_size) != image_size or image_size <= 0:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if not (math.isfinite(float(crop_scale)) and crop_scale > 0):
            raise ValueError(f"crop_scale must be a positive number, got {crop_scale!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.device = resolve_device(str(device)) if isinstance(device, str) else torch.device(device)
        self.model = model.to(self.device).eval()
        self.scheme = get_scheme(scheme)
        self.image_size = int(image_size)
        self.crop_scale = float(crop_scale)
        self.box_mapping = box_mapping
        self._detector = detector
        self.meta = dict(meta or {})
        self.batch_size = int(batch_size)
        self.flip_test = bool(flip_test)
        self._net = FlipAverage(self.model, self.scheme.flip_permutation).to(self.device) if self.flip_test else self.model

    # ------------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(
        cls,
        path: Union[str, Path],
        device: Union[str, torch.device] = "cpu",
        box_mapping: Optional[BoxMapping] = None,
        **kwargs: Any,
    ) -> "Landmarker":
        """Load a training checkpoint (``best.ckpt``) or an exported weights file.

        The model is rebuilt from the checkpoint's own resolved config and graph and its state is
        loaded strictly (every key, every shape; fp16 weights are cast to fp32). The box mapping
        is ``box_mapping`` if given, else the one stored in the file, else the package's fitted
        Haar mapping (``pyg_sdfl/weights/haar_box_mapping.json``).
        """
        loaded = load_model(path)
        if box_mapping is None and loaded.box_mapping is not None:
            box_mapping = BoxMapping.from_dict(loaded.box_mapping)
        if box_mapping is None:
            box_mapping = load_default_box_mapping()
        meta = dict(loaded.meta)
        meta.setdefault("source", str(path))
        return cls(loaded.model, loaded.scheme, loaded.image_size, loaded.crop_scale,
                   box_mapping=box_mapping, device=device, meta=meta, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str = "300w", device: Union[str, torch.device] = "cpu", **kwargs: Any) -> "Landmarker":
        """The model shipped in ``pyg_sdfl/weights/`` (see :data:`pyg_sdfl.weights.PRETRAINED`)."""
        from pyg_sdfl.weights import pretrained_path

        path = pretrained_path(name)
        if not path.is_file():
            raise CheckpointError(
                f"the pretrained {name!r} weights are not in this installation ({path} is missing); "
                "use a training checkpoint instead (Landmarker.from_checkpoint / --checkpoint), or export one "
                "with `pyg-sdfl export --checkpoint RUN/best.ckpt`"
            )
        return cls.from_checkpoint(path, device=device, **kwargs)

    # ------------------------------------------------------------------------ detection
    @property
    def detector(self) -> Detector:
        if self._detector is None:
            params = self.box_mapping.detector if self.box_mapping is not None else {}
            self._detector = HaarFaceDetector.from_params(params)
        return self._detector

    def _require_mapping(self) -> BoxMapping:
        if self.box_mapping is None:
            raise ValueError(
                "no detector-box mapping is available (pyg_sdfl/weights/haar_box_mapping.json is missing and the "
                "weights carry none): give landmark boxes, or fit one with `pyg-sdfl fit-box-mapping`"
            )
        return self.box_mapping

    # ------------------------------------------------------------------------ prediction
    @staticmethod
    def load_image(image: ImageInput) -> np.ndarray:
        """A path or an array -> ``(H, W, 3)`` uint8 RGB;
        :class:`~pyg_sdfl.data.sample.ImageLoadError` naming the file otherwise.

        Files are read by :func:`~pyg_sdfl.data.sample.read_image` (truncated or damaged files and
        pictures above :data:`~pyg_sdfl.data.sample.MAX_IMAGE_PIXELS` are errors naming the file),
        *with* their EXIF orientation applied (unlike the dataset readers, whose annotations refer
        to the stored pixel grid): a phone photo is processed, and its landmarks are returned,
        upright, as any viewer shows it.
        """
        if isinstance(image, (str, Path)):
            return read_image(image, apply_orientation=True)
        return as_rgb_uint8(image, "image")

    def face_squares(self, image: np.ndarray, boxes: Optional[Any] = None,
                     box_type: str = "landmark") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The faces to predict in ``image`` (``(H, W, 3)`` uint8): landmark squares ``(M, 3)``
        (``cx, cy, side``), their boxes ``(M, 4)`` and scores ``(M,)`` (see :meth:`predict`)."""
        if box_type not in ("landmark", "detector"):
            raise ValueError(f"box_type must be 'landmark' or 'detector', got {box_type!r}")
        if boxes is None:
            mapping = self._require_mapping()
            detections = self.detector(image)
            if not detections:
                return np.zeros((0, 3)), np.zeros((0, 4)), np.zeros(0)
            det_boxes = np.stack([d.box for d in detections])
            return mapping.squares(det_boxes), det_boxes, np.array([d.score for d in detections])
        arr = np.asarray(boxes, dtype=np.float64)
        if arr.size == 0:
            return np.zeros((0, 3)), np.zeros((0, 4)), np.zeros(0)
        arr = check_boxes(arr, "boxes")
        H, W = image.shape[:2]
        outside = (arr[:, 2] < -0.5) | (arr[:, 0] > W - 0.5) | (arr[:, 3] < -0.5) | (arr[:, 1] > H - 0.5)
        if outside.any():
            raise ValueError(f"box {arr[np.flatnonzero(outside)[0]].tolist()} lies outside the {W}x{H} image")
        if box_type == "detector":
            sq = self._require_mapping().squares(arr)
        else:
            sq = box_square(arr)
        return sq, arr, np.ones(len(arr))

    @torch.no_grad()
    def predict(self, image: ImageInput, boxes: Optional[Any] = None, box_type: str = "landmark") -> List[Face]:
        """Landmarks of every face in ``image``.

        Args:
            image: a file path, or an ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` gray) array.
            boxes: optional ``(M, 4)`` boxes ``x0, y0, x1, y1`` in pixels; ``None`` runs the face
                detector (faces most confident first). An empty list gives no faces.
            box_type: how to read given boxes: ``"landmark"`` (tight box around the face's
                landmarks, the training protocol) or ``"detector"`` (a Haar-style face box, mapped
                like a detection).

        Returns:
            a list of :class:`Face` (empty when no face is found), landmarks in original-image
            pixel coordinates.
        """
        img = self.load_image(image)
        squares, boxes_arr, scores = self.face_squares(img, boxes, box_type)
        if len(squares) == 0:
            return []
        S = self.image_size
        crop_squares = squares * np.array([1.0, 1.0, self.crop_scale])
        mats, crops = [], []
        for cx, cy, side in crop_squares:
            M = crop_matrix((cx, cy), side, S)
            mats.append(M)
            crops.append(normalise_image(warp_crop(img, M, S)))
        mats_arr = np.stack(mats)
        preds = []
        for lo in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(np.stack(crops[lo:lo + self.batch_size])).to(self.device)
            preds.append(self._net(batch).float().cpu().numpy().astype(np.float64))
        landmarks = crop_to_image(np.concatenate(preds), mats_arr)
        crop_boxes = square_to_box(crop_squares)
        return [Face(box=boxes_arr[i].astype(np.float64), landmarks=landmarks[i], score=float(scores[i]),
                     crop_box=crop_boxes[i]) for i in range(len(squares))]

    def __repr__(self) -> str:
        return (f"Landmarker({type(self.model).__name__}, scheme={self.scheme.name!r}, image_size={self.image_size}, "
                f"crop_scale={self.crop_scale}, box_mapping={'yes' if self.box_mapping else 'no'}, "
                f"flip_test={self.flip_test}, device={self.device})")


def draw_faces(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of ``image`` (``(H, W, 3)`` uint8 RGB) with each face's box (green), score and
    landmarks (red dots) drawn; line widths scale with the image and the face."""
    out = np.ascontiguousarray(as_rgb_uint8(image, "image").copy())
    H, W = out.shape[:2]
    thick = max(1, round(max(H, W) / 600))
    for face in faces:
        x0, y0, x1, y1 = face.box
        cv2.rectangle(out, (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))), (0, 200, 0), thick,
                      cv2.LINE_AA)
        radius = max(1, round((face.crop_box[2] - face.crop_box[0]) / 160))
        for x, y in face.landmarks:
            cv2.circle(out, (int(round(x)), int(round(y))), radius, (255, 40, 40), -1, cv2.LINE_AA)
        scale = max(0.4, (x1 - x0) / 400)
        cv2.putText(out, f"{face.score:.2f}", (int(round(x0)), max(0, int(round(y0)) - 4 * thick)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 200, 0), thick, cv2.LINE_AA)
    return out
