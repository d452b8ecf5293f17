"""How far annotations sit from the mirror-symmetric image content: a model-free measurement.

Mirror augmentation maps a label ``x`` to ``W - 1 - x`` (0-based pixel centres). If the annotators
put every point ``b`` pixels right of the feature it marks, the mirrored labels sit ``b`` pixels
*left* of theirs, and a model trained on both learns neither (it ends up ``-b`` off on every
test face). ``b`` can be read from the images alone:

    T_i(u)  = mean over faces of the grey image around label i          (P, P) patches, P = 2 r + 1
    T~_i(u) = mirror of the mean patch around label perm[i]              (the partner point, mirrored)

A feature marked ``b`` right of it appears ``b`` left of the centre in ``T_i`` and, after the
mirror, ``b`` right of the centre in ``T~_i``: ``T_i(u) ~ T~_i(u - d)`` with ``d = -2 b``. The
shift ``d_i`` is found per landmark by a sub-pixel search (:func:`horizontal_shift`), and
``b = -median_i(d_i) / 2``. Faces that are symmetric on average (as many turned left as right)
make ``T_i`` and ``T~_i`` the same picture up to that shift; the vertical shift, which mirroring
cannot cause, is measured the same way as a control and should be ~0.

:func:`crop_mirror_offset` runs the same comparison on the training pipeline's own crops: the
crops of a set of faces, unmirrored and mirrored by :class:`~pyg_sdfl.data.LandmarkDataset`. With
a matched convention (``dataset.annotation_offset_x = b``) their templates coincide (shift 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Tuple

import cv2
import numpy as np

from pyg_sdfl.data.dataset import LandmarkDataset
from pyg_sdfl.data.transforms import AugmentParams

__all__ = [
    "MirrorOffset",
    "mean_patches",
    "horizontal_shift",
    "vertical_shift",
    "template_offsets",
    "annotation_offset",
    "crop_mirror_offset",
]


@dataclass
class MirrorOffset:
    """The result of one measurement.

    ``offset``: ``b`` (pixels, positive = labels right of the content); ``per_point_shift``:
    ``(N,)`` the shifts ``d_i = -2 b_i``; ``vertical_control``: median vertical shift between the same
    templates (mirroring cannot cause one: ~0 when the method holds); ``faces``: faces averaged.
    """

    offset: float
    per_point_shift: np.ndarray
    vertical_control: float
    faces: int

    def to_dict(self) -> dict:
        return {"offset_px": round(float(self.offset), 4), "faces": int(self.faces),
                "vertical_control_px": round(float(self.vertical_control), 4),
                "per_point_shift_px": np.round(self.per_point_shift, 3).tolist()}


def mean_patches(images: Iterable[np.ndarray], landmarks: Iterable[np.ndarray], radius: int = 12) -> Tuple[np.ndarray, int]:
    """Mean grey patch around each landmark: ``images`` (H, W[, 3]) uint8/float, ``landmarks`` (N, 2)
    0-based pixel centres (sub-pixel, bilinear: ``cv2.getRectSubPix``). Returns ``((N, P, P) float64,
    faces)`` with ``P = 2 radius + 1``, the patch centred on the label."""
    size = 2 * int(radius) + 1
    total, faces = None, 0
    for image, pts in zip(images, landmarks):
        grey = np.asarray(image)
        if grey.ndim == 3:
            grey = cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_RGB2GRAY)
        grey = grey.astype(np.float32)
        pts = np.asarray(pts, dtype=np.float64)
        patches = np.stack([cv2.getRectSubPix(grey, (size, size), (float(x), float(y))) for x, y in pts])
        total = patches.astype(np.float64) if total is None else total + patches
        faces += 1
    if total is None:
        raise ValueError("mean_patches needs at least one face")
    return total / faces, faces


def _shift(a: np.ndarray, b: np.ndarray, axis: int, max_shift: float, step: float, margin: int) -> float:
    """The shift ``d`` (pixels, along ``axis``: 1 = x, 0 = y) with ``a(u) ~ b(u - d d_axis)``: the
    zero-mean squared difference over the patch interior (``margin`` px dropped at each side) is
    minimised on a grid of ``step``, then refined by a parabola through the best three."""
    size = a.shape[0]
    if a.shape != (size, size) or b.shape != a.shape or size - 2 * margin < 5:
        raise ValueError(f"patches too small or not square and alike: {a.shape}, {b.shape} "
                         f"(need at least {2 * margin + 5} px a side with a {margin} px margin)")
    inner = slice(margin, size - margin)
    a_in = a[inner, inner] - a[inner, inner].mean()
    grid = np.arange(-max_shift, max_shift + step / 2, step)
    errs = []
    for d in grid:
        M = np.float32([[1, 0, d], [0, 1, 0]]) if axis == 1 else np.float32([[1, 0, 0], [0, 1, d]])
        moved = cv2.warpAffine(b.astype(np.float32), M, (size, size), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)[inner, inner]
        errs.append(float(((a_in - (moved - moved.mean())) ** 2).sum()))
    errs = np.asarray(errs)
    k = int(np.argmin(errs))
    if 0 < k < len(grid) - 1:
        e0, e1, e2 = errs[k - 1], errs[k], errs[k + 1]
        denom = e0 - 2 * e1 + e2
        if denom > 0:
            return float(grid[k] + 0.5 * step * (e0 - e2) / denom)
    return float(grid[k])


def horizontal_shift(a: np.ndarray, b: np.ndarray, max_shift: float = 5.0, step: float = 0.05, margin: int = 4) -> float:
    """Horizontal ``d`` with ``a(x, y) ~ b(x - d, y)`` for two ``(P, P)`` patches (sub-pixel)."""
    return _shift(a, b, 1, max_shift, step, margin)


def vertical_shift(a: np.ndarray, b: np.ndarray, max_shift: float = 5.0, step: float = 0.05, margin: int = 4) -> float:
    """Vertical ``d`` with ``a(x, y) ~ b(x, y - d)`` for two ``(P, P)`` patches (sub-pixel)."""
    return _shift(a, b, 0, max_shift, step, margin)


def template_offsets(direct: np.ndarray, partner: np.ndarray, faces: int) -> MirrorOffset:
    """``b`` from two stacks of mean patches ``(N, P, P)``: ``direct[i]`` around label ``i``, and
    ``partner[i]`` already mirrored into ``direct``'s frame (the mirrored patch of ``perm[i]``)."""
    if direct.shape != partner.shape or direct.ndim != 3:
        raise ValueError(f"need two (N, P, P) stacks of the same shape, got {direct.shape} and {partner.shape}")
    dx = np.array([horizontal_shift(a, b) for a, b in zip(direct, partner)])
    dy = np.array([vertical_shift(a, b) for a, b in zip(direct, partner)])
    return MirrorOffset(offset=float(-np.median(dx) / 2.0), per_point_shift=dx,
                        vertical_control=float(np.median(dy)), faces=int(faces))


def annotation_offset(
    images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], flip_permutation: Sequence[int], radius: int = 12
) -> MirrorOffset:
    """``b`` of a set of annotated images (module docstring): ``images`` (H, W[, 3]), ``landmarks``
    ``(N, 2)`` each, 0-based pixel centres in image pixels; ``flip_permutation`` the scheme's."""
    perm = np.asarray(flip_permutation, dtype=np.int64)
    direct, faces = mean_patches(images, landmarks, radius)
    if perm.shape != (direct.shape[0],):
        raise ValueError(f"flip permutation has {perm.size} entries for {direct.shape[0]} landmarks")
    return template_offsets(direct, direct[perm][:, :, ::-1], faces)


def crop_mirror_offset(dataset: LandmarkDataset, indices: Sequence[int], radius: int = 6) -> MirrorOffset:
    """The same measurement on ``dataset``'s crops (crop pixels): faces ``indices`` cropped plainly
    and mirrored (:meth:`LandmarkDataset.warp` with ``flip=True``, no other augmentation). In the
    mirrored crop, landmark ``i`` is the mirrored partner ``perm[i]``, so the two templates of each
    ``i`` are compared directly; ``offset`` is then the offset *left between* the mirrored labels and
    the plain ones: 0 when the pipeline keeps the annotations' convention."""
    plain, mirrored = [], []
    for index in indices:
        plain.append(dataset.warp(int(index), AugmentParams(flip=False)))
        mirrored.append(dataset.warp(int(index), AugmentParams(flip=True)))
    direct, faces = mean_patches([c for c, _ in plain], [p for _, p in plain], radius)
    flipped, _ = mean_patches([c for c, _ in mirrored], [p for _, p in mirrored], radius)
    return template_offsets(direct, flipped, faces)
