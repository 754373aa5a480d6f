"""The tests behind ParchGrad's channel statistics: one-sided class t-tests in log space and
Shapiro–Wilk per channel (``ChannelStatistics.from_gaps`` uses them).

- ``class_log_pvalues``: per class k the one-sided two-sample t-test "mean GAP of class k > mean
  GAP of the other classes", pooled Student (the authors', scipy's default) or Welch, as float64
  log p from a tail that does not underflow;
- ``float32_tied``: log p as the authors stored p (float32: every p < ~1e-45 is 0, so such
  channels tie);
- ``shapiro_pvalues``: the Shapiro–Wilk p-value of each channel's GAP.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import special, stats
from torch import Tensor

from replication.errors import ConfigError, DataError

# scipy's t.logsf is exact until p leaves the float64 range (log p ≈ -745); below this
# threshold the log-space continued fraction takes over.
LOGSF_SWITCH = -500.0
# float64 bytes per channel chunk when computing tests (bounds memory for 50,000 images).
CHUNK_BYTES = 1 << 27


def _log_betainc_small_x(a: np.ndarray, b: float, x: np.ndarray, log_x: np.ndarray,
                         log_1mx: np.ndarray, max_iter: int = 10_000) -> np.ndarray:
    """log I_x(a, b) by the Lentz continued fraction with the prefactor in log space.

    Valid (and fast) for x < (a + 1) / (a + b + 2), which holds wherever p underflows.
    """
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0

    def guard(v: np.ndarray) -> np.ndarray:
        return np.where(np.abs(v) < tiny, tiny, v)

    c = np.ones_like(x)
    d = 1.0 / guard(1.0 - qab * x / qap)
    h = d.copy()
    active = np.ones(x.shape, dtype=bool)
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        coef = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 / guard(1.0 + coef * d)
        c = guard(1.0 + coef / c)
        h = np.where(active, h * d * c, h)
        coef = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 / guard(1.0 + coef * d)
        c = guard(1.0 + coef / c)
        delta = d * c
        h = np.where(active, h * delta, h)
        active &= np.abs(delta - 1.0) > eps
        if not active.any():
            break
    return a * log_x + b * log_1mx - special.betaln(a, b) - np.log(a) + np.log(h)


def t_logsf(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """log P(T > t) for Student's t with ``df`` degrees of freedom, in float64, no underflow.

    scipy's ``t.logsf`` returns -inf once p < ~1e-308 (t ≈ 38 at df = 50,000); there the
    tail is computed as log(½ I_x(df/2, ½)), x = df / (df + t²), in log space.
    """
    t = np.asarray(t, dtype=np.float64)
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), t.shape)
    with np.errstate(invalid="ignore"):
        out = np.asarray(stats.t.logsf(t, df), dtype=np.float64).copy()
    deep = np.isfinite(t) & (t > 0) & np.isfinite(df) & ~(out > LOGSF_SWITCH)
    if deep.any():
        tt, nu = t[deep], df[deep]
        log_nu, log_t2 = np.log(nu), 2.0 * np.log(tt)
        log_den = np.logaddexp(log_nu, log_t2)
        log_x, log_1mx = log_nu - log_den, log_t2 - log_den
        out[deep] = math.log(0.5) + _log_betainc_small_x(nu / 2.0, 0.5, np.exp(log_x),
                                                         log_x, log_1mx)
    return out


def _class_t_chunk(x: Tensor, labels: Tensor, counts: Tensor, num_classes: int,
                   equal_var: bool) -> tuple[np.ndarray, np.ndarray]:
    """t statistics and degrees of freedom (K, c) for one channel chunk x (N, c) float64."""
    n = x.shape[0]
    n_k = counts.to(torch.float64)[:, None]                                   # (K, 1)
    n_r = n - n_k
    total = x.sum(dim=0)                                                      # (c,)
    centered = x - total / n
    m2_total = (centered * centered).sum(dim=0)
    sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64).index_add_(0, labels, x)
    # Empty groups give 0/0 = NaN means, and zero variances 0/0 = NaN t: both end as p = 1.
    mean_k = sums / n_k
    mean_r = (total - sums) / n_r
    within = x - mean_k[labels]
    m2_k = torch.zeros_like(sums).index_add_(0, labels, within * within)
    # Partition of the total sum of squares: total = within k + within rest + between.
    between = n_k * n_r / n * (mean_k - mean_r) ** 2
    m2_r = (m2_total - m2_k - between).clamp_min(0.0)
    diff = mean_k - mean_r
    if equal_var:
        dof = torch.full_like(diff, float(n - 2))
        pooled = (m2_k + m2_r) / dof
        se = torch.sqrt(pooled * (1.0 / n_k + 1.0 / n_r))
    else:
        var_k, var_r = m2_k / (n_k - 1.0), m2_r / (n_r - 1.0)
        a, b = var_k / n_k, var_r / n_r
        se = torch.sqrt(a + b)
        dof = (a + b) ** 2 / (a * a / (n_k - 1.0) + b * b / (n_r - 1.0))
    return (diff / se).numpy(), dof.expand_as(diff).numpy()


def class_log_pvalues(gap: Tensor, labels: Tensor, num_classes: int,
                      equal_var: bool = True) -> Tensor:
    """log p (C, K) float64 of the one-sided test "mean GAP of class k > mean of the others".

    ``equal_var=True`` is the pooled Student test the authors ran (scipy's default);
    ``False`` is Welch's. Equals ``scipy.stats.ttest_ind(x[y==k], x[y!=k],
    alternative="greater", equal_var=...)`` with log p from a non-underflowing tail. An
    undefined test (NaN: zero variance, an absent class, Welch with one image) gets p = 1
    (log p = 0), as the authors' NaN → 1.
    """
    if gap.ndim != 2 or labels.ndim != 1 or labels.shape[0] != gap.shape[0]:
        raise DataError(f"gap must be (N, C) and labels (N,); got {tuple(gap.shape)} and "
                        f"{tuple(labels.shape)}")
    labels = labels.to(torch.int64).cpu()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}); got "
                        f"[{int(labels.min())}, {int(labels.max())}]")
    n, channels = gap.shape
    if n < 3:
        raise DataError(f"a two-sample t-test needs at least 3 images; got {n}")
    counts = torch.bincount(labels, minlength=num_classes)
    out = torch.empty(channels, num_classes, dtype=torch.float64)
    step = max(1, CHUNK_BYTES // (8 * n * 3))
    for start in range(0, channels, step):
        x = gap[:, start:start + step].detach().cpu().to(torch.float64)
        t, dof = _class_t_chunk(x, labels, counts, num_classes, equal_var)
        log_p = t_logsf(t, dof)
        log_p[np.isnan(log_p)] = 0.0
        out[start:start + step] = torch.from_numpy(log_p.T.copy())
    return out


def float32_tied(log_p: Tensor) -> Tensor:
    """log p as the authors stored it: p cast to float32, so p < ~1e-45 becomes 0 (log -inf)."""
    return torch.exp(log_p.to(torch.float64)).to(torch.float32).to(torch.float64).log()


def shapiro_pvalues(gap: Tensor, max_samples: int | None = None,
                    seed: int = 0) -> tuple[Tensor, dict]:
    """Shapiro–Wilk p per channel of ``gap`` (N, C), float64; NaN → 1 as the authors.

    ``max_samples=None`` uses every image, as the authors (scipy warns that p may be
    inaccurate for N > 5000; warnings go into the returned dict, not to the console). An
    integer draws one seeded subsample of images shared by all channels. The dict records
    what was done.
    """
    n = gap.shape[0]
    if max_samples is not None and max_samples < 3:
        raise ConfigError(f"shapiro_max_samples must be None or ≥ 3; got {max_samples}")
    values = gap.detach().cpu().to(torch.float64).numpy()
    if max_samples is not None and max_samples < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
        values = values[rows]
    used = values.shape[0]
    if used < 3:
        raise DataError(f"Shapiro–Wilk needs at least 3 images; got {used}")
    out = np.empty(values.shape[1], dtype=np.float64)
    step = max(1, CHUNK_BYTES // (8 * used))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for start in range(0, values.shape[1], step):
            out[start:start + step] = stats.shapiro(values[:, start:start + step], axis=0).pvalue
    out[np.isnan(out)] = 1.0
    messages = sorted({str(w.message).split(". ")[0] for w in caught})
    info = {"n_used": int(used), "n_available": int(n),
            "subsampled": bool(used < n), "seed": int(seed) if used < n else None,
            "scipy_warnings": messages,
            "note": ("p-values for N > 5000 may be inaccurate (scipy); the authors ran it on "
                     "50,000 images") if used > 5000 else ""}
    return torch.from_numpy(out), info
