"""Crops and augmentation as one affine map per face.

Every geometric step (crop, resize, rotation, scale, translation, mirror) is folded into a
single ``(2, 3)`` matrix ``M`` from original-image pixel centres to crop pixel centres
(:func:`pyg_sdfl.geometry.crop_matrix`, where the formula and the crop square are defined); the
image is resampled once (``cv2.warpAffine``, bilinear) and the landmarks are mapped with the same
``M`` (:func:`warp_sample`). This module adds the random parts: augmentation draws and occluders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from pyg_sdfl.geometry import apply_affine, check_affine

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "AugmentParams",
    "flip_landmarks",
    "mirrored_label_shift",
    "checked_annotation_offset",
    "warp_image",
    "warp_landmarks",
    "warp_sample",
    "sample_occlusion",
    "paint_occlusion",
    "random_occlusion",
    "normalise_image",
    "denormalise_image",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def flip_landmarks(
    points: np.ndarray, width: int, perm: Sequence[int], annotation_offset_x: float = 0.0
) -> np.ndarray:
    """Landmarks of the horizontally mirrored image: ``x' = width - 1 + 2 b - x``, then ``out[i] = p[perm[i]]``.

    ``points`` is ``(N, 2)``, ``width`` the image width in pixels, ``perm`` the scheme's
    ``flip_permutation`` (so the new landmark 36 of 300-W, image-left outer eye corner, is the
    mirrored old 45). ``b = annotation_offset_x`` is how far (image pixels) the annotations sit
    right of the mirror-symmetric image content (:mod:`pyg_sdfl.studies.mirror_offset` measures
    it): the mirrored labels keep that offset instead of turning it into ``-b``.
    """
    pts = np.asarray(points, dtype=np.float64)
    perm = np.asarray(perm, dtype=np.int64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    if perm.shape != (pts.shape[0],):
        raise ValueError(f"flip permutation has {perm.size} entries for {pts.shape[0]} landmarks")
    mirrored = pts.copy()
    mirrored[:, 0] = (width - 1 + 2.0 * float(annotation_offset_x)) - mirrored[:, 0]
    return mirrored[perm]


def checked_annotation_offset(annotation_offset_x: object) -> float:
    """``annotation_offset_x`` (image pixels the labels sit right of the content) as a float; a
    ``ValueError`` naming it for anything but a finite number (a bool, NaN, inf, text, None)."""
    try:
        value = float(annotation_offset_x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(annotation_offset_x, bool) or not math.isfinite(value):
        raise ValueError(f"annotation_offset_x must be a finite number of pixels, got {annotation_offset_x!r}")
    return value


def mirrored_label_shift(M: np.ndarray, annotation_offset_x: float) -> np.ndarray:
    """The ``(2,)`` crop-pixel shift that keeps the annotations' horizontal offset on a mirrored crop.

    Annotations sit ``b = annotation_offset_x`` image pixels right of the content: label
    ``l = p + b e_x`` for a true point ``p``. A crop matrix ``M = [A | t]`` that mirrors (``A = F A0``,
    ``F = diag(-1, 1)``, ``A0`` its unmirrored rotation and scale) maps that offset to ``A b e_x``.
    The mirrored crop is the crop of the mirrored image (matrix ``A F`` from it), whose labels would
    carry the offset along that image's x axis: ``A F b e_x = -A b e_x``. The difference,
    ``-2 b A[:, 0]``, is added to ``apply_affine(l, M)``. Zero for ``b = 0``.
    """
    return -2.0 * float(annotation_offset_x) * np.asarray(M, dtype=np.float64)[:, 0]


def warp_landmarks(
    landmarks: np.ndarray,
    M: np.ndarray,
    flip_perm: Optional[Sequence[int]] = None,
    annotation_offset_x: float = 0.0,
) -> np.ndarray:
    """Landmarks ``(N, 2)`` of an image mapped into the crop that ``M`` makes of it, float64 ``(N, 2)``.

    ``p' = M[:, :2] p + M[:, 2]``; if ``M`` mirrors (``det M[:, :2] < 0``) the points are also moved
    by :func:`mirrored_label_shift` (they keep the annotations' horizontal offset
    ``annotation_offset_x`` against the content) and their indices permuted with ``flip_perm``,
    which is then required.
    """
    M = check_affine(M)
    pts = apply_affine(landmarks, M)
    if np.linalg.det(M[:, :2]) < 0:
        if flip_perm is None:
            raise ValueError("the affine matrix mirrors the image: pass the scheme's flip_perm to permute landmarks")
        perm = np.asarray(flip_perm, dtype=np.int64)
        if perm.shape != (pts.shape[0],):
            raise ValueError(f"flip permutation has {perm.size} entries for {pts.shape[0]} landmarks")
        pts = (pts + mirrored_label_shift(M, annotation_offset_x))[perm]
    return pts


def warp_sample(
    image: np.ndarray,
    landmarks: np.ndarray,
    M: np.ndarray,
    out_size: int,
    flip_perm: Optional[Sequence[int]] = None,
    annotation_offset_x: float = 0.0,
) -> Tuple[np.ndarray, np.ndarray]:
    """Resample ``image`` once with ``M`` (bilinear, black outside) and map ``landmarks`` with it
    (:func:`warp_landmarks`: mirrored crops permute and shift them).

    Returns ``(crop (S, S, 3) uint8, landmarks (N, 2) float64)``.
    """
    pts = warp_landmarks(landmarks, M, flip_perm, annotation_offset_x)
    return warp_image(image, M, out_size), pts


def warp_image(image: np.ndarray, M: np.ndarray, out_size: int) -> np.ndarray:
    """``image`` resampled once through ``M`` into an ``out_size`` square (bilinear, black outside), uint8."""
    return cv2.warpAffine(
        np.ascontiguousarray(image), check_affine(M), (int(out_size), int(out_size)), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )


def sample_occlusion(
    height: int, width: int, fraction: float, rng: np.random.Generator, max_aspect: float = 2.0
) -> Tuple[Tuple[int, int, int, int], Tuple[int, int, int]]:
    """A random rectangle covering ``fraction`` of the image *area*, and a random RGB colour.

    The aspect ratio ``w / h`` is log-uniform in ``[1 / max_aspect, max_aspect]``; the rectangle
    lies inside the image, its position uniform. Returns ``((x0, y0, x1, y1), (r, g, b))`` with
    exclusive ends.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"occlusion fraction must be in (0, 1], got {fraction!r}")
    area = fraction * height * width
    aspect = math.exp(rng.uniform(-math.log(max_aspect), math.log(max_aspect)))
    w = int(round(min(width, max(1.0, math.sqrt(area * aspect)))))
    h = int(round(min(height, max(1.0, area / w))))
    x0 = int(rng.integers(0, width - w + 1))
    y0 = int(rng.integers(0, height - h + 1))
    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    return (x0, y0, x0 + w, y0 + h), colour


def paint_occlusion(image: np.ndarray, box: Tuple[int, int, int, int], colour: Tuple[int, int, int]) -> np.ndarray:
    """Fill ``image[y0:y1, x0:x1]`` with ``colour`` *in place*; returns ``image``."""
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = np.asarray(colour, dtype=image.dtype)
    return image


def random_occlusion(
    image: np.ndarray, rng: np.random.Generator, fraction: float = 0.2
) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """Paint one random-colour rectangle of ``fraction`` of the image area (in place)."""
    box, colour = sample_occlusion(image.shape[0], image.shape[1], fraction, rng)
    return paint_occlusion(image, box, colour), box


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation for one face."""

    rotation_deg: float = 0.0
    scale: float = 1.0
    shift: Tuple[float, float] = (0.0, 0.0)
    flip: bool = False
    occlusion_box: Optional[Tuple[int, int, int, int]] = None
    occlusion_colour: Optional[Tuple[int, int, int]] = None

    def for_size(self, from_size: int, to_size: int) -> "AugmentParams":
        """The same draw for a crop of side ``to_size`` instead of ``from_size``: the shift (output pixels)
        and the occluder's box scaled by ``f = to_size / from_size`` (box ends rounded); the crop then
        covers the same region, so a point maps as ``p_to = f (p_from + 0.5) - 0.5``."""
        if int(from_size) <= 0 or int(to_size) <= 0:
            raise ValueError(f"crop sizes must be positive; got {from_size} and {to_size}")
        f = int(to_size) / int(from_size)
        box = None if self.occlusion_box is None else tuple(int(round(v * f)) for v in self.occlusion_box)
        return AugmentParams(self.rotation_deg, self.scale, (self.shift[0] * f, self.shift[1] * f), self.flip,
                             box, self.occlusion_colour)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (paper: rotation +-40 deg, translation +-30 px, scale +-10%, flip 50%,
    random occlusion). Every magnitude is drawn uniformly in ``[-max, max]``.

    Attributes:
        rotation: max rotation in degrees.
        translation: max shift per axis, in pixels of the *output crop* (the paper's 30 px
            refer to a 256 crop: scale it yourself for other sizes).
        scale: zoom drawn in ``[1 - scale, 1 + scale]``.
        flip: probability of a horizontal mirror (with the scheme's index permutation).
        occlusion_prob: probability of painting one occluding rectangle (not given in the paper;
            0.5 by default).
        occlusion_fraction: the rectangle's share of the crop's *area* (0.2 = 20%), random aspect
            ratio in [1/2, 2], random position and colour.
    """

    rotation: float = 40.0
    translation: float = 30.0
    scale: float = 0.1
    flip: float = 0.5
    occlusion_prob: float = 0.5
    occlusion_fraction: float = 0.2

    def __post_init__(self) -> None:
        for name in ("rotation", "translation", "scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"AugmentConfig.{name} must be >= 0, got {value!r}")
        if self.scale >= 1:
            raise ValueError(f"AugmentConfig.scale must be < 1 (zoom in [1 - scale, 1 + scale]), got {self.scale}")
        for name in ("flip", "occlusion_prob"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"AugmentConfig.{name} is a probability in [0, 1], got {value!r}")
        if not 0 < self.occlusion_fraction <= 1:
            raise ValueError(f"AugmentConfig.occlusion_fraction must be in (0, 1], got {self.occlusion_fraction!r}")

    def sample(self, rng: np.random.Generator, out_size: int) -> AugmentParams:
        """Draw one face's parameters (always the same number of draws before the occlusion's)."""
        rotation = rng.uniform(-self.rotation, self.rotation)
        scale = 1.0 + rng.uniform(-self.scale, self.scale)
        shift = rng.uniform(-self.translation, self.translation, size=2)
        flip = rng.random() < self.flip
        occlude = rng.random() < self.occlusion_prob
        box = colour = None
        if occlude:
            box, colour = sample_occlusion(out_size, out_size, self.occlusion_fraction, rng)
        return AugmentParams(float(rotation), float(scale), (float(shift[0]), float(shift[1])), bool(flip), box, colour)


def _normalised_levels() -> np.ndarray:
    """``(3, 256)`` float32: ``(v / 255 - mean_c) / std_c`` for every uint8 level ``v`` of channel ``c``,
    by the same float32 operations as an elementwise normalisation (so a lookup equals it bit for bit)."""
    x = np.repeat(np.arange(256, dtype=np.float32)[:, None], 3, axis=1)
    x *= 1.0 / 255.0
    x -= IMAGENET_MEAN
    x /= IMAGENET_STD
    return np.ascontiguousarray(x.T)


_NORMALISED_LEVELS = _normalised_levels()


def normalise_image(crop: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB -> float32 ``(3, H, W)``: ``(x / 255 - mean) / std`` (ImageNet).

    A lookup of each channel's 256 levels (:func:`_normalised_levels`), written straight into the
    channel-first array. The elementwise float32 operations give the same bits, 4x slower on an
    ``(H, W, 3)`` array (their inner loops run over its 3 channels): 0.26 against 0.06 ms for a 128 px
    crop on the 2-core AMD EPYC VM, where the fast model's whole network takes about 2 ms.
    """
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {crop.dtype} {crop.shape}")
    out = np.empty((3,) + crop.shape[:2], dtype=np.float32)
    for c in range(3):
        np.take(_NORMALISED_LEVELS[c], crop[:, :, c], out=out[c])
    return out


def denormalise_image(image) -> np.ndarray:
    """Inverse of :func:`normalise_image`, for display: ``(3, H, W)`` (array or CPU/GPU tensor)
    -> uint8 ``(H, W, 3)`` RGB, rounded and clipped to [0, 255]."""
    if hasattr(image, "detach"):  # a torch tensor; data/transforms stays torch-free otherwise
        image = image.detach().float().cpu().numpy()
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {x.shape}")
    x = x.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
