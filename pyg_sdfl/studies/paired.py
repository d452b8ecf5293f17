"""Paired statistics of two runs scored on the same faces, and the combined verdict of the comparison tables.

Two runs (a variant and the reference, trained with the same seed) scored on the same ``M`` test faces,
in the same order, give per-face errors ``row`` and ``ref`` of shape ``(M,)``. Their paired difference
``d_i = row_i - ref_i`` (:func:`paired_difference`; negative = the variant's error is lower on face
``i``) removes what the two runs share, how hard each face is, so its mean
``mean(d) = mean(row) - mean(ref)`` is measured far more precisely than the two means apart.
:func:`bootstrap_ci` puts a percentile-bootstrap confidence interval over faces on ``mean(d)``.

The verdict (:func:`paired_verdict`) joins two tests, one per source of noise:

* the **paired test** (:func:`paired_test`), against test-face noise: ``"better"`` when, in every seed
  the two rows share, the CI of ``mean(d)`` lies below 0 (``high < 0``), ``"worse"`` when it lies above
  0 in every seed (``low > 0``);
* the **seed-spread rule** (:func:`pyg_sdfl.studies.comparison.verdict`), against training noise:
  ``|mean_row - mean_ref| > std_ref + std_row`` over seeds.

The verdict is ``"better"`` / ``"worse"`` only when both tests say so (:func:`combine`).

Why "in every seed" and not one CI pooled over seeds: the bootstrap resamples faces, so it measures
how much ``mean(d)`` of two *fixed* trained models would move on another draw of test faces; it knows
nothing of training noise (initialisation, data order, augmentation), whose unit is the seed. A CI
pooled over seeds (all ``S x M`` differences, or the per-face mean over seeds) narrows with every face
and seed added and excludes 0 as soon as one seed's pair differs a lot, so one lucky training run would
pass for an effect of the condition. Asking every seed to show the effect on its own is a replication
criterion: each independent training run must reproduce it on the same faces. It is conservative
(with a small real effect the chance of passing is the per-seed power to the power ``S``), which is
the side a claim should err on; and it still cannot tell a consistent effect from one smaller than
the spread between seeds of one condition, which is why the seed-spread rule must agree too.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "BETTER",
    "WORSE",
    "NO_DIFFERENCE",
    "CONFIDENCE",
    "RESAMPLES",
    "BootstrapCI",
    "paired_difference",
    "bootstrap_ci",
    "is_na",
    "paired_test",
    "combine",
    "paired_verdict",
]

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no significant difference"
#: the confidence level and bootstrap resamples of the comparison tables
CONFIDENCE = 0.95
RESAMPLES = 10_000
#: the most resample-by-face indices drawn at once (int64: 32 MiB)
_MAX_DRAWN = 1 << 22

ArrayLike = Union[Sequence[float], np.ndarray]


class BootstrapCI(NamedTuple):
    """The mean of the paired differences and its confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float


def _finite_vector(values: ArrayLike, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim != 1:
        raise ValueError(f"{name} must be one value per face, shape (M,); got shape {v.shape}")
    if v.size == 0:
        raise ValueError(f"{name} holds no face")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ValueError(f"{name} has {bad.size} non-finite value(s), first at face {int(bad[0])}: {v[bad[0]]}")
    return v


def paired_difference(row_nme: ArrayLike, ref_nme: ArrayLike) -> np.ndarray:
    """Per-face difference ``d_i = row_i - ref_i`` of two runs scored on the same faces in the same order.

    Args:
        row_nme: ``(M,)`` per-face errors of the compared run.
        ref_nme: ``(M,)`` per-face errors of the reference run, same faces, same order.

    Returns:
        ``(M,)`` float64; negative where the compared run's error is lower.

    Raises:
        ValueError: when either is not one-dimensional, empty or holds a non-finite value, or when the
            two lengths differ (they cannot be the same faces).
    """
    row = _finite_vector(row_nme, "row_nme")
    ref = _finite_vector(ref_nme, "ref_nme")
    if row.size != ref.size:
        raise ValueError(f"paired errors need the same faces: row_nme has {row.size} faces, ref_nme {ref.size}")
    return row - ref


def bootstrap_ci(diff: ArrayLike, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                 seed: int = 0) -> BootstrapCI:
    """Percentile-bootstrap confidence interval of the mean of ``diff`` over faces.

    Each of ``B = resamples`` resamples draws ``M`` faces with replacement (indices ``j_1 .. j_M``
    uniform on ``0 .. M-1``) and takes ``mean_b = sum_k diff[j_k] / M``; with ``a = 1 - confidence``,
    ``low`` and ``high`` are the ``a/2`` and ``1 - a/2`` quantiles of ``mean_1 .. mean_B``
    (``numpy.quantile``, linear interpolation). ``mean`` is the plain mean of ``diff``. The draws are
    vectorised in chunks of at most ``2**22`` indices and depend only on ``(M, resamples, seed)``:
    the same inputs give the same interval.

    Args:
        diff: ``(M,)`` paired differences (:func:`paired_difference`), finite.
        confidence: the interval's level, in ``(0, 1)``.
        resamples: ``B``, at least 1.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        :class:`BootstrapCI` ``(mean, low, high)``.
    """
    d = _finite_vector(diff, "diff")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    if int(resamples) != resamples or resamples < 1:
        raise ValueError(f"resamples must be a positive integer; got {resamples}")
    rng = np.random.default_rng(seed)
    m, total = d.size, int(resamples)
    chunk = max(1, _MAX_DRAWN // m)
    means = np.empty(total)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        means[start:start + n] = d[rng.integers(0, m, size=(n, m))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(float(d.mean()), float(low), float(high))


def is_na(label: Optional[str]) -> bool:
    """Whether a verdict label says the test could not be made (``"n/a (...)"``)."""
    return label is None or label.startswith("n/a")


def _na_reason(label: str) -> str:
    return label[len("n/a ("):-1] if label.startswith("n/a (") and label.endswith(")") else label


def paired_test(cis_per_seed: Sequence[Tuple[float, float, float]], min_seeds: int = 2) -> str:
    """The paired test over seeds: ``"better"`` when every seed's interval lies below 0 (``high < 0``),
    ``"worse"`` when every one lies above 0 (``low > 0``), else ``"no significant difference"``.

    Args:
        cis_per_seed: one ``(mean, low, high)`` (:class:`BootstrapCI`) per seed the two rows share.
        min_seeds: fewer seeds than this give ``"n/a (1 seed)"`` (``"n/a (no shared seed)"`` for none),
            the same label as the seed-spread rule's, which needs two seeds too.
    """
    n = len(cis_per_seed)
    if n == 0:
        return "n/a (no shared seed)"
    if n < min_seeds:
        return f"n/a ({n} seed{'s' if n != 1 else ''})"
    if all(high < 0 for _, _, high in cis_per_seed):
        return BETTER
    if all(low > 0 for _, low, _ in cis_per_seed):
        return WORSE
    return NO_DIFFERENCE


def combine(paired: str, seed_spread: str) -> str:
    """The verdict from the two partial ones: ``"better"`` / ``"worse"`` when both say it; ``"n/a (...)"``
    when either is n/a (its reason, and the other test's answer when that one was made); otherwise
    ``"no significant difference"``.

    >>> combine("better", "better"), combine("better", "no significant difference")
    ('better', 'no significant difference')
    >>> combine("n/a (no per-face errors)", "worse")
    'n/a (no per-face errors; seed spread: worse)'
    """
    if is_na(paired) or is_na(seed_spread):
        if is_na(paired) and is_na(seed_spread):
            reasons = list(dict.fromkeys([_na_reason(seed_spread), _na_reason(paired)]))
            return f"n/a ({'; '.join(reasons)})"
        if is_na(paired):
            return f"n/a ({_na_reason(paired)}; seed spread: {seed_spread})"
        return f"n/a ({_na_reason(seed_spread)}; paired: {paired})"
    if paired == seed_spread and paired in (BETTER, WORSE):
        return paired
    return NO_DIFFERENCE


def paired_verdict(cis_per_seed: Optional[Sequence[Tuple[float, float, float]]], seed_verdict: str,
                   min_seeds: int = 2) -> str:
    """The combined verdict of a row: :func:`paired_test` on ``cis_per_seed`` (``None``: the runs have
    no per-face errors, ``"n/a (no per-face errors)"``) joined with the seed-spread rule's
    ``seed_verdict`` by :func:`combine`: ``"better"`` / ``"worse"`` only when both say so."""
    paired = "n/a (no per-face errors)" if cis_per_seed is None else paired_test(cis_per_seed, min_seeds)
    return combine(paired, seed_verdict)
