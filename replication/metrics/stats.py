"""Comparing methods over images: bootstrap confidence intervals and paired tests (deterministic).

NaN values (a metric undefined for an image, e.g. the complexity of an all-zero map, or any
faithfulness score of a non-finite map) are dropped and counted, never silently propagated:
``n`` / ``n_pairs`` say how many values were used and ``n_dropped`` how many were NaN. An
infinite value is an error, not a NaN to drop: it is a result (e.g. the log of a probability that
underflowed to 0) that no mean, CI or rank test can summarise, so where it arises must decide.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
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


def compare_to_reference(scores, reference: str, higher_is_better: Mapping[str, bool], *,
                         by: Sequence[str] = ("model", "metric"), method: str = "method",
                         unit: str = "image", value: str = "value",
                         n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                         seed: int = 0):
    """Every method against ``reference`` on the units both were scored on, per group ``by``.

    ``scores`` is a long table (one row per group × method × unit); ``higher_is_better`` maps
    each metric (the ``metric`` column) to its direction (the metric registry's metadata). One
    row per group and method other than the reference: the paired comparison of
    :func:`paired_comparison` (difference = method − reference), both means, and
    ``improvement``: the difference signed so that > 0 is better. Groups without the
    reference are skipped.
    """
    import pandas as pd

    rows = []
    for keys, group in scores.groupby(list(by), sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        wide = group.pivot(index=unit, columns=method, values=value)
        if reference not in wide:
            continue
        higher = bool(higher_is_better[group["metric"].iloc[0]])
        for name in dict.fromkeys(group[method]):
            if name == reference:
                continue
            pairs = wide[[name, reference]].dropna()
            result = paired_comparison(pairs[name].to_numpy(), pairs[reference].to_numpy(),
                                       n_resamples=n_resamples, confidence=confidence, seed=seed)
            difference = result.mean_difference
            rows.append({**dict(zip(by, keys)), "method": name, "reference": reference,
                         "n_pairs": result.n_pairs, "mean": float(pairs[name].mean()),
                         "reference_mean": float(pairs[reference].mean()),
                         "difference": difference, "ci_low": result.ci_low,
                         "ci_high": result.ci_high, "p_value": result.p_value,
                         "higher_is_better": higher,
                         "improvement": difference if higher else -difference})
    columns = [*by, "method", "reference", "n_pairs", "mean", "reference_mean", "difference",
               "ci_low", "ci_high", "p_value", "higher_is_better", "improvement"]
    return pd.DataFrame(rows, columns=columns)


# --- intervals for claim values -----------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """A claim value with its uncertainty: ``method`` is ``"bootstrap"`` (resampling ``unit``s,
    ``n`` of them), ``"wilson"`` (a proportion of ``n``) or ``"exact"`` (a deterministic
    quantity: an identity, a count, a seeded toy; no interval)."""

    value: float
    low: float | None = None
    high: float | None = None
    n: int | None = None
    method: str = "exact"
    unit: str = ""
    confidence: float = 0.95

    def as_json(self) -> dict:
        """What a stage writes as ``<key>_ci`` beside the value (NaN as null)."""
        def clean(x):
            return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)

        return {"low": clean(self.low), "high": clean(self.high), "n": self.n,
                "method": self.method, "unit": self.unit, "confidence": self.confidence}


def exact(value: float) -> Interval:
    return Interval(float(value), method="exact")


def bootstrap_statistic(values, statistic, *, unit: str = "images",
                        n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                        seed: int = 0, method: Method = "BCa") -> Interval:
    """The whole ``statistic`` bootstrapped over the rows of ``values`` (one row per sampled
    unit, e.g. an image; columns are whatever the statistic combines: methods, stages, …).

    ``statistic(rows)`` takes an (n, …) array of resampled rows and returns a float, so an
    aggregate (the least favourable mean over methods and stages, a ratio of means, a rank, a
    median) is recomputed on every resample, not just its parts. BCa interval by default
    (``scipy.stats.bootstrap`` over row indices: it corrects the bias of statistics such as a
    minimum of means), the percentile interval where BCa is undefined. Fewer than 2 rows: no
    interval. Deterministic for ``seed``.
    """
    _check(n_resamples, confidence)
    rows = np.asarray(values, dtype=np.float64)
    n = len(rows)
    value = float(statistic(rows)) if n else float("nan")
    if n < 2:
        return Interval(value, None, None, n, "bootstrap", unit, confidence)

    def on_indices(index: np.ndarray) -> float:
        return float(statistic(rows[index.astype(int)]))

    low = high = float("nan")
    for attempt in dict.fromkeys([method, "percentile"]):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.bootstrap((np.arange(n, dtype=float),), on_indices, vectorized=False,
                                     n_resamples=n_resamples, confidence_level=confidence,
                                     method=attempt, rng=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            break
    return Interval(value, low, high, n, "bootstrap", unit, confidence)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """A proportion (e.g. a test accuracy) with its Wilson score interval."""
    if n <= 0:
        return Interval(float("nan"), None, None, n, "wilson", "", confidence)
    p = successes / n
    z = stats.norm.ppf(0.5 + confidence / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, float(centre - half), float(centre + half), n, "wilson", "images",
                    confidence)
