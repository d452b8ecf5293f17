"""Synthetic occluders on evaluation crops, and the NME of the visible and of the occluded landmarks.

The question (the paper's Fig. 2c): when part of a face is hidden, does the model keep the
*visible* landmarks right, or does the occlusion leak into them? Every face gets occluders of a
controlled size, drawn from a seed and the face's index only (so every model sees identical
images), and its landmarks are split into occluded and visible ones.

Geometry, all in pixels of the ``S x S`` evaluation crop (0-based pixel centres, as
:class:`~pyg_sdfl.data.dataset.LandmarkDataset` gives them; the crop is ``crop_scale`` x the
landmark box, so the box lies inside it):

* the **face box** ``(x0, y0, x1, y1)`` is the tight bounding box of the ground-truth landmarks
  (:func:`pyg_sdfl.geometry.landmark_box`);
* pixel ``(r, c)`` covers ``[c - 0.5, c + 0.5) x [r - 0.5, r + 0.5)``, so a point ``p`` lies in pixel
  ``floor(p + 0.5)``; the box's **pixels** are those containing a point of the box, clipped to the
  image: columns ``floor(x0 + 0.5) .. floor(x1 + 0.5)``, rows likewise (:func:`pyg_sdfl.geometry.box_pixels`). Every
  landmark therefore falls in a box pixel;
* **coverage** of a mask = (mask pixels among the box pixels) / (number of box pixels)
  (:func:`coverage`).

Two occluders: a **band** sweeping in from one side of the box (full box height or width;
coverage within ``0.5 / W`` of the request, ``W`` the box side across the band in pixels) and
random rectangular **patches** inside the box whose union covers the requested fraction (within
half a patch column, at most ``0.2 / W`` with the default patch sizes). The occluder is painted in
a fixed mid-grey, RGB (128, 128, 128), taken through the same path as the training-time occluders
(:func:`pyg_sdfl.data.transforms.paint_occlusion` paints a flat uint8 RGB colour on the crop, which
is then normalised): the painted pixels equal ``normalise_image`` of a grey uint8 pixel. (Training
draws a random flat colour per occluder; grey is one of them, not a colour the model never saw.)
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, Dict, Iterable, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from pyg_sdfl.data.transforms import normalise_image
from pyg_sdfl.engine.evaluation import precision_autocast, resolve_precision  # exactly as the engine evaluates
from pyg_sdfl.geometry import box_pixels, landmark_box, pixel_index
from pyg_sdfl.metrics import nme as per_face_nme
from pyg_sdfl.metrics import normalisation_distance
from pyg_sdfl.schemes import LandmarkScheme, get_scheme

__all__ = [
    "KINDS",
    "SIDES",
    "GREY",
    "coverage",
    "band_mask",
    "patch_mask",
    "occluder_mask",
    "occluded_points",
    "occluder_value",
    "apply_occluder",
    "visible_occluded_nme",
    "evaluate_occlusion",
]

log = logging.getLogger(__name__)

Box = Tuple[float, float, float, float]

#: occluder kinds; the number is part of each face's random seed
KINDS: Dict[str, int] = {"band": 1, "patches": 2}
SIDES = ("left", "right", "top", "bottom")
GREY = (128, 128, 128)


# ============================================================================ geometry
def coverage(mask: np.ndarray, box: Sequence[float]) -> float:
    """(``True`` pixels of ``mask (S, S)`` among the box's pixels) / (number of box pixels)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"mask must be a square (S, S) array, got shape {mask.shape}")
    c0, r0, c1, r1 = box_pixels(box, mask.shape[0])
    return float(mask[r0:r1, c0:c1].astype(bool).sum()) / float((r1 - r0) * (c1 - c0))


def _check_fraction(fraction: float) -> float:
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"occluded fraction must be a number in [0, 1], got {fraction!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"occluded fraction must be in [0, 1], got {fraction!r}")
    return value


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def band_mask(box: Sequence[float], fraction: float, size: int, side: str = "left") -> np.ndarray:
    """Boolean ``(S, S)`` mask of a band entering the face box from ``side``.

    ``"left"``/``"right"``: the box's full height and its first/last ``round(fraction * W)`` pixel
    columns (``W`` = box width in pixels); ``"top"``/``"bottom"``: the full width and
    ``round(fraction * H)`` rows. Coverage is ``k / W`` (or ``k / H``), within ``0.5 / W`` of
    ``fraction``; ``fraction = 0`` gives an empty mask.
    """
    fraction = _check_fraction(fraction)
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    c0, r0, c1, r1 = box_pixels(box, size)  # also checks size
    mask = np.zeros((int(size), int(size)), dtype=bool)
    if side in ("left", "right"):
        k = _round_half_up(fraction * (c1 - c0))
        cols = slice(c0, c0 + k) if side == "left" else slice(c1 - k, c1)
        mask[r0:r1, cols] = True
    else:
        k = _round_half_up(fraction * (r1 - r0))
        rows = slice(r0, r0 + k) if side == "top" else slice(r1 - k, r1)
        mask[rows, c0:c1] = True
    return mask


def patch_mask(box: Sequence[float], fraction: float, size: int, rng: np.random.Generator,
               min_side: float = 0.1, max_side: float = 0.4) -> np.ndarray:
    """Boolean ``(S, S)`` mask: random rectangles inside the face box whose union covers ``fraction``
    of the box's pixels.

    With ``A`` box pixels the target is ``T = round(fraction * A)`` pixels. Patches are added one
    at a time: width and height uniform in ``[min_side, max_side]`` x the box's width and height
    (at least one pixel), placed uniformly among the positions inside the box that contain one
    uncovered pixel (drawn uniformly), so every patch adds coverage. The patch that would
    overshoot ``T`` is trimmed: its width is cut to the one (a binary search over the cumulative
    count of newly covered pixels per column) whose union count is nearest ``T``. The error is at most
    half that patch's height, ``|coverage - fraction| <= 0.5 * ceil(max_side * H) / A``
    (about ``0.2 / W`` by default). Deterministic given the state of ``rng``.
    """
    fraction = _check_fraction(fraction)
    if not (0 < min_side <= max_side <= 1):
        raise ValueError(f"need 0 < min_side <= max_side <= 1, got min_side={min_side!r}, max_side={max_side!r}")
    c0, r0, c1, r1 = box_pixels(box, size)
    width, height = c1 - c0, r1 - r0
    area = width * height
    target = _round_half_up(fraction * area)
    mask = np.zeros((int(size), int(size)), dtype=bool)
    inside = mask[r0:r1, c0:c1]  # a view: writes land in ``mask``
    if target >= area:
        inside[:] = True
        return mask
    covered = 0
    while covered < target:
        w = max(1, min(width, _round_half_up(rng.uniform(min_side, max_side) * width)))
        h = max(1, min(height, _round_half_up(rng.uniform(min_side, max_side) * height)))
        free = np.flatnonzero(~inside)
        anchor = int(free[rng.integers(free.size)])
        ay, ax = divmod(anchor, width)  # box-relative pixel that the patch must cover
        x = int(rng.integers(max(0, ax - w + 1), min(ax, width - w) + 1))
        y = int(rng.integers(max(0, ay - h + 1), min(ay, height - h) + 1))
        gain = np.cumsum((~inside[y:y + h, x:x + w]).sum(axis=0))  # new pixels with the first j+1 columns
        if covered + gain[-1] <= target:
            inside[y:y + h, x:x + w] = True
            covered += int(gain[-1])
            continue
        # trim: j = number of columns kept; counts[j] = union size with j columns (counts[0] = covered)
        counts = covered + np.concatenate([[0], gain])
        j = int(np.searchsorted(counts, target, side="right")) - 1  # largest j with counts[j] <= target
        if j + 1 < counts.size and counts[j + 1] - target < target - counts[j]:
            j += 1
        inside[y:y + h, x:x + j] = True
        covered = int(counts[j])
        break
    return mask


def occluder_mask(kind: str, box: Sequence[float], fraction: float, size: int, seed: int, face: int,
                  band_sides: Sequence[str] = ("left", "right")) -> Tuple[np.ndarray, Dict[str, Any]]:
    """The evaluation occluder of face number ``face``: ``(mask (S, S), info)``.

    Its randomness depends only on ``(seed, kind, face)`` (and, for patches, ``fraction``):
    ``"band"`` enters from a side drawn from ``band_sides`` with ``default_rng([seed, 1, face])``
    (the same side at every fraction, so the band grows); ``"patches"`` uses
    ``default_rng([seed, 2, face, round(1e6 * fraction)])``. ``info`` holds ``"side"`` for bands.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown occluder kind {kind!r}; known: {', '.join(KINDS)}")
    if int(seed) != seed or seed < 0 or int(face) != face or face < 0:
        raise ValueError(f"seed and face must be non-negative integers, got seed={seed!r}, face={face!r}")
    if kind == "band":
        sides = list(band_sides)
        if not sides or any(s not in SIDES for s in sides):
            raise ValueError(f"band_sides must be a non-empty subset of {SIDES}, got {band_sides!r}")
        side = sides[int(np.random.default_rng([int(seed), KINDS[kind], int(face)]).integers(len(sides)))]
        return band_mask(box, fraction, size, side=side), {"side": side}
    fraction = _check_fraction(fraction)
    rng = np.random.default_rng([int(seed), KINDS[kind], int(face), int(round(fraction * 1e6))])
    return patch_mask(box, fraction, size, rng), {}


def occluded_points(landmarks: Union[np.ndarray, Tensor], mask: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: landmark ``(N, 2)`` whose pixel ``floor(p + 0.5)`` is ``True`` in ``mask (S, S)``.
    Points outside the image are visible."""
    pts = landmarks.detach().cpu().numpy() if isinstance(landmarks, Tensor) else np.asarray(landmarks)
    pts = pts.astype(np.float64)
    mask = np.asarray(mask, dtype=bool)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"landmarks must have shape (N, 2), got {pts.shape}")
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (S, S), got shape {mask.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("landmarks contain NaN or infinite coordinates")
    cols, rows = pixel_index(pts).T
    ok = (cols >= 0) & (cols < mask.shape[1]) & (rows >= 0) & (rows < mask.shape[0])
    out = np.zeros(len(pts), dtype=bool)
    out[ok] = mask[rows[ok], cols[ok]]
    return out


# ============================================================================ painting
def occluder_value(colour: Sequence[int] = GREY) -> Tensor:
    """``(3,)`` float32: RGB ``colour`` (uint8) as :func:`~pyg_sdfl.data.transforms.normalise_image`
    turns it into a crop pixel."""
    values = np.asarray(colour)
    if values.shape != (3,) or not np.issubdtype(values.dtype, np.integer) or values.min() < 0 or values.max() > 255:
        raise ValueError(f"colour must be 3 integers in [0, 255], got {colour!r}")
    return torch.from_numpy(normalise_image(values.astype(np.uint8).reshape(1, 1, 3))[:, 0, 0].copy())


def apply_occluder(image: Tensor, mask: Union[np.ndarray, Tensor], colour: Sequence[int] = GREY) -> Tensor:
    """A copy of the normalised crop ``image (3, S, S)`` (or a batch ``(B, 3, S, S)`` with masks
    ``(B, S, S)``) with the ``mask`` pixels set to ``colour`` as the dataset normalises it."""
    if not isinstance(image, Tensor):
        raise ValueError(f"image must be a torch.Tensor, got {type(image).__name__}")
    m = mask if isinstance(mask, Tensor) else torch.from_numpy(np.asarray(mask, dtype=bool))
    m = m.to(device=image.device, dtype=torch.bool)
    if image.dim() not in (3, 4) or image.shape[-3] != 3 or tuple(m.shape) != (*image.shape[:-3], *image.shape[-2:]):
        raise ValueError(f"need an image (3, S, S) with a mask (S, S), or (B, 3, S, S) with (B, S, S); "
                         f"got {tuple(image.shape)} and {tuple(m.shape)}")
    fill = occluder_value(colour).to(image.device, image.dtype).view(3, 1, 1)
    return torch.where(m.unsqueeze(-3), fill, image)


# ============================================================================ metrics
def visible_occluded_nme(pred: Any, target: Any, occluded: Any, scheme: Union[str, LandmarkScheme],
                         mode: str = "inter_ocular") -> Tuple[np.ndarray, np.ndarray]:
    """Per-face NME of the visible and of the occluded landmarks: two ``(B,)`` float64 arrays.

    With ``e_bi = ||pred_bi - target_bi||_2``, ``d_b`` the normaliser of face ``b``
    (:func:`pyg_sdfl.metrics.normalisation_distance`, by default the inter-ocular distance of the
    ground truth), ``V_b`` / ``O_b`` its visible / occluded points (``occluded (B, N)`` bool)::

        visible_b  = (1 / |V_b|) sum_{i in V_b} e_bi / d_b
        occluded_b = (1 / |O_b|) sum_{i in O_b} e_bi / d_b

    A face with no occluded (no visible) point gets NaN in the occluded (visible) array.
    ``pred``, ``target``: ``(B, N, 2)`` arrays or tensors in the same pixel frame.
    """
    scheme = get_scheme(scheme)
    d = normalisation_distance(target, scheme, mode)  # validates target (B, N, 2)
    p = pred.detach().cpu().numpy() if isinstance(pred, Tensor) else np.asarray(pred)
    t = target.detach().cpu().numpy() if isinstance(target, Tensor) else np.asarray(target)
    p, t = p.astype(np.float64), t.astype(np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} must have the same shape (B, N, 2)")
    if not np.isfinite(p).all():
        raise ValueError("pred contains NaN or infinite values")
    occ = occluded.detach().cpu().numpy() if isinstance(occluded, Tensor) else np.asarray(occluded)
    if occ.shape != p.shape[:2] or occ.dtype != np.bool_:
        raise ValueError(f"occluded must be a bool array of shape {p.shape[:2]}, got {occ.dtype} {occ.shape}")
    errors = np.linalg.norm(p - t, axis=-1) / d[:, None]
    out = []
    for chosen in (~occ, occ):
        count = chosen.sum(axis=1)
        total = (errors * chosen).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(count > 0, total / np.maximum(count, 1), np.nan))
    return out[0], out[1]


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


# ============================================================================ evaluation
def _batches(n: int, batch_size: int) -> Iterable[range]:
    for start in range(0, n, batch_size):
        yield range(start, min(n, start + batch_size))


@torch.no_grad()
def evaluate_occlusion(
    model: nn.Module,
    dataset: Any,
    scheme: Union[str, LandmarkScheme],
    kinds: Sequence[str] = ("band", "patches"),
    fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    seed: int = 0,
    batch_size: int = 32,
    device: Union[str, torch.device] = "cpu",
    precision: str = "fp32",
    band_sides: Sequence[str] = ("left", "right"),
    colour: Sequence[int] = GREY,
    normalisation: str = "inter_ocular",
    progress: bool = True,
) -> Dict[str, Dict[float, Dict[str, float]]]:
    """NME of ``model`` on ``dataset`` with synthetic occluders of each kind and size.

    ``dataset`` yields un-augmented crops: items with ``"image" (3, S, S)`` (normalised) and
    ``"landmarks" (N, 2)`` in crop pixels, like :class:`~pyg_sdfl.data.dataset.LandmarkDataset`
    with ``augment=None``. Every face is read once; each occluder (:func:`occluder_mask`, seeded by
    ``seed`` and the face's position in ``dataset``, so every model sees the same images) is
    painted on its crop (:func:`apply_occluder`) and the model predicts in crop pixels (the NME
    is invariant to the crop's similarity transform).

    Returns ``{kind: {fraction: stats}}`` with ``stats``:

    * ``nme_all``: mean over faces of the NME of all points;
    * ``nme_visible`` / ``nme_occluded``: NaN-aware means over faces of :func:`visible_occluded_nme`;
    * ``nme_visible_clean``: the same visible points predicted on the *clean* crops, so
      ``nme_visible - nme_visible_clean`` is the error the occluder leaks into the visible points;
    * ``faces``, ``faces_with_occluded``, ``mean_occluded_points`` (per face);
    * ``coverage_mean`` and ``coverage_max_error`` (``max |coverage - fraction|`` over faces).
    """
    scheme = get_scheme(scheme)
    kinds = list(kinds)
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown occluder kind {kind!r}; known: {', '.join(KINDS)}")
    fractions = [_check_fraction(f) for f in fractions]
    if not kinds or not fractions:
        raise ValueError("evaluate_occlusion needs at least one kind and one fraction")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if getattr(dataset, "augment", None) is not None:
        raise ValueError("evaluate_occlusion needs un-augmented crops: build the dataset with augment=None")
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty")
    device = torch.device(device)
    precision = resolve_precision(precision, device)  # rejects an unknown one before any work; "auto" once
    conditions = [(k, f) for k in kinds for f in fractions]
    preds = {c: np.zeros((n, scheme.num_points, 2)) for c in conditions}
    occluded = {c: np.zeros((n, scheme.num_points), dtype=bool) for c in conditions}
    covered = {c: np.zeros(n) for c in conditions}
    clean = np.zeros((n, scheme.num_points, 2))
    targets = np.zeros((n, scheme.num_points, 2))

    def run(images: Tensor) -> np.ndarray:
        with precision_autocast(device, precision):
            out = model(images.to(device))
        return out.float().cpu().numpy().astype(np.float64)

    was_training = model.training
    model.eval()
    interactive = progress and sys.stderr.isatty()
    bar = None
    if interactive:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="occlusion", unit="face", leave=False)
    start = time.perf_counter()
    try:
        for batch in _batches(n, int(batch_size)):
            items = [dataset[i] for i in batch]
            images = torch.stack([torch.as_tensor(item["image"]) for item in items]).float()
            landmarks = np.stack([np.asarray(item["landmarks"], dtype=np.float64) for item in items])
            if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
                raise ValueError(f"dataset images must be (3, S, S); got {tuple(images.shape[1:])}")
            if landmarks.shape[1:] != (scheme.num_points, 2):
                raise ValueError(f"dataset landmarks have shape {landmarks.shape[1:]}, scheme {scheme.name!r} "
                                 f"needs ({scheme.num_points}, 2)")
            size = int(images.shape[-1])
            rows = np.asarray(batch)
            targets[rows] = landmarks
            clean[rows] = run(images)
            boxes = [landmark_box(p) for p in landmarks]
            for kind, fraction in conditions:
                masks = np.stack([occluder_mask(kind, box, fraction, size, seed, face, band_sides)[0]
                                  for box, face in zip(boxes, batch)])
                occluded[(kind, fraction)][rows] = [occluded_points(p, m) for p, m in zip(landmarks, masks)]
                covered[(kind, fraction)][rows] = [coverage(m, box) for m, box in zip(masks, boxes)]
                if masks.any():
                    preds[(kind, fraction)][rows] = run(apply_occluder(images, masks, colour))
                else:  # nothing painted: the clean prediction
                    preds[(kind, fraction)][rows] = clean[rows]
            if bar is not None:
                bar.update(len(batch))
            elif progress:
                log.info("occlusion: %d/%d faces, %d conditions, %.1f s", batch[-1] + 1, n, len(conditions),
                         time.perf_counter() - start)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)

    results: Dict[str, Dict[float, Dict[str, float]]] = {k: {} for k in kinds}
    for kind, fraction in conditions:
        occ = occluded[(kind, fraction)]
        visible, hidden = visible_occluded_nme(preds[(kind, fraction)], targets, occ, scheme, normalisation)
        visible_clean, _ = visible_occluded_nme(clean, targets, occ, scheme, normalisation)
        cov = covered[(kind, fraction)]
        results[kind][fraction] = {
            "nme_all": float(per_face_nme(preds[(kind, fraction)], targets, scheme, mode=normalisation).mean()),
            "nme_visible": _nanmean(visible),
            "nme_occluded": _nanmean(hidden),
            "nme_visible_clean": _nanmean(visible_clean),
            "faces": int(n),
            "faces_with_occluded": int(occ.any(axis=1).sum()),
            "mean_occluded_points": float(occ.sum(axis=1).mean()),
            "coverage_mean": float(cov.mean()),
            "coverage_max_error": float(np.abs(cov - fraction).max()),
        }
    return results
