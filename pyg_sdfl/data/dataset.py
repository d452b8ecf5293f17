"""Torch dataset: face samples -> normalised crops and crop-pixel landmarks.

Bad images are decided when the dataset is built, never mid-epoch. At construction every file
image gets the checks of :func:`~pyg_sdfl.data.sample.probe_image` (the whole file is read and its
structure walked, no pixels decoded: about 0.08 ms per 300-W JPEG, against 1.4 ms to decode it;
this catches missing, non-image, truncated and oversized files and damaged PNG chunks), and
in-memory arrays a shape/dtype check; with ``cache_images=True`` every image is fully decoded
instead. Faces that fail are dropped from a training dataset (``on_bad_image="skip"``, with
``augment`` given: one warning with the count and examples, counted in
:attr:`LandmarkDataset.skipped`) or raise :class:`~pyg_sdfl.data.sample.ImageLoadError` naming the
files (``"fail"``). A dataset without augmentation gives evaluation crops, and an evaluation set is
scored as given: it never loses a face, whatever ``on_bad_image`` says, so a bad image there raises.
An image that passed those checks but cannot be decoded in ``__getitem__`` (damage the structure
check cannot see, a file changed after construction, a callable that raises) raises
:class:`~pyg_sdfl.data.sample.ImageLoadError` naming the face and the file: no face is ever
replaced by another, and the item at ``index`` is always face ``index`` (``"index"`` in the item).
``cache_images=True`` decodes every image up front, so nothing can fail later.

OpenCV threads. Many small warps parallelise better across DataLoader workers than inside
OpenCV, and OpenCV's threads would compete with torch's on small machines, so the dataset
switches OpenCV to one thread (``cv2.setNumThreads(1)``, process-wide) in the process that builds
it, and in spawned workers. It never calls it in a *forked* process: ``setNumThreads`` in a child
forked while the parent's OpenCV thread pool was active deadlocks (observed with OpenCV 5.0);
forked workers inherit the parent's single-thread setting instead.

Augmentation randomness comes from ``np.random.default_rng([seed, epoch, index])``: reproducible,
independent of worker count and order, and different every epoch (:meth:`set_epoch`; the epoch
also lives in shared memory, so it reaches persistent workers).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pyg_sdfl.data.sample import FaceSample, ImageLoadError, as_rgb_uint8, check_points, probe_image
from pyg_sdfl.data.transforms import (
    AugmentConfig,
    AugmentParams,
    checked_annotation_offset,
    denormalise_image,
    normalise_image,
    paint_occlusion,
    warp_image,
    warp_landmarks,
    warp_sample,
)
from pyg_sdfl import geometry
from pyg_sdfl.schemes import LandmarkScheme, get_scheme

__all__ = [
    "LandmarkDataset",
    "crop_landmarks",
    "denormalise_image",
    "mean_shape",
    "single_threaded_opencv",
    "worker_init_fn",
]

log = logging.getLogger(__name__)

_NO_AUGMENT = AugmentParams()
_IMPORT_PID = os.getpid()  # differs from os.getpid() in a process forked after this import
_opencv_configured = False


def single_threaded_opencv() -> None:
    """``cv2.setNumThreads(1)`` once per process, except in processes forked after this module
    was imported (they inherit the setting; calling it there can deadlock)."""
    global _opencv_configured
    if _opencv_configured:
        return
    _opencv_configured = True
    if os.getpid() == _IMPORT_PID:
        cv2.setNumThreads(1)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` (optional: the dataset does the same on its first item)."""
    single_threaded_opencv()


def crop_landmarks(landmarks: np.ndarray, image_size: int = 256, crop_scale: float = 1.2) -> np.ndarray:
    """Landmarks ``(N, 2)`` mapped into their own evaluation crop (no augmentation), float64."""
    cx, cy, side = geometry.crop_square(landmarks, crop_scale)
    return geometry.apply_affine(landmarks, geometry.crop_matrix((cx, cy), side, image_size))


def mean_shape(
    samples: Union[Sequence[FaceSample], np.ndarray], image_size: int = 256, crop_scale: float = 1.2
) -> np.ndarray:
    """Mean landmark shape ``(N, 2)`` in crop pixels: the average of every face's landmarks
    mapped into its own ``image_size`` crop (``crop_scale`` x the landmark box). Accepts samples
    or a ``(M, N, 2)`` array. Needs no images."""
    if isinstance(samples, np.ndarray):
        shapes = samples
        if shapes.ndim != 3 or shapes.shape[-1] != 2:
            raise ValueError(f"landmarks must have shape (M, N, 2), got {shapes.shape}")
    else:
        if len(samples) == 0:
            raise ValueError("mean_shape needs at least one sample")
        counts = {s.landmarks.shape[0] for s in samples}
        if len(counts) != 1:
            raise ValueError(f"samples have different numbers of landmarks: {sorted(counts)}")
        shapes = [s.landmarks for s in samples]
    if len(shapes) == 0:
        raise ValueError("mean_shape needs at least one sample")
    return np.mean([crop_landmarks(p, image_size, crop_scale) for p in shapes], axis=0)


class LandmarkDataset(Dataset):
    """Crops of annotated faces, optionally augmented.

    Item ``i`` is a dict:
        ``"image"``: float32 ``(3, S, S)``, ImageNet-normalised RGB;
        ``"landmarks"``: float32 ``(N, 2)`` in crop pixels (0-based pixel centres);
        ``"matrix"``: float32 ``(2, 3)`` original -> crop (invert it to map predictions back);
        ``"index"``: int, the position in :attr:`samples` of the face returned;
        ``"teacher_image"``: float32 ``(3, T, T)``, only with ``teacher_size``: the same view (region,
        turn, mirror, occluder) at side ``T``, for a distillation teacher
        (:mod:`pyg_sdfl.engine.distillation`).

    Args:
        samples: the faces; all must match ``scheme`` (checked here, naming the bad sample).
        scheme: landmark scheme (name or object); gives N and the flip permutation.
        image_size: S, the crop side in pixels.
        crop_scale: the square crop's side over the landmark box's longer side.
        augment: training augmentation, or ``None`` for plain crops.
        seed: base of the per-item random generators (>= 0).
        on_bad_image: ``"skip"`` (drop faces whose image fails the construction checks; training
            datasets only) or ``"fail"`` (see the module docstring).
        cache_images: decode every image once here and keep it in memory.
        annotation_offset_x: how far (image pixels) the annotations sit right of the
            mirror-symmetric content; mirrored crops keep it
            (:func:`~pyg_sdfl.data.transforms.mirrored_label_shift`). 0 = the labels are exact.
        teacher_size: ``T``: also return each view at this side as ``"teacher_image"`` (``None``: not).
    """

    def __init__(
        self,
        samples: Sequence[FaceSample],
        scheme: Union[str, LandmarkScheme],
        image_size: int = 256,
        crop_scale: float = 1.2,
        augment: Optional[AugmentConfig] = None,
        seed: int = 0,
        on_bad_image: str = "skip",
        cache_images: bool = False,
        annotation_offset_x: float = 0.0,
        teacher_size: Optional[int] = None,
    ) -> None:
        self.scheme = get_scheme(scheme)
        if teacher_size is not None and (int(teacher_size) != teacher_size or teacher_size <= 0):
            raise ValueError(f"teacher_size must be a positive integer or None, got {teacher_size!r}")
        self.teacher_size = None if teacher_size is None else int(teacher_size)
        annotation_offset_x = checked_annotation_offset(annotation_offset_x)
        if on_bad_image not in ("skip", "fail"):
            raise ValueError(f"on_bad_image must be 'skip' or 'fail', got {on_bad_image!r}")
        if int(image_size) != image_size or image_size <= 0:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if augment is not None and not isinstance(augment, AugmentConfig):
            raise TypeError(f"augment must be an AugmentConfig or None, got {type(augment).__name__}")
        samples = list(samples)
        if not samples:
            raise ValueError("LandmarkDataset: the sample list is empty")
        self.image_size = int(image_size)
        self.crop_scale = float(crop_scale)
        self.augment = augment
        self.seed = int(seed)
        self.on_bad_image = on_bad_image
        self.cache_images = bool(cache_images)
        self.annotation_offset_x = float(annotation_offset_x)
        self._flip_perm = np.asarray(self.scheme.flip_permutation, dtype=np.int64)
        single_threaded_opencv()

        boxes = [self._validate(i, s) for i, s in enumerate(samples)]
        images, bad = self._check_images(samples)
        if bad:
            examples = "; ".join(f"sample {i} ({samples[i].name!r}): {reason}" for i, reason in bad[:3])
            if augment is None:
                raise ImageLoadError(
                    f"{len(bad)} of {len(samples)} images of an evaluation set cannot be read (e.g. {examples}); "
                    "repair or remove them: an evaluation set is scored as given, its faces are never skipped"
                )
            if on_bad_image == "fail":
                raise ImageLoadError(
                    f"{len(bad)} of {len(samples)} images cannot be read (e.g. {examples}); "
                    "pass on_bad_image='skip' to drop them"
                )
            log.warning("skipping %d of %d faces whose image cannot be read (e.g. %s)", len(bad), len(samples), examples)
        bad_set = {i for i, _ in bad}
        keep = [i for i in range(len(samples)) if i not in bad_set]
        if not keep:
            raise ValueError(f"LandmarkDataset: none of the {len(samples)} images can be read; the dataset is empty")
        self.samples: List[FaceSample] = [samples[i] for i in keep]
        self.kept_indices = np.asarray(keep, dtype=np.int64)
        self._boxes = np.asarray([boxes[i] for i in keep], dtype=np.float64)
        self._images = [images[i] for i in keep] if images is not None else None
        self._dropped = len(bad)
        # Shared memory: visible to DataLoader workers, persistent ones included.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    # -- construction helpers -------------------------------------------------------------
    def _validate(self, i: int, sample: FaceSample) -> Tuple[float, float, float]:
        if not isinstance(sample, FaceSample):
            raise TypeError(f"sample {i} is a {type(sample).__name__}, not a FaceSample")
        where = f"sample {i} ({sample.name!r})"
        found = np.shape(sample.landmarks)
        if len(found) != 2 or found[0] != self.scheme.num_points:
            raise ValueError(
                f"{where} has landmarks of shape {found}, but scheme {self.scheme.name!r} has "
                f"{self.scheme.num_points} points: the scheme does not match the data"
            )
        check_points(sample.landmarks, where, self.scheme.num_points)
        try:
            return geometry.crop_square(sample.landmarks, self.crop_scale)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    def _check_images(self, samples: List[FaceSample]) -> Tuple[Optional[list], List[Tuple[int, str]]]:
        bad: List[Tuple[int, str]] = []
        images: Optional[list] = [None] * len(samples) if self.cache_images else None
        for i, s in enumerate(samples):
            try:
                if self.cache_images:
                    images[i] = s.load_image()
                elif isinstance(s.image, Path):
                    probe_image(s.image)
                elif isinstance(s.image, np.ndarray):
                    as_rgb_uint8(s.image, f"sample {i} ({s.name!r})")
            except ImageLoadError as exc:
                bad.append((i, str(exc)))
        return images, bad

    # -- public API -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before iterating each epoch)."""
        if int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    @property
    def skipped(self) -> int:
        """Faces dropped at construction because their image failed the checks."""
        return self._dropped

    def crop_square(self, index: int) -> Tuple[float, float, float]:
        """Face ``index``'s crop square ``(cx, cy, side)`` in image pixels (``crop_scale`` x its landmark box)."""
        cx, cy, side = self._boxes[index]
        return float(cx), float(cy), float(side)

    def crop_matrix(self, index: int, params: AugmentParams = _NO_AUGMENT, size: Optional[int] = None) -> np.ndarray:
        """The ``(2, 3)`` float64 original -> crop matrix of face ``index`` under ``params`` (drawn for
        :attr:`image_size`), into a crop of side ``size`` (default :attr:`image_size`)."""
        cx, cy, side = self._boxes[index]
        size = self.image_size if size is None else int(size)
        shift = params.shift if size == self.image_size else params.for_size(self.image_size, size).shift
        return geometry.crop_matrix(
            (cx, cy), side, size, rotation_deg=params.rotation_deg, scale=params.scale, shift=shift, flip=params.flip,
        )

    def crop_landmarks(self, index: int, params: AugmentParams = _NO_AUGMENT) -> np.ndarray:
        """Face ``index``'s landmarks in its crop under ``params``, float64 ``(N, 2)``: mapped by
        :meth:`crop_matrix`, permuted and shifted when it mirrors
        (:func:`~pyg_sdfl.data.transforms.warp_landmarks`)."""
        return warp_landmarks(self.samples[index].landmarks, self.crop_matrix(index, params), self._flip_perm,
                              self.annotation_offset_x)

    def augment_params(self, index: int, epoch: Optional[int] = None) -> AugmentParams:
        """The augmentation draw of face ``index`` in ``epoch`` (default: the current epoch)."""
        if self.augment is None:
            return _NO_AUGMENT
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        return self.augment.sample(rng, self.image_size)

    def __getitem__(self, index: int) -> Dict[str, object]:
        single_threaded_opencv()
        n = len(self.samples)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} faces")
        index %= n
        params = self.augment_params(index)
        image = self.image(index)  # decoded once for both views
        crop, landmarks = self.warp(index, params, image)
        M = self.crop_matrix(index, params)
        item = {
            "image": torch.from_numpy(normalise_image(crop)),
            "landmarks": torch.from_numpy(landmarks.astype(np.float32)),
            "matrix": torch.from_numpy(M.astype(np.float32)),
            "index": index,
        }
        if self.teacher_size is not None:
            item["teacher_image"] = (item["image"] if self.teacher_size == self.image_size else torch.from_numpy(
                normalise_image(self.view(index, params, self.teacher_size, image))))
        return item

    def warp(self, index: int, params: AugmentParams = _NO_AUGMENT,
             image: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Face ``index`` under one augmentation draw ``params``: ``(crop (S, S, 3) uint8 RGB,
        landmarks (N, 2) float64 crop pixels)``, occluder painted; what ``__getitem__`` normalises.
        ``image``: the face's picture if already decoded (default: :meth:`image`)."""
        image = self.image(index) if image is None else image
        M = self.crop_matrix(index, params)
        crop, landmarks = warp_sample(image, self.samples[index].landmarks, M, self.image_size, self._flip_perm,
                                      self.annotation_offset_x)
        if params.occlusion_box is not None:
            paint_occlusion(crop, params.occlusion_box, params.occlusion_colour)
        return crop, landmarks

    def view(self, index: int, params: AugmentParams, size: int, image: Optional[np.ndarray] = None) -> np.ndarray:
        """Face ``index`` under the draw ``params`` (made for :attr:`image_size`) as a crop of side ``size``:
        the same region, turn and mirror, the occluder scaled (:meth:`AugmentParams.for_size`), ``(size, size, 3)``
        uint8 RGB. A point ``p`` of the ``image_size`` crop sits at ``f (p + 0.5) - 0.5`` in it, ``f = size / image_size``."""
        scaled = params.for_size(self.image_size, size)
        M = self.crop_matrix(index, params, size)
        image = self.image(index) if image is None else image
        crop = warp_image(image, M, size)
        if scaled.occlusion_box is not None:
            paint_occlusion(crop, scaled.occlusion_box, scaled.occlusion_colour)
        return crop

    def image(self, index: int) -> np.ndarray:
        """Face ``index``'s whole picture, ``(H, W, 3)`` uint8 RGB (the cached copy with ``cache_images``:
        do not modify it); :class:`~pyg_sdfl.data.sample.ImageLoadError` naming the face if it cannot be read."""
        if self._images is not None:
            return self._images[index]
        sample = self.samples[index]
        try:
            return sample.load_image()
        except ImageLoadError as exc:
            hint = (" (the file passed the checks when the dataset was built: it changed since, or its compressed "
                    "data is damaged; repair or remove it, or set cache_images=True to decode every image, and "
                    "skip the bad ones, before training)") if isinstance(sample.image, Path) else ""
            raise ImageLoadError(f"face {index} of this dataset: {exc}{hint}") from None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} faces, scheme={self.scheme.name!r}, image_size={self.image_size}, "
            f"crop_scale={self.crop_scale}, augment={self.augment is not None}, skipped={self.skipped})"
        )
