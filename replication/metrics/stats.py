"""Comparing methods over images: bootstrap confidence intervals and paired tests (deterministic).

NaN values (a metric undefined for an image, e.g. the complexity of an all-zero map, or any
faithfulness score of a non-finite map) are dropped and counted, never silently propagated:
``n`` / ``n_pairs`` say how many values were used and ``n_dropped`` how many were NaN. An
infinite value is an error, not a NaN to drop: it is a result (e.g. the log of a probability that
underflowed to 0) that no mean, CI or rank test can summarise, so where it arises must decide.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 10_000
Method = Literal["BCa", "percentile", "basic"]


@dataclass(frozen=True)
class BootstrapCI:
    """Mean of the finite values and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    confidence: float
    n: int
    n_dropped: int


@dataclass(frozen=True)
class PairedComparison:
    """Per-pair differences ``a − b``: mean, bootstrap CI, Wilcoxon signed-rank p-value."""

    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n_pairs: int
    n_dropped: int
    confidence: float


def _as_1d(values: object, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per image); got shape {array.shape}")
    infinite = np.flatnonzero(np.isinf(array))
    if len(infinite):
        raise ValueError(f"{name} holds {len(infinite)} infinite value(s) (at index "
                         f"{infinite[:10].tolist()}), which no mean, CI or rank test can summarise; "
                         "make the metric that computed them give a finite value, or NaN where it "
                         "is undefined (NaNs are dropped and counted)")
    return array


def _check(n_resamples: int, confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1; got {n_resamples}")


def _mean_ci(values: np.ndarray, n_resamples: int, confidence: float, seed: int,
             method: Method) -> tuple[float, float, float]:
    """Mean and CI of finite ``values``: NaN CI below 2 values, a point CI for constant values."""
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    if np.all(values == values[0]):  # BCa is undefined (zero variance); every resample equals the mean
        return mean, mean, mean
    with warnings.catch_warnings():
        # BCa warns (and returns NaN) on degenerate resampling distributions; NaN is reported as such.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                                 method=method, vectorized=True, rng=np.random.default_rng(seed))
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_ci(values: object, *, n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                 seed: int = 0, method: Method = "BCa") -> BootstrapCI:
    """Bootstrap CI of the mean (``scipy.stats.bootstrap``, BCa by default) over the finite values.

    Deterministic for a given ``seed``. With fewer than 2 values the CI is NaN; constant values
    give the point interval [mean, mean].
    """
    _check(n_resamples, confidence)
    array = _as_1d(values, "values")
    finite = array[~np.isnan(array)]
    mean, low, high = _mean_ci(finite, n_resamples, confidence, seed, method)
    return BootstrapCI(mean=mean, low=low, high=high, confidence=confidence, n=len(finite),
                       n_dropped=len(array) - len(finite))


def paired_comparison(a: object, b: object, *, n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                      seed: int = 0, method: Method = "BCa",
                      alternative: Literal["two-sided", "greater", "less"] = "two-sided") -> PairedComparison:
    """Compare two methods scored on the same images: ``d = a − b`` per image.

    Pairs with a NaN on either side are dropped (and counted). Returns the mean of ``d``, its
    bootstrap CI (as :func:`bootstrap_ci`) and the paired Wilcoxon signed-rank p-value
    (``scipy.stats.wilcoxon(d)``: zero differences dropped, exact distribution for small samples
    without ties, normal approximation otherwise). ``alternative="greater"`` tests a > b. The
    p-value is 1.0 when every difference is zero, NaN when no pair is left.
    """
    _check(n_resamples, confidence)
    first, second = _as_1d(a, "a"), _as_1d(b, "b")
    if first.shape != second.shape:
        raise ValueError(f"a and b must score the same images: shapes {first.shape} and {second.shape} differ")
    keep = ~(np.isnan(first) | np.isnan(second))
    diff = first[keep] - second[keep]
    mean, low, high = _mean_ci(diff, n_resamples, confidence, seed, method)
    if len(diff) == 0:
        p_value = float("nan")
    elif np.all(diff == 0):
        p_value = 1.0
    else:
        p_value = float(stats.wilcoxon(diff, alternative=alternative).pvalue)
    return PairedComparison(mean_difference=mean, ci_low=low, ci_high=high, p_value=p_value,
                            n_pairs=int(keep.sum()), n_dropped=int((~keep).sum()), confidence=confidence)
