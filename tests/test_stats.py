"""Bootstrap CIs and paired comparisons: agreement with scipy, coverage, NaN handling, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from replication.metrics.stats import bootstrap_ci, paired_comparison
from tolerance import FLOAT64, atol


def _normal(n: int, mean: float = 0.0, sd: float = 1.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sd, n)


def test_bootstrap_ci_is_scipys_bootstrap_of_the_mean():
    values = _normal(40, mean=2.0)
    ours = bootstrap_ci(values, n_resamples=2000, seed=3)
    reference = stats.bootstrap((values,), np.mean, n_resamples=2000, rng=np.random.default_rng(3))
    # float64 means of 40 values, in numpy's and in scipy's order.
    rounding = atol(values, ops=2 * 40, dtype=FLOAT64)
    assert ours.mean == pytest.approx(values.mean(), abs=rounding)
    assert ours.low == pytest.approx(reference.confidence_interval.low, abs=rounding)
    assert ours.high == pytest.approx(reference.confidence_interval.high, abs=rounding)
    assert (ours.n, ours.n_dropped, ours.confidence) == (40, 0, 0.95)


def test_bootstrap_ci_has_the_normal_theory_width_and_shrinks_with_n():
    values = _normal(400, mean=1.0, sd=2.0, seed=1)
    ci = bootstrap_ci(values, n_resamples=4000, seed=0)
    half_width = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    # BCa vs. the t/normal interval: within 10 % of the half-width for n = 400.
    assert (ci.high - ci.low) / 2 == pytest.approx(half_width, rel=0.1)
    assert ci.low < values.mean() < ci.high
    small = bootstrap_ci(values[:25], n_resamples=4000, seed=0)
    assert small.high - small.low > 2 * (ci.high - ci.low)
    narrower = bootstrap_ci(values, n_resamples=4000, seed=0, confidence=0.5)
    assert narrower.high - narrower.low < ci.high - ci.low


def test_bootstrap_ci_is_deterministic_and_seeded():
    values = _normal(30, seed=5)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7).low != bootstrap_ci(values, seed=8).low


def test_bootstrap_ci_drops_nans_and_handles_degenerate_samples():
    values = np.array([1.0, np.nan, 3.0, 2.0, np.nan, 4.0])
    ci = bootstrap_ci(values, n_resamples=1000)
    assert (ci.n, ci.n_dropped, ci.mean) == (4, 2, 2.5)
    finite = bootstrap_ci([1.0, 3.0, 2.0, 4.0], n_resamples=1000)
    assert (ci.low, ci.high) == (finite.low, finite.high)
    constant = bootstrap_ci([0.3, 0.3, 0.3])
    assert (constant.mean, constant.low, constant.high) == (0.3, 0.3, 0.3)
    single = bootstrap_ci([0.7, np.nan])
    assert single.mean == 0.7 and math.isnan(single.low) and math.isnan(single.high) and single.n == 1
    empty = bootstrap_ci([np.nan])
    assert math.isnan(empty.mean) and empty.n == 0 and empty.n_dropped == 1


def test_paired_comparison_detects_a_shift_and_matches_scipy():
    base = _normal(30, seed=2)
    a, b = base + 0.5 + 0.1 * _normal(30, seed=3), base
    result = paired_comparison(a, b, n_resamples=2000, seed=1)
    diff = a - b
    assert result.mean_difference == pytest.approx(diff.mean(), abs=atol(diff, ops=2 * 30, dtype=FLOAT64))
    assert result.ci_low < result.mean_difference < result.ci_high
    assert result.ci_low > 0.4 and result.ci_high < 0.6
    assert result.p_value == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-12)
    assert result.p_value < 1e-6
    assert (result.n_pairs, result.n_dropped) == (30, 0)
    # One-sided: a > b is supported, a < b is not.
    assert paired_comparison(a, b, alternative="greater").p_value < 1e-6
    assert paired_comparison(a, b, alternative="less").p_value > 0.99
    # Swapping the methods flips the sign and keeps the two-sided p-value.
    swapped = paired_comparison(b, a, n_resamples=2000, seed=1)
    assert swapped.mean_difference == pytest.approx(-result.mean_difference)
    assert swapped.p_value == pytest.approx(result.p_value)


def test_paired_comparison_without_an_effect():
    a = _normal(50, seed=4)
    noise = 0.01 * _normal(25, seed=5)
    b = a + np.concatenate([noise, -noise])  # differences symmetric about 0 by construction
    result = paired_comparison(a, b, seed=0)
    # 0 up to rounding: b = a + d rounds at the scale of a, then 50 differences are averaged.
    assert result.mean_difference == pytest.approx(0.0, abs=atol(a, ops=50 + 2, dtype=FLOAT64))
    assert result.p_value > 0.9  # not exactly 1: a + d − a rounds, so |d| ties are not exact
    assert result.ci_low < 0 < result.ci_high
    same = paired_comparison(a, a)
    assert (same.mean_difference, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_comparison_drops_nan_pairs_and_reports_them():
    a = np.array([0.9, 0.8, np.nan, 0.7, 0.95, 0.85, 0.6, 0.75])
    b = np.array([0.5, 0.6, 0.4, np.nan, 0.55, 0.45, 0.5, 0.35])
    result = paired_comparison(a, b, n_resamples=1000)
    keep = ~(np.isnan(a) | np.isnan(b))
    assert (result.n_pairs, result.n_dropped) == (6, 2)
    assert result.mean_difference == pytest.approx((a[keep] - b[keep]).mean())
    assert result.p_value == pytest.approx(stats.wilcoxon(a[keep], b[keep]).pvalue)
    assert result == paired_comparison(a, b, n_resamples=1000)  # deterministic
    nothing = paired_comparison([np.nan, 1.0], [2.0, np.nan])
    assert nothing.n_pairs == 0 and nothing.n_dropped == 2 and math.isnan(nothing.p_value)


def test_infinite_values_are_an_error_not_a_dropped_value():
    with pytest.raises(ValueError, match=r"values holds 1 infinite value\(s\) \(at index \[2\]\)"):
        bootstrap_ci([0.1, 0.2, -np.inf, 0.3])
    with pytest.raises(ValueError, match=r"b holds 2 infinite value\(s\) \(at index \[0, 3\]\)"):
        paired_comparison([0.1, 0.2, 0.3, 0.4], [np.inf, 0.2, np.nan, -np.inf])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(4,\) differ"):
        paired_comparison([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="one-dimensional.*shape \\(2, 2\\)"):
        bootstrap_ci([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="confidence must be in \\(0, 1\\); got 95"):
        bootstrap_ci([1, 2, 3], confidence=95)


def test_bootstrap_of_an_aggregate_matches_a_brute_force_reference():
    """The least favourable mean over methods, bootstrapped over images, against the same
    resamples drawn by hand: the percentile interval exactly, and BCa from its textbook
    definition (bias from the resamples, acceleration from the jackknife)."""
    from scipy.stats import norm

    from replication.metrics.stats import bootstrap_statistic

    rng = np.random.default_rng(3)
    table = rng.normal([0.6, 0.5, 0.7], 0.2, size=(9, 3))  # 9 images × 3 methods

    def least_favourable(rows):
        return np.nanmean(rows, axis=0).min()

    # scipy draws the resampled indices as integers(0, n, (resamples, n)) from the generator
    indices = np.random.default_rng(5).integers(0, 9, size=(2000, 9))
    by_hand = np.array([least_favourable(table[i]) for i in indices])
    estimate = least_favourable(table)

    percentile = bootstrap_statistic(table, least_favourable, n_resamples=2000, seed=5,
                                     method="percentile")
    assert percentile.value == estimate
    assert (percentile.low, percentile.high) == pytest.approx(
        tuple(np.percentile(by_hand, [2.5, 97.5])), rel=1e-12)

    # the share of resamples below the estimate, ties counted half
    z0 = norm.ppf((np.sum(by_hand < estimate) + np.sum(by_hand <= estimate)) / (2 * len(by_hand)))
    jackknife = np.array([least_favourable(np.delete(table, i, axis=0)) for i in range(9)])
    spread = jackknife.mean() - jackknife
    acceleration = (spread ** 3).sum() / (6 * ((spread ** 2).sum()) ** 1.5)
    levels = [norm.cdf(z0 + (z0 + z) / (1 - acceleration * (z0 + z)))
              for z in norm.ppf([0.025, 0.975])]
    bca = bootstrap_statistic(table, least_favourable, n_resamples=2000, seed=5)
    assert (bca.low, bca.high) == pytest.approx(
        tuple(np.percentile(by_hand, [100 * q for q in levels])), rel=1e-6)
    assert bca.n == 9 and bca.method == "bootstrap"


def test_bootstrap_intervals_are_deterministic_for_a_seed_and_move_with_it():
    from replication.metrics.stats import bootstrap_statistic

    table = np.random.default_rng(0).normal(size=(12, 4))
    first = bootstrap_statistic(table, lambda r: r.mean(0).max(), n_resamples=500, seed=1)
    again = bootstrap_statistic(table, lambda r: r.mean(0).max(), n_resamples=500, seed=1)
    other = bootstrap_statistic(table, lambda r: r.mean(0).max(), n_resamples=500, seed=2)
    assert first == again and (first.low, first.high) != (other.low, other.high)


def test_one_unit_gives_no_interval():
    from replication.metrics.stats import bootstrap_statistic

    interval = bootstrap_statistic(np.array([[0.3, 0.4]]), lambda r: r.mean())
    assert interval.n == 1 and interval.low is None and interval.high is None
