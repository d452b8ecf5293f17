"""Landmarks on arbitrary photos: load a trained model, find faces, crop, predict, map back.

    from pyg_sdfl.inference import Landmarker
    lm = Landmarker.from_pretrained()                  # the 300-W model shipped in pyg_sdfl/weights/
    faces = lm.predict("photo.jpg")                    # or an (H, W, 3) uint8 RGB array
    faces[0].landmarks                                 # (68, 2) in the photo's pixel coordinates

Each face is cropped as at training time: a square of ``crop_scale`` (1.2) times the side of the
face's *landmark square* (centre and longer side of the tight box around its landmarks), resized
to ``image_size``. Where that square comes from:

- ``boxes`` given with ``box_type="landmark"`` (the default): each box is taken as a landmark box
  (jaw to brows, ear to ear), the square is its centre and longer side; one pass of the model;
- no boxes: the face detector (:mod:`pyg_sdfl.detection`, chosen by name) finds the faces and its
  fitted mapping turns each detection into a first square (the shipped mappings use the box; a
  five-point :class:`~pyg_sdfl.detection.keypoint_mapping.KeypointMapping` also gives the roll);
  ``boxes`` with ``box_type="detector"`` are mapped the same way. Then **re-cropping**:
  ``passes - 1`` more passes each crop the landmark square of the previous pass's prediction, as
  at training time, and predict again.

With ``align_rotation`` (default), a square carries the face's in-plane angle (the roll of its
outer eye corners in the previous prediction, or a keypoint mapping's) and the crop is turned upright
(:func:`pyg_sdfl.geometry.oriented_landmark_square`): a face tilted by 60 degrees reaches the model
as an upright face, which is what it saw most at training time.

Predictions come back through the inverse of the crop's affine map, in original-image pixel
coordinates (0-based pixel centres). Faces of all images of a call go through the model in
batches. Large faces are first halved (means of 2 x 2 pixels, as often as needed) so that the final
bilinear warp never downsamples by more than 2x; the warp itself touches only the output pixels.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import nn

from pyg_sdfl.data.sample import as_rgb_uint8, read_image
from pyg_sdfl.data.transforms import checked_annotation_offset, normalise_image
from pyg_sdfl.detection.base import Detection, Detector
from pyg_sdfl.detection.mapping import load_detector_mapping, mapping_from_dict
from pyg_sdfl.engine.builders import resolve_device
from pyg_sdfl.engine.checkpoint import CheckpointError, load_model, resolve_backend
from pyg_sdfl.engine.evaluation import cpu_bf16_flags, precision_autocast, resolve_precision
from pyg_sdfl.geometry import (box_square, check_boxes, crop_matrix, crop_to_image, line_angle,
                               oriented_landmark_square, square_to_box)
from pyg_sdfl.nn.flip_average import FlipAverage
from pyg_sdfl.nn.heads import use_graph_backend
from pyg_sdfl.resampling import halved
from pyg_sdfl.schemes import LandmarkScheme, get_scheme

__all__ = ["FALLBACK_DETECTOR", "Face", "Landmarker", "default_detector_name", "draw_faces",
           "warp_crop"]

ImageInput = Union[str, Path, np.ndarray]

#: The detector used where the default one (``configs/detection.yaml``: libfacedetection, chosen on
#: the measurements in docs/predict.md) cannot be built: OpenCV's Haar cascade, always installed.
FALLBACK_DETECTOR = "haar"


@functools.lru_cache(maxsize=None)
def default_detector_name() -> str:
    """The configured default detector (:func:`pyg_sdfl.detection.registry.default_detector`) if it
    can be built here, else :data:`FALLBACK_DETECTOR` with a warning saying why (the yuface wheel
    exists for CPython 3.11 on x86-64 Linux only). Decided once per process: the answer depends on
    what is installed, and finding it out composes configs and builds a detector."""
    import logging

    from pyg_sdfl.detection.registry import create_detector, default_detector

    name = default_detector()
    try:
        create_detector(name)
    except ImportError as err:
        logging.getLogger(__name__).warning(
            "the default face detector %r cannot be used here (%s); using %r, which misses turned and profile "
            "faces: see docs/predict.md", name, err, FALLBACK_DETECTOR)
        return FALLBACK_DETECTOR
    return name


@dataclass(eq=False)
class Face:
    """One face found in an image.

    Attributes:
        box: float64 ``(4,)`` ``x0, y0, x1, y1`` in the original image: the detector's box, or the
            box that was given.
        landmarks: float64 ``(N, 2)`` landmark coordinates in the original image (0-based pixel
            centres, ``x`` then ``y``).
        score: the detector's confidence (its own scale, see its class), or ``1.0`` for a box
            that was given.
        crop_box: float64 ``(4,)`` the square the model saw (last pass), ``x0, y0, x1, y1`` in the
            original image before turning by ``crop_angle`` about its centre (it may extend past
            the image; the outside is black).
        crop_angle: the crop's in-plane angle in degrees (0: an upright, axis-aligned crop).
        keypoints: the detector's five points ``(5, 2)`` where it gives them, else ``None``.
        recrop_change: the mean distance between the landmarks of the last two passes over the
            inter-ocular distance of the last (``None`` after one pass): near 0 when re-cropping
            has converged.
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    crop_box: np.ndarray
    crop_angle: float = 0.0
    keypoints: Optional[np.ndarray] = None
    recrop_change: Optional[float] = None

    def to_dict(self, decimals: int = 2) -> Dict[str, Any]:
        """JSON-friendly ``{"box", "score", "crop_box", "crop_angle", "landmarks"}`` plus
        ``"keypoints"`` and ``"recrop_change"`` when present (rounded lists)."""
        out: Dict[str, Any] = {
            "box": [round(float(v), decimals) for v in self.box],
            "score": round(float(self.score), 4),
            "crop_box": [round(float(v), decimals) for v in self.crop_box],
            "crop_angle": round(float(self.crop_angle), 2),
            "landmarks": [[round(float(x), decimals), round(float(y), decimals)] for x, y in self.landmarks],
        }
        if self.keypoints is not None:
            out["keypoints"] = [[round(float(x), decimals), round(float(y), decimals)] for x, y in self.keypoints]
        if self.recrop_change is not None:
            out["recrop_change"] = round(float(self.recrop_change), 5)
        return out


def warp_crop(image: np.ndarray, matrix: np.ndarray, out_size: int, max_downscale: float = 2.0) -> np.ndarray:
    """Resample ``image`` (``(H, W, 3)`` uint8) through the original -> crop affine ``matrix``
    ``(2, 3)`` (a similarity: scale, rotation, shift) into an ``out_size`` square, black outside the
    image.

    When the crop shrinks the image by more than ``max_downscale`` (``k = sqrt|det A|`` output pixels
    per input pixel), the region under the crop is first halved ``h = ceil(log2(1 / (k *
    max_downscale)))`` times, each halving the mean of 2 x 2 pixels (area interpolation at an exact
    factor of 2, OpenCV's fast path: a non-integer area factor costs ten times as much), and the
    bilinear warp does the rest, a shrink by ``1 / (k 2^h)``, in ``(max_downscale / 2,
    max_downscale]``: no aliasing on large faces, and only that region is ever resized.
    """
    M = np.asarray(matrix, dtype=np.float64)
    k = math.sqrt(abs(np.linalg.det(M[:, :2])))  # output pixels per input pixel
    H, W = image.shape[:2]
    if k * max_downscale >= 1.0:
        return cv2.warpAffine(image, M, (out_size, out_size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    halvings = max(1, math.ceil(math.log2(1.0 / (k * max_downscale))))
    f = 2 ** halvings  # original pixels per reduced pixel
    # the crop's footprint: the output's four corners through the inverse map, plus a margin of two
    # reduced pixels (the bilinear footprint at the crop's edge)
    A_inv = np.linalg.inv(M[:, :2])
    e = out_size - 0.5
    corners = np.array([[-0.5, -0.5], [e, -0.5], [e, e], [-0.5, e]])
    span = (corners - M[:, 2]) @ A_inv.T
    margin = 2 * f + 2
    lo = np.floor(span.min(axis=0)).astype(int) - margin
    hi = np.ceil(span.max(axis=0)).astype(int) + margin
    x0, x1 = _whole_reduced_pixels(max(int(lo[0]), 0), min(int(hi[0]), W), W, f)
    y0, y1 = _whole_reduced_pixels(max(int(lo[1]), 0), min(int(hi[1]), H), H, f)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((out_size, out_size, 3), dtype=np.uint8)
    # padded (black) only where the region spans the image: outside is black anyway
    small = halved(image[y0:y1, x0:x1], halvings, cv2.BORDER_CONSTANT)
    # q = (p + 0.5 - origin) / f - 0.5 maps original pixel centres to the reduced image's;
    # the warp needs M o q^-1, with q^-1(q) = f (q + 0.5) - 0.5 + origin
    inv_off = np.array([0.5 * f - 0.5 + x0, 0.5 * f - 0.5 + y0])
    M_small = np.concatenate([M[:, :2] * f, (M[:, :2] @ inv_off + M[:, 2])[:, None]], axis=1)
    return cv2.warpAffine(small, M_small, (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _whole_reduced_pixels(start: int, stop: int, length: int, f: int) -> Tuple[int, int]:
    """``[start, stop)`` widened inside ``[0, length)`` to a multiple of ``f`` pixels where the
    image allows (first to the right, then to the left); shorter only when it spans the image."""
    if stop <= start:
        return start, start
    need = -(-(stop - start) // f) * f
    stop = min(length, start + need)
    start = max(0, stop - need)
    return start, stop


@dataclass
class _Found:
    """The faces of one image before the model: oriented landmark squares ``(M, 4)`` (``cx, cy,
    side, angle``), boxes ``(M, 4)``, scores ``(M,)``, keypoints per face, and whether the
    squares are guesses to refine (detector) or the protocol's own (landmark boxes)."""

    squares: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    keypoints: List[Optional[np.ndarray]]
    refine: bool


class Landmarker:
    """A trained landmark model ready for photos.

    Args:
        model: a :class:`~pyg_sdfl.nn.model.LandmarkModel` (``(B, 3, S, S)`` -> ``(B, N, 2)``
            crop pixels).
        scheme: the landmark scheme it predicts (name or object).
        image_size: ``S``, the crop side it was trained on.
        crop_scale: the crop's side over the landmark square's side at training time.
        box_mapping: detection -> landmark square (a :class:`~pyg_sdfl.detection.BoxMapping` or
            :class:`~pyg_sdfl.detection.keypoint_mapping.KeypointMapping`, fitted for the detector);
            needed to use the detector or ``box_type="detector"`` boxes. ``None``: the package's
            mapping for the detector (``pyg_sdfl/weights/<name>_box_mapping.json``).
        device: where the model runs ("cpu", "cuda", "auto").
        detector: the face detector: a registry name (:func:`pyg_sdfl.detection.available_detectors`;
            built with the settings its mapping was fitted with) or a
            :class:`~pyg_sdfl.detection.Detector` object with a ``name``; default
            :func:`default_detector_name` (yuface, or Haar where yuface is not installed). Built
            on first use.
        meta: provenance of the weights (training run, data, metrics), for information.
        batch_size: faces per forward pass.
        flip_test: average each face's prediction with the un-mirrored prediction of its mirror
            image (:class:`~pyg_sdfl.nn.flip_average.FlipAverage`): twice the model cost.
        annotation_offset_x: image pixels the training labels sat right of the mirror-symmetric
            content (``dataset.annotation_offset_x``; the loaders pass the model's): the flip
            average imposes that offset, so that it answers in its training labels' convention.
        passes: model passes for a detected face: 1 crops from the detection only, each further
            pass crops the landmark square of the previous prediction (re-cropping).
        align_rotation: turn each crop by the face's in-plane angle so that the model sees it
            upright (see the module docstring); ``False`` crops axis-aligned squares as in training.
        precision: ``"fp32"``, ``"bf16"`` (autocast, channels_last) or ``"auto"``: bf16 where the
            device runs it natively (a CPU with avx512_bf16 or AMX, a bf16 CUDA device), fp32
            elsewhere, and always fp32 on the ONNX backend (measured on 300-W test/lfpw: bf16 moves
            the NME by <= 0.02 pp and halves the batch-32 time; docs/predict.md#speed).

    A torch model's SDFL heads are switched to their fused graph path (a gather over the fixed
    graph's neighbour table; the same weights and outputs as PyG's message passing, without its
    scatter overhead): the ``model`` passed in stays switched (``use_graph_backend(model, "pyg")``
    switches it back, e.g. for PyG's explainers). A model loaded with ``backend="onnx"`` runs on
    ONNX Runtime.
    """

    def __init__(
        self,
        model: nn.Module,
        scheme: Union[str, LandmarkScheme],
        image_size: int,
        crop_scale: float,
        box_mapping: Optional[Any] = None,
        device: Union[str, torch.device] = "cpu",
        detector: Union[None, str, Detector] = None,
        meta: Optional[Mapping[str, Any]] = None,
        batch_size: int = 64,
        flip_test: bool = False,
        passes: int = 2,
        align_rotation: bool = True,
        precision: str = "auto",
        annotation_offset_x: float = 0.0,
    ) -> None:
        if int(image_size) != image_size or image_size <= 0:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if not (math.isfinite(float(crop_scale)) and crop_scale > 0):
            raise ValueError(f"crop_scale must be a positive number, got {crop_scale!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if isinstance(passes, bool) or int(passes) != passes or passes < 1:
            raise ValueError(f"passes must be an integer >= 1, got {passes!r}")
        self.device = resolve_device(str(device)) if isinstance(device, str) else torch.device(device)
        self.model = model.to(self.device).eval()
        self.backend = str(getattr(model, "backend", "torch"))
        if self.backend == "onnx" and self.device.type != "cpu":
            raise ValueError(f"the onnx backend runs on the CPU; got device={device!r} (use backend='torch' there)")
        self.precision = self._resolve_precision(str(precision))
        #: why this precision: e.g. "auto -> bf16 (CPU has avx512_bf16)" (also in repr)
        self.precision_reason = self._explain_precision(str(precision))
        if self.backend == "torch":
            use_graph_backend(self.model, "fused")
            if self.precision == "bf16":
                self.model.to(memory_format=torch.channels_last)
        self.scheme = get_scheme(scheme)
        self.image_size = int(image_size)
        self.crop_scale = float(crop_scale)
        if detector is None:
            detector = default_detector_name()
        if isinstance(detector, str):
            self.detector_name, self._detector = detector, None
        else:
            self.detector_name, self._detector = str(getattr(detector, "name", type(detector).__name__)), detector
        if box_mapping is None:
            box_mapping = load_detector_mapping(self.detector_name)
        self.box_mapping = box_mapping
        self.meta = dict(meta or {})
        self.batch_size = int(batch_size)
        self.flip_test = bool(flip_test)
        self.annotation_offset_x = checked_annotation_offset(annotation_offset_x)
        self.passes = int(passes)
        self.align_rotation = bool(align_rotation)
        self.last_track_stats: Dict[str, Any] = {}
        self._net = (FlipAverage(self.model, self.scheme.flip_permutation, self.annotation_offset_x).to(self.device)
                     if self.flip_test else self.model)

    def _resolve_precision(self, precision: str) -> str:
        if self.backend == "onnx":
            if precision == "bf16":
                raise ValueError("precision='bf16' runs on the torch backend; ONNX Runtime runs the model in fp32 "
                                 "(use precision='auto' or 'fp32' with backend='onnx')")
            if precision not in ("auto", "fp32"):
                raise ValueError(f"precision must be one of ['fp32', 'bf16', 'auto'], got {precision!r}")
            return "fp32"
        return resolve_precision(precision, self.device)

    def _explain_precision(self, asked: str) -> str:
        if asked != "auto":
            return asked
        if self.backend == "onnx":
            return "auto -> fp32 (ONNX Runtime)"
        if self.device.type == "cpu":
            flags = cpu_bf16_flags()
            return f"auto -> {self.precision} (CPU {'has ' + ', '.join(flags) if flags else 'has no avx512_bf16/amx_bf16'})"
        return f"auto -> {self.precision} ({self.device.type})"

    # ------------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(
        cls,
        path: Union[str, Path],
        device: Union[str, torch.device] = "cpu",
        box_mapping: Optional[Any] = None,
        detector: Union[None, str, Detector] = None,
        backend: Optional[str] = None,
        **kwargs: Any,
    ) -> "Landmarker":
        """Load a training checkpoint (``best.ckpt``), an exported weights file or an exported
        ``.onnx`` file. ``backend``: ``"torch"`` or ``"onnx"`` (ONNX Runtime on the CPU, the
        ``[onnx]`` extra; a torch file is exported in memory first, a few seconds); default
        ``"onnx"`` for a ``.onnx`` file, else ``"torch"``.

        The model is rebuilt from the checkpoint's own resolved config and graph and its state is
        loaded strictly (every key, every shape; fp16 weights are cast to fp32). The detector is
        ``detector`` (default :func:`default_detector_name`); its mapping is ``box_mapping`` if given,
        else the one stored in the file when it was fitted for that detector, else the package's
        (``pyg_sdfl/weights/<detector>_box_mapping.json``).
        """
        # the onnx backend off the CPU is refused before anything is exported (the model loads on the CPU)
        resolve_backend(path, backend, resolve_device("auto") if device == "auto" else device)
        loaded = load_model(path, backend=backend)
        if detector is None:
            detector = default_detector_name()
        name = detector if isinstance(detector, str) else str(getattr(detector, "name", ""))
        if box_mapping is None and loaded.box_mapping is not None:
            stored = mapping_from_dict(loaded.box_mapping)
            if str(stored.detector.get("name", "haar")) == name:  # records before names were Haar's
                box_mapping = stored
        meta = dict(loaded.meta)
        meta.setdefault("source", str(path))
        kwargs.setdefault("annotation_offset_x", loaded.annotation_offset_x)
        return cls(loaded.model, loaded.scheme, loaded.image_size, loaded.crop_scale,
                   box_mapping=box_mapping, device=device, detector=detector, meta=meta, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str = "300w", device: Union[str, torch.device] = "cpu", **kwargs: Any) -> "Landmarker":
        """A model shipped in ``pyg_sdfl/weights/``: ``"300w"`` (accurate, 256 px), ``"300w-160"`` (the
        accurate network at 160 px), ``"300w-fast"`` (small and fast) or ``"300w-fast-160"`` (the small
        network at 160 px); :func:`pyg_sdfl.weights.available_pretrained` lists the names and
        :data:`pyg_sdfl.weights.PRETRAINED` what each is. Keywords as :meth:`from_checkpoint`."""
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
        """The face detector, built on first use with the settings its mapping was fitted with."""
        if self._detector is None:
            from pyg_sdfl.detection.registry import detector_fitted_with

            self._detector = detector_fitted_with(self.box_mapping, self.detector_name)
        return self._detector

    def _require_mapping(self) -> Any:
        if self.box_mapping is None:
            raise ValueError(
                f"no box mapping is available for the {self.detector_name!r} detector "
                f"(pyg_sdfl/weights/{self.detector_name}_box_mapping.json is missing and the weights carry none): "
                f"give landmark boxes, or fit one with `pyg-sdfl fit-box-mapping --detector {self.detector_name}`"
            )
        return self.box_mapping

    def detect(self, image: np.ndarray) -> List[Detection]:
        """The detector's faces in ``image`` (``(H, W, 3)`` uint8), most confident first."""
        return self.detector(image)

    def squares_from_detections(self, detections: Sequence[Detection]) -> np.ndarray:
        """Detections -> first-pass oriented landmark squares ``(M, 4)`` (``cx, cy, side,
        angle``) through the detector's mapping (angle 0 without ``align_rotation``)."""
        sq = np.asarray(self._require_mapping().crop_squares(list(detections)), dtype=np.float64).reshape(-1, 4)
        if not self.align_rotation:
            sq[:, 3] = 0.0
        return sq

    def squares_from_landmarks(self, landmarks: np.ndarray) -> np.ndarray:
        """Predicted landmarks ``(M, N, 2)`` -> oriented landmark squares ``(M, 4)``: the landmark
        square at the roll of the outer eye corners (axis-aligned without ``align_rotation``)."""
        lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, self.scheme.num_points, 2)
        if not len(lm):
            return np.zeros((0, 4))
        left, right = self.scheme.inter_ocular
        angle = line_angle(lm[:, left], lm[:, right]) if self.align_rotation else np.zeros(len(lm))
        return np.concatenate([oriented_landmark_square(lm, angle), angle[:, None]], axis=1)

    def recrop_change(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """How far a pass moved each face: the mean landmark displacement ``after - before`` (both
        ``(M, N, 2)``) over the inter-ocular distance of ``after``, ``(M,)``; the NME of ``before``
        against ``after`` (:func:`pyg_sdfl.metrics.nme`), except that a zero distance gives a huge
        value instead of an error (a degenerate prediction is a moving one)."""
        left, right = self.scheme.inter_ocular
        distance = np.linalg.norm(after[:, left] - after[:, right], axis=-1)
        return np.linalg.norm(after - before, axis=-1).mean(axis=-1) / np.maximum(distance, 1e-9)

    # ------------------------------------------------------------------------ model passes
    def crop_matrices(self, squares: np.ndarray) -> np.ndarray:
        """Oriented landmark squares ``(M, 4)`` -> image -> crop affines ``(M, 2, 3)``: the square's
        side times ``crop_scale`` fills the ``S x S`` crop, turned upright by its angle."""
        S = self.image_size
        return np.stack([crop_matrix((cx, cy), self.crop_scale * side, S, rotation_deg=angle)
                         for cx, cy, side, angle in np.asarray(squares, dtype=np.float64).reshape(-1, 4)]
                        ) if len(squares) else np.zeros((0, 2, 3))

    @torch.no_grad()
    def landmarks_in_squares(self, images: Sequence[np.ndarray], owners: Sequence[int], squares: np.ndarray) -> np.ndarray:
        """One model pass: face ``m`` is cropped from ``images[owners[m]]`` at ``squares[m]``
        (``(M, 4)``, oriented landmark squares); returns landmarks ``(M, N, 2)`` in image pixels.
        All faces go through the model in batches of ``batch_size``."""
        mats = self.crop_matrices(squares)
        if not len(mats):
            return np.zeros((0, self.scheme.num_points, 2))
        crops = [normalise_image(warp_crop(images[o], M, self.image_size)) for o, M in zip(owners, mats)]
        preds = []
        channels_last = self.backend == "torch" and self.precision == "bf16"
        for lo in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(np.stack(crops[lo:lo + self.batch_size])).to(self.device)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with precision_autocast(self.device, self.precision):
                if self.flip_test:
                    out = self._net(batch, torch.from_numpy(mats[lo:lo + self.batch_size]))
                else:
                    out = self._net(batch)
            preds.append(out.float().cpu().numpy().astype(np.float64))
        return crop_to_image(np.concatenate(preds), mats)

    def iterate_passes(self, images: Sequence[np.ndarray], owners: Sequence[int], squares: np.ndarray,
                       passes: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """The re-crop loop, pass by pass: yields ``(landmarks (M, N, 2), squares (M, 4))`` of each
        of ``passes`` passes, the first from ``squares``, each next one from
        :meth:`squares_from_landmarks` of the previous landmarks."""
        if isinstance(passes, bool) or int(passes) != passes or passes < 1:
            raise ValueError(f"passes must be an integer >= 1, got {passes!r}")
        sq = np.asarray(squares, dtype=np.float64).reshape(-1, 4)
        landmarks = self.landmarks_in_squares(images, owners, sq)
        yield landmarks, sq
        for _ in range(int(passes) - 1):
            sq = self.squares_from_landmarks(landmarks)
            landmarks = self.landmarks_in_squares(images, owners, sq)
            yield landmarks, sq

    def refine(self, images: Sequence[np.ndarray], owners: Sequence[int], squares: np.ndarray,
               passes: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """``passes`` model passes (default :attr:`passes`) from first squares ``(M, 4)``: each pass
        after the first crops :meth:`squares_from_landmarks` of the previous prediction.

        Returns ``(landmarks (M, N, 2), squares of the last pass (M, 4), change (M,) or None)``,
        ``change`` being the mean landmark displacement of the last pass over its inter-ocular
        distance (``None`` after one pass).
        """
        previous, change = None, None
        for landmarks, sq in self.iterate_passes(images, owners, squares, self.passes if passes is None else passes):
            if previous is not None:
                change = self.recrop_change(previous, landmarks)
            previous = landmarks
        return landmarks, sq, change

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

    def _find(self, image: np.ndarray, boxes: Optional[Any], box_type: str) -> _Found:
        if box_type not in ("landmark", "detector"):
            raise ValueError(f"box_type must be 'landmark' or 'detector', got {box_type!r}")
        if boxes is None:
            self._require_mapping()
            detections = self.detect(image)
            return _Found(self.squares_from_detections(detections),
                          np.stack([d.box for d in detections]) if detections else np.zeros((0, 4)),
                          np.array([d.score for d in detections], dtype=np.float64),
                          [d.keypoints for d in detections], refine=True)
        arr = np.asarray(boxes, dtype=np.float64)
        if arr.size == 0:
            return _Found(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0), [], refine=False)
        arr = check_boxes(arr, "boxes")
        H, W = image.shape[:2]
        outside = (arr[:, 2] < -0.5) | (arr[:, 0] > W - 0.5) | (arr[:, 3] < -0.5) | (arr[:, 1] > H - 0.5)
        if outside.any():
            raise ValueError(f"box {arr[np.flatnonzero(outside)[0]].tolist()} lies outside the {W}x{H} image")
        if box_type == "detector":
            sq = self.squares_from_detections([Detection(b, 1.0) for b in arr])
            return _Found(sq, arr, np.ones(len(arr)), [None] * len(arr), refine=True)
        sq = np.concatenate([box_square(arr), np.zeros((len(arr), 1))], axis=1)
        return _Found(sq, arr, np.ones(len(arr)), [None] * len(arr), refine=False)

    def face_squares(self, image: np.ndarray, boxes: Optional[Any] = None,
                     box_type: str = "landmark") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The faces to predict in ``image`` (``(H, W, 3)`` uint8) before any model pass: oriented
        landmark squares ``(M, 4)`` (``cx, cy, side, angle``), their boxes ``(M, 4)`` and scores
        ``(M,)`` (see :meth:`predict`)."""
        found = self._find(image, boxes, box_type)
        return found.squares, found.boxes, found.scores

    def predict(self, image: ImageInput, boxes: Optional[Any] = None, box_type: str = "landmark",
                passes: Optional[int] = None) -> List[Face]:
        """Landmarks of every face in ``image``.

        Args:
            image: a file path, or an ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` gray) array.
            boxes: optional ``(M, 4)`` boxes ``x0, y0, x1, y1`` in pixels; ``None`` runs the face
                detector (faces most confident first). An empty list gives no faces.
            box_type: how to read given boxes: ``"landmark"`` (tight box around the face's
                landmarks, the training protocol: one pass) or ``"detector"`` (a box of this
                Landmarker's detector, mapped and re-cropped like a detection).
            passes: override :attr:`passes` for this call (detected faces and detector boxes).

        Returns:
            a list of :class:`Face` (empty when no face is found), landmarks in original-image
            pixel coordinates.
        """
        return self.predict_batch([image], None if boxes is None else [boxes], box_type, passes)[0]

    def predict_batch(self, images: Sequence[ImageInput], boxes: Optional[Sequence[Optional[Any]]] = None,
                      box_type: str = "landmark", passes: Optional[int] = None) -> List[List[Face]]:
        """:meth:`predict` for several images at once: ``boxes`` is ``None`` or one entry per image
        (``None`` runs the detector on that image). Detection runs per image; every model pass
        takes the faces of all images together, in batches of ``batch_size``. Returns one list of
        faces per image, in order."""
        imgs = [self.load_image(im) for im in images]
        if boxes is not None and len(boxes) != len(imgs):
            raise ValueError(f"boxes must have one entry per image: {len(boxes)} for {len(imgs)} images")
        found = [self._find(img, None if boxes is None else boxes[i], box_type) for i, img in enumerate(imgs)]
        owners = np.concatenate([np.full(len(f.squares), i) for i, f in enumerate(found)]).astype(int) \
            if found else np.zeros(0, int)
        squares = np.concatenate([f.squares for f in found]) if found else np.zeros((0, 4))
        refine = np.concatenate([np.full(len(f.squares), f.refine) for f in found]).astype(bool) \
            if found else np.zeros(0, bool)
        landmarks = np.zeros((len(squares), self.scheme.num_points, 2))
        used = squares.copy()
        change: List[Optional[float]] = [None] * len(squares)
        for flag in (False, True):
            sel = np.flatnonzero(refine == flag)
            if not len(sel):
                continue
            lm, sq, ch = self.refine(imgs, owners[sel], squares[sel], passes=passes if flag else 1)
            landmarks[sel], used[sel] = lm, sq
            if ch is not None:
                for j, c in zip(sel, ch):
                    change[j] = float(c)
        crop_boxes = square_to_box(used[:, :3] * np.array([1.0, 1.0, self.crop_scale]))
        out: List[List[Face]] = [[] for _ in imgs]
        counters = [0] * len(imgs)
        for m, o in enumerate(owners):
            f, k = found[o], counters[o]
            counters[o] += 1
            out[o].append(Face(box=f.boxes[k].astype(np.float64), landmarks=landmarks[m], score=float(f.scores[k]),
                               crop_box=crop_boxes[m], crop_angle=float(used[m, 3]),
                               keypoints=f.keypoints[k], recrop_change=change[m]))
        return out

    def track(self, frames: Iterable[np.ndarray], **options: Any) -> Iterator[List[Face]]:
        """Faces of a sequence of frames (``(H, W, 3)`` uint8 RGB), one list per frame, tracked:
        the detector runs on the first frame and whenever tracking is lost, the other frames crop
        from the previous frame's landmarks (:class:`pyg_sdfl.tracking.FaceTracker`, whose
        ``options`` these are). Statistics land in :attr:`last_track_stats`."""
        from pyg_sdfl.tracking import FaceTracker

        tracker = FaceTracker(self, **options)
        self.last_track_stats = tracker.stats
        yield from tracker.track(frames)

    # ------------------------------------------------------------------------ face-alignment aliases
    def get_landmarks_from_image(self, image: ImageInput, detected_faces: Optional[Any] = None) -> Optional[List[np.ndarray]]:
        """face-alignment's call: a list of ``(N, 2)`` landmark arrays, ``None`` when no face is
        found. ``detected_faces``: ``(M, 4)`` or ``(M, 5)`` detector boxes (a fifth column, a
        score, is ignored), as face-alignment takes them."""
        boxes = None
        if detected_faces is not None:
            boxes = np.asarray(detected_faces, dtype=np.float64).reshape(len(detected_faces), -1)[:, :4]
        faces = self.predict(image, boxes=boxes, box_type="detector")
        return [f.landmarks for f in faces] or None

    def get_landmarks_from_directory(self, path: Union[str, Path], recursive: bool = True,
                                     show_progress_bar: bool = True) -> Dict[str, Optional[List[np.ndarray]]]:
        """face-alignment's call: ``{image path: list of (N, 2) arrays, or None without a face}``
        for every image under ``path`` (unreadable files are skipped with a warning)."""
        import warnings

        from tqdm import tqdm

        out: Dict[str, Optional[List[np.ndarray]]] = {}
        results = self.predict_directory(path, recursive=recursive)
        for res in tqdm(results, disable=not show_progress_bar, desc="images", unit="img"):
            if res.error is not None:
                warnings.warn(res.error)
                continue
            out[str(res.path)] = [f.landmarks for f in res.faces] or None
        return out

    def predict_directory(self, path: Union[str, Path], **options: Any) -> Iterator[Any]:
        """Every image under ``path`` (:func:`pyg_sdfl.image_folder.predict_directory`, whose
        ``options`` these are): results per image as they come, decoding in worker processes."""
        from pyg_sdfl.image_folder import predict_directory

        yield from predict_directory(self, path, **options)

    def __repr__(self) -> str:
        return (f"Landmarker({type(self.model).__name__}, scheme={self.scheme.name!r}, image_size={self.image_size}, "
                f"crop_scale={self.crop_scale}, detector={self.detector_name!r}, "
                f"box_mapping={'yes' if self.box_mapping else 'no'}, passes={self.passes}, "
                f"align_rotation={self.align_rotation}, flip_test={self.flip_test}, device={self.device}, "
                f"backend={self.backend!r}, precision={self.precision_reason!r})")


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
