"""Face-alignment metrics: NME, failure rate, the cumulative error distribution and its AUC.

Inputs may be numpy arrays or torch tensors (any device); outputs are numpy arrays or Python
floats. Coordinates are ``(B, N, 2)``; the scheme (name or :class:`~pyg_sdfl.schemes.LandmarkScheme`)
fixes ``N`` and the normalisation indices.

Conventions:

* ``nme_b = mean_i ||pred_{b,i} - target_{b,i}||_2 / d_b`` (mean over the visible points if a
  ``visible_mask`` is given), ``d_b`` from :func:`normalisation_distance`.
* A face *fails* when its NME is strictly greater than the threshold: an error exactly at the
  threshold is a success. This matches the CED, ``CED(x) = fraction of faces with nme <= x``, so
  ``FR@t = 1 - CED(t)``.
* ``AUC@t = (1/t) * integral_0^t CED(x) dx`` by the trapezoidal rule on the grid
  ``0, h, 2h, ..., t`` (``h <= step``, default 1e-4), the usual protocol in the literature.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from pyg_sdfl.schemes import LandmarkScheme, get_scheme

__all__ = [
    "NORMALISATIONS",
    "auc",
    "ced_curve",
    "failure_rate",
    "nme",
    "normalisation_distance",
    "summarize",
]

NORMALISATIONS = ("inter_ocular", "inter_pupil", "box")
ALL = "all"

ArrayLike = Any  # numpy array, torch tensor or nested sequence


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__}") from err
    return arr


def _landmarks(x: ArrayLike, scheme: LandmarkScheme, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.ndim != 3 or arr.shape[1:] != (scheme.num_points, 2):
        raise ValueError(
            f"{name} of shape {arr.shape} does not match scheme {scheme.name!r}: expected (B, {scheme.num_points}, 2)"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (no faces)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _errors(nmes: ArrayLike) -> np.ndarray:
    arr = _to_numpy(nmes, "nmes")
    if arr.ndim != 1:
        raise ValueError(f"nmes must be a 1-D array of per-face errors, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("nmes is empty: no faces to evaluate")
    if not np.isfinite(arr).all():
        raise ValueError("nmes contains NaN or infinite values")
    if (arr < 0).any():
        raise ValueError("nmes contains negative values")
    return arr


def _threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a positive finite number, got {threshold}")
    return threshold


def normalisation_distance(
    target: ArrayLike, scheme: Union[str, LandmarkScheme], mode: str = "inter_ocular"
) -> np.ndarray:
    """Per-face normaliser ``d`` of shape ``(B,)`` from ground truth ``(B, N, 2)``.

    * ``"inter_ocular"``: distance between the outer eye corners ``scheme.inter_ocular``.
    * ``"inter_pupil"``: distance between the pupil centres (means of ``scheme.left_pupil`` and
      ``scheme.right_pupil``).
    * ``"box"``: ``sqrt(w * h)`` of the ground-truth landmarks' bounding box.

    A zero normaliser raises ``ValueError`` naming the faces.
    """
    scheme = get_scheme(scheme)
    t = _landmarks(target, scheme, "target")
    if mode == "inter_ocular":
        i, j = scheme.inter_ocular
        d = np.linalg.norm(t[:, i] - t[:, j], axis=-1)
    elif mode == "inter_pupil":
        left = t[:, list(scheme.left_pupil)].mean(axis=1)
        right = t[:, list(scheme.right_pupil)].mean(axis=1)
        d = np.linalg.norm(left - right, axis=-1)
    elif mode == "box":
        size = t.max(axis=1) - t.min(axis=1)
        d = np.sqrt(size[:, 0] * size[:, 1])
    else:
        raise ValueError(f"unknown normalisation mode {mode!r}; known: {', '.join(NORMALISATIONS)}")
    bad = np.flatnonzero(d <= 0)
    if bad.size:
        raise ValueError(f"{mode} normalisation distance is zero for faces {bad.tolist()[:20]}")
    return d


def nme(
    pred: ArrayLike,
    target: ArrayLike,
    scheme: Union[str, LandmarkScheme],
    mode: str = "inter_ocular",
    visible_mask: Optional[ArrayLike] = None,
) -> np.ndarray:
    """Per-face normalised mean error ``(B,)``: ``mean_i ||pred_i - target_i|| / d``.

    Args:
        pred, target: ``(B, N, 2)`` in the same pixel frame.
        scheme: the landmark scheme (name or object).
        mode: the normaliser, see :func:`normalisation_distance` (always from the full target).
        visible_mask: optional ``(B, N)`` bool; the mean runs over the ``True`` points only.
    """
    scheme = get_scheme(scheme)
    p = _landmarks(pred, scheme, "pred")
    t = _landmarks(target, scheme, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} have different numbers of faces")
    d = normalisation_distance(t, scheme, mode)
    errors = np.linalg.norm(p - t, axis=-1)  # (B, N)
    if visible_mask is None:
        return errors.mean(axis=1) / d
    mask = visible_mask.detach().cpu().numpy() if hasattr(visible_mask, "detach") else np.asarray(visible_mask)
    if mask.shape != errors.shape:
        raise ValueError(f"visible_mask must have shape {errors.shape}, got {mask.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"visible_mask must be boolean, got dtype {mask.dtype}")
    counts = mask.sum(axis=1)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(f"visible_mask selects no point for faces {empty.tolist()[:20]}")
    return (errors * mask).sum(axis=1) / counts / d


def failure_rate(nmes: ArrayLike, threshold: float = 0.1) -> float:
    """Fraction of faces with ``nme > threshold`` (strict: ``nme == threshold`` is a success)."""
    e = _errors(nmes)
    return float((e > _threshold(threshold)).mean())


def ced_curve(nmes: ArrayLike, threshold: float = 0.1, step: float = 1e-4) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution on ``[0, threshold]``.

    Returns ``(x, y)``: ``x`` the grid ``linspace(0, threshold, K + 1)`` with
    ``K = ceil(threshold / step)`` (so the spacing is at most ``step`` and ``x[-1] == threshold``
    exactly) and ``y[k] = fraction of faces with nme <= x[k]``.
    """
    e = np.sort(_errors(nmes))
    threshold = _threshold(threshold)
    step = float(step)
    if not math.isfinite(step) or step <= 0:
        raise ValueError(f"step must be a positive finite number, got {step}")
    intervals = max(1, int(math.ceil(threshold / step - 1e-9)))
    x = np.linspace(0.0, threshold, intervals + 1)
    y = np.searchsorted(e, x, side="right") / e.size
    return x, y


def auc(nmes: ArrayLike, threshold: float = 0.1, step: float = 1e-4) -> float:
    """``AUC@threshold`` in ``[0, 1]``: trapezoidal area under :func:`ced_curve` divided by ``threshold``."""
    x, y = ced_curve(nmes, threshold, step)
    area = float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)
    return area / x[-1]


def _tags_of(entry: Union[str, Sequence[str], None], index: int) -> Tuple[str, ...]:
    if entry is None:
        return ()
    if isinstance(entry, str):
        tags: Tuple[str, ...] = (entry,)
    else:
        tags = tuple(entry)
    for tag in tags:
        if not isinstance(tag, str):
            raise ValueError(f"subset tags must be strings; face {index} has {tag!r}")
        if tag == ALL:
            raise ValueError(f"subset tag {ALL!r} is reserved for the whole set (face {index})")
    return tags


def summarize(
    nmes: ArrayLike,
    subsets: Optional[Sequence[Union[str, Sequence[str]]]] = None,
    threshold: float = 0.1,
    step: float = 1e-4,
) -> Dict[str, Dict[str, float]]:
    """NME / FR / AUC per subset.

    Args:
        nmes: ``(B,)`` per-face errors.
        subsets: optional, one entry per face: its tags (a sequence of strings, or one string
            for a single tag). A face counts in every subset it is tagged with.
        threshold: FR and AUC threshold; ``step``: the CED grid spacing.

    Returns:
        ``{"all": stats, tag: stats, ...}`` (tags sorted), where ``stats`` is
        ``{"nme": mean NME, "fr": failure rate, "auc": AUC, "count": number of faces}``.
    """
    e = _errors(nmes)
    groups: Dict[str, list] = {ALL: list(range(e.size))}
    if subsets is not None:
        if isinstance(subsets, str) or len(subsets) != e.size:
            n = "a string" if isinstance(subsets, str) else f"{len(subsets)} entries"
            raise ValueError(f"subsets must have one entry per face ({e.size}), got {n}")
        tagged: Dict[str, list] = {}
        for index, entry in enumerate(subsets):
            for tag in dict.fromkeys(_tags_of(entry, index)):
                tagged.setdefault(tag, []).append(index)
        groups.update({tag: tagged[tag] for tag in sorted(tagged)})
    summary: Dict[str, Dict[str, float]] = {}
    for tag, indices in groups.items():
        sub = e[indices]
        summary[tag] = {
            "nme": float(sub.mean()),
            "fr": failure_rate(sub, threshold),
            "auc": auc(sub, threshold, step),
            "count": int(sub.size),
        }
    return summary
