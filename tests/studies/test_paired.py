"""pyg_sdfl.studies.paired: paired per-face differences, their bootstrap CI over faces and the verdict."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pyg_sdfl.studies import paired
from pyg_sdfl.studies.paired import BETTER, NO_DIFFERENCE, WORSE


def _faces(rng: np.random.Generator, m: int = 224) -> np.ndarray:
    """Skewed per-face NMEs like a landmark model's (most 3-8%, a tail of hard faces)."""
    return 0.03 + rng.gamma(2.0, 0.012, size=m)


# ============================================================================ paired_difference
def test_paired_difference_is_row_minus_reference() -> None:
    assert paired.paired_difference([0.05, 0.07], [0.04, 0.09]).tolist() == pytest.approx([0.01, -0.02])


@pytest.mark.parametrize("row, ref, match", [
    ([0.1, 0.2, 0.3], [0.1, 0.2], "same faces: row_nme has 3 faces, ref_nme 2"),
    ([0.1, math.nan], [0.1, 0.2], "row_nme has 1 non-finite value.*face 1"),
    ([0.1, 0.2], [math.inf, 0.2], "ref_nme has 1 non-finite value.*face 0"),
    ([], [], "row_nme holds no face"),
    ([[0.1, 0.2]], [[0.1, 0.2]], r"shape \(M,\); got shape \(1, 2\)"),
])
def test_paired_difference_refuses_what_cannot_be_the_same_faces(row, ref, match) -> None:
    with pytest.raises(ValueError, match=match):
        paired.paired_difference(row, ref)


# ============================================================================ bootstrap_ci
def test_a_known_shift_gives_a_ci_below_zero() -> None:
    rng = np.random.default_rng(0)
    ref = _faces(rng)
    row = ref - 0.01 + rng.normal(0, 0.005, ref.size)  # 1 pp lower on every face, give or take noise
    ci = paired.bootstrap_ci(paired.paired_difference(row, ref))
    assert ci.mean == pytest.approx(float(np.mean(row - ref)))
    assert ci.low < ci.mean < ci.high < 0
    assert ci.low < -0.01 < ci.high  # the true shift is inside
    # the same faces unpaired: the face difficulty swamps the shift's SE; paired, it is ~0.0003
    assert ci.high - ci.low < 0.1 * np.std(ref)


def test_identical_runs_give_a_ci_around_zero() -> None:
    rng = np.random.default_rng(1)
    ref = _faces(rng)
    assert paired.bootstrap_ci(paired.paired_difference(ref, ref)) == (0.0, 0.0, 0.0)
    noisy = ref + rng.normal(0, 0.01, ref.size)
    noisy -= noisy.mean() - ref.mean()  # same mean, different faces better and worse
    ci = paired.bootstrap_ci(paired.paired_difference(noisy, ref))
    assert ci.low < 0 < ci.high and abs(ci.mean) < 1e-12


def test_coverage_of_the_95_percent_interval() -> None:
    """Over 200 simulated test sets with known mean difference, ~95% of the intervals hold it (the
    binomial SE of the rate is 1.5%; a CI too narrow by sqrt(M), or 100% wide, fails)."""
    rng = np.random.default_rng(2)
    true_mean, m, trials = -0.004, 120, 200
    hits = 0
    for t in range(trials):
        diff = true_mean + rng.normal(0, 0.01, m)
        ci = paired.bootstrap_ci(diff, resamples=2000, seed=t)
        hits += ci.low <= true_mean <= ci.high
    assert 0.91 <= hits / trials <= 0.99, hits


def test_bootstrap_is_deterministic_with_the_seed_and_chunking_is_invisible(monkeypatch) -> None:
    diff = np.random.default_rng(3).normal(0.001, 0.01, 300)
    first = paired.bootstrap_ci(diff, seed=7)
    assert paired.bootstrap_ci(diff, seed=7) == first
    assert paired.bootstrap_ci(diff, seed=8) != first
    # the interval narrows with the level and holds the mean
    narrow = paired.bootstrap_ci(diff, confidence=0.5, seed=7)
    assert first.low < narrow.low < narrow.mean < narrow.high < first.high
    # many small chunks: still the mean's bootstrap distribution (not the same draws, same answer)
    monkeypatch.setattr(paired, "_MAX_DRAWN", 300 * 7)
    chunked = paired.bootstrap_ci(diff, seed=7)
    se = np.std(diff, ddof=1) / np.sqrt(diff.size)
    assert chunked.low == pytest.approx(first.low, abs=0.1 * se)
    assert chunked.high == pytest.approx(first.high, abs=0.1 * se)
    assert first.high - first.low == pytest.approx(2 * 1.96 * se, rel=0.1)


@pytest.mark.parametrize("kwargs, match", [({"confidence": 1.0}, "confidence"), ({"confidence": 0.0}, "confidence"),
                                           ({"resamples": 0}, "resamples"), ({"resamples": 2.5}, "resamples")])
def test_bootstrap_refuses_bad_settings(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        paired.bootstrap_ci([0.1, 0.2], **kwargs)
    with pytest.raises(ValueError, match="non-finite"):
        paired.bootstrap_ci([0.1, math.nan])


# ============================================================================ the verdict
def test_paired_test_needs_every_seed() -> None:
    below, above, across = (-0.01, -0.02, -0.001), (0.01, 0.001, 0.02), (-0.001, -0.01, 0.005)
    assert paired.paired_test([below, below, below]) == BETTER
    assert paired.paired_test([above, above]) == WORSE
    assert paired.paired_test([below, below, across]) == NO_DIFFERENCE  # one seed's CI holds 0
    assert paired.paired_test([below, above, below]) == NO_DIFFERENCE  # seeds disagree
    # an interval touching 0 does not exclude it
    assert paired.paired_test([below, (-0.01, -0.02, 0.0)]) == NO_DIFFERENCE
    assert paired.paired_test([below]) == "n/a (1 seed)"
    assert paired.paired_test([]) == "n/a (no shared seed)"
    assert paired.paired_test([below], min_seeds=1) == BETTER


def test_combined_verdict_needs_both_tests() -> None:
    below = [(-0.01, -0.02, -0.001)] * 3
    assert paired.paired_verdict(below, BETTER) == BETTER
    assert paired.paired_verdict([(0.01, 0.001, 0.02)] * 3, WORSE) == WORSE
    assert paired.paired_verdict(below, NO_DIFFERENCE) == NO_DIFFERENCE  # the seed spread disagrees
    assert paired.paired_verdict(below, WORSE) == NO_DIFFERENCE
    assert paired.paired_verdict([(-0.001, -0.01, 0.005)] * 3, BETTER) == NO_DIFFERENCE  # the faces disagree
    assert paired.paired_verdict(None, WORSE) == "n/a (no per-face errors; seed spread: worse)"
    assert paired.paired_verdict(None, "n/a (1 seed)") == "n/a (1 seed; no per-face errors)"
    assert paired.paired_verdict(below[:1], "n/a (1 seed)") == "n/a (1 seed)"
    assert paired.combine(BETTER, "n/a (1 seed)") == "n/a (1 seed; paired: better)"
    assert paired.is_na("n/a (1 seed)") and paired.is_na(None) and not paired.is_na(NO_DIFFERENCE)


def test_end_to_end_on_simulated_seeds() -> None:
    """Three seeds of a variant 0.5 pp better on every face: 'better'; the same mean gain carried by
    per-face noise 20x larger: the paired test cannot tell, so no verdict although the means differ."""
    rng = np.random.default_rng(4)
    refs = [_faces(rng) for _ in range(3)]
    steady = [paired.bootstrap_ci(paired.paired_difference(r - 0.005 + rng.normal(0, 0.002, r.size), r), seed=s)
              for s, r in enumerate(refs)]
    assert paired.paired_test(steady) == BETTER
    noisy = []
    for s, r in enumerate(refs):
        noise = rng.normal(0, 0.04, r.size)
        noisy.append(paired.bootstrap_ci(paired.paired_difference(r - 0.005 + noise - noise.mean(), r), seed=s))
    assert all(ci.mean == pytest.approx(-0.005) for ci in noisy)
    assert paired.paired_test(noisy) == NO_DIFFERENCE
    assert paired.paired_verdict(noisy, BETTER) == NO_DIFFERENCE
