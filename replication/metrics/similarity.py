"""Similarity between two batches of attribution maps (Sanity Checks, notes §5 and App. B).

Every metric compares raw maps ``reference`` and ``other`` of one shape (B, C, H, W) (C = 3 for
ImageNet gradient-like maps, 1 for CAM or MNIST maps) and returns one float64 value per image.
Defaults follow the authors' code; options give the paper-text variants (``CONVENTIONS``).

A correlation with a constant map (an all-zero Grad-CAM, say) is undefined: it is NaN, as
``scipy.stats.spearmanr`` gives, and so is SSIM with a constant map (the authors' min–max is
0/0 there). A map holding a NaN or ±inf gives NaN too (an inf would otherwise rank as the
largest value and give a plausible correlation). The caller decides; ``summarize`` drops NaNs
and counts them.
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import Tensor

from replication.attribution import postprocess
from replication.errors import ConfigError

Correlation = Literal["spearman", "pearson"]

# skimage's defaults, passed explicitly so an upgrade cannot change them silently: a Gaussian
# window of σ = 1.5 truncated at 3.5σ (11 taps) and the sample covariance (N − 1), as in
# skimage 0.15, which the authors ran.
SSIM_SIGMA = 1.5
SSIM_SAMPLE_COVARIANCE = True

HOG_ORIENTATIONS = 9
HOG_CELLS_PER_BLOCK = (3, 3)
HOG_BLOCK_NORM = "L2-Hys"

# The paper text (calibration paragraph of App. B): SSIM "with a window size of 5", HOG input
# "normalized to [−1, +1]", "Pearson correlation of HOGs". The text states [−1, 1] for HOG only;
# using it for SSIM as well is our reading of that paragraph.
CONVENTIONS: dict[str, dict[str, object]] = {
    "authors_code": {},
    "paper_text": {"rescale_to": (-1.0, 1.0), "gaussian_weights": False, "win_size": 5,
                   "correlation": "pearson"},
}


def _check_pair(reference: Tensor, other: Tensor) -> None:
    if tuple(reference.shape) != tuple(other.shape):
        raise ValueError("reference and other must have the same shape; got "
                         f"{tuple(reference.shape)} and {tuple(other.shape)}")
    if reference.ndim != 4:
        raise ValueError("maps must be (batch, channels, height, width); got shape "
                         f"{tuple(reference.shape)}")


def _nan_where_not_finite(values: np.ndarray, reference: Tensor, other: Tensor) -> np.ndarray:
    """``values`` with NaN for every image whose reference or other map is not finite."""
    bad = postprocess.non_finite_images(reference) | postprocess.non_finite_images(other)
    values[bad.cpu().numpy()] = np.nan
    return values


def _numpy(maps: Tensor) -> np.ndarray:
    return maps.detach().to(device="cpu", dtype=torch.float64).numpy()


def _check_percentile(percentile: float | None) -> None:
    if percentile is not None and not 0.0 < percentile <= 100.0:
        raise ConfigError(f"percentile must be in (0, 100] or None (the 2-D rule); "
                          f"got {percentile}")


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of row i of ``a`` with row i of ``b``; NaN for a constant row."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError("need two (rows, values) arrays of one shape; got "
                         f"{a.shape} and {b.shape}")
    da = a - a.mean(axis=1, keepdims=True)
    db = b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.einsum("ij,ij->i", da, db) / np.sqrt(np.einsum("ij,ij->i", da, da)
                                                    * np.einsum("ij,ij->i", db, db))
    # Exact test, as scipy's: a near-constant row of a float mean need not centre to exact zeros.
    r[(np.ptp(a, axis=1) == 0) | (np.ptp(b, axis=1) == 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman: Pearson of average ranks (ties as ``scipy.stats.spearmanr``)."""
    return pearson_rows(rankdata(a, axis=1), rankdata(b, axis=1))


def spearman_abs(reference: Tensor, other: Tensor, percentile: float | None = 99.0) -> np.ndarray:
    """Spearman of the absolute-value maps (authors' code, ``abs_grayscale_norm``).

    Both maps go through ``postprocess.grayscale``: Σ_c |E| clipped at its 99th percentile, so
    the top ~1 % of pixels tie at 1.0 by design. ``percentile=None`` is the authors' rule for
    2-D (MNIST) maps, |E| / max|E|.
    """
    _check_pair(reference, other)
    _check_percentile(percentile)
    a = _numpy(postprocess.grayscale(reference, percentile)).reshape(len(reference), -1)
    b = _numpy(postprocess.grayscale(other, percentile)).reshape(len(other), -1)
    return _nan_where_not_finite(spearman_rows(a, b), reference, other)


def spearman_diverging(reference: Tensor, other: Tensor,
                       percentile: float | None = 99.0) -> np.ndarray:
    """Spearman of the signed maps (authors' code, ``diverging_norm``; the paper's "no ABS").

    Both maps go through ``postprocess.diverging`` (Σ_c E over a 99th-percentile span);
    ``percentile=None`` is the 2-D (MNIST) rule E / max|E|.
    """
    _check_pair(reference, other)
    _check_percentile(percentile)
    a = _numpy(postprocess.diverging(reference, percentile)).reshape(len(reference), -1)
    b = _numpy(postprocess.diverging(other, percentile)).reshape(len(other), -1)
    return _nan_where_not_finite(spearman_rows(a, b), reference, other)


def _rescaled(maps: Tensor, rescale_to: tuple[float, float]) -> np.ndarray:
    low, high = rescale_to
    if not high > low:
        raise ConfigError(f"rescale_to must be (low, high) with high > low; got {rescale_to}")
    return low + (high - low) * _numpy(postprocess.minmax(maps))


def ssim(reference: Tensor, other: Tensor, data_range: float = 2.0, gaussian_weights: bool = True,
         win_size: int | None = None,
         rescale_to: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Mean SSIM over channels of the min–max scaled signed maps, image by image.

    Authors' code (the default): each raw map min–max scaled to [0, 1] over all its channels
    (no absolute value), ``structural_similarity(gaussian_weights=True)`` with skimage 0.15's
    implicit ``data_range`` 2 (the float dtype range), σ = 1.5, sample covariance.
    ``data_range=1.0`` is the range the [0, 1] maps actually span. Paper text:
    ``gaussian_weights=False, win_size=5`` (see ``CONVENTIONS``). NaN where either map is
    constant (the authors' min–max divides 0 by 0 there).
    """
    _check_pair(reference, other)
    a, b = _rescaled(reference, rescale_to), _rescaled(other, rescale_to)
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    constant = (np.ptp(flat_a, axis=1) == 0) | (np.ptp(flat_b, axis=1) == 0)
    multichannel = a.shape[1] > 1
    values = _nan_where_not_finite(np.zeros(len(a)), reference, other)
    values[constant] = np.nan
    for i in np.flatnonzero(~np.isnan(values)):
        values[i] = structural_similarity(
            a[i] if multichannel else a[i, 0], b[i] if multichannel else b[i, 0],
            channel_axis=0 if multichannel else None, data_range=data_range,
            gaussian_weights=gaussian_weights, win_size=win_size, sigma=SSIM_SIGMA,
            use_sample_covariance=SSIM_SAMPLE_COVARIANCE)
    return values


def hog_features(maps: np.ndarray, pixels_per_cell: int | tuple[int, int] = 16) -> np.ndarray:
    """HOG vectors (B, F) of scaled maps (B, C, H, W): the authors' settings (module constants)."""
    cell = ((pixels_per_cell, pixels_per_cell) if isinstance(pixels_per_cell, int)
            else tuple(pixels_per_cell))
    height, width = maps.shape[-2:]
    if height // cell[0] < HOG_CELLS_PER_BLOCK[0] or width // cell[1] < HOG_CELLS_PER_BLOCK[1]:
        raise ValueError(
            f"HOG needs at least {HOG_CELLS_PER_BLOCK[0]}×{HOG_CELLS_PER_BLOCK[1]} cells of "
            f"{cell[0]}×{cell[1]} pixels; maps of {height}×{width} are too small (the paper uses "
            "HOG on ImageNet maps only; pass a smaller pixels_per_cell for small maps)")
    multichannel = maps.shape[1] > 1
    return np.stack([
        hog(m if multichannel else m[0], orientations=HOG_ORIENTATIONS, pixels_per_cell=cell,
            cells_per_block=HOG_CELLS_PER_BLOCK, block_norm=HOG_BLOCK_NORM, feature_vector=True,
            channel_axis=0 if multichannel else None)
        for m in maps])


def hog_similarity(reference: Tensor, other: Tensor, correlation: Correlation = "spearman",
                   pixels_per_cell: int | tuple[int, int] = 16,
                   rescale_to: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Correlation of the HOG vectors of the min–max scaled signed maps.

    HOG: 16×16-pixel cells, 9 orientations, 3×3-cell blocks, L2-Hys, the per-pixel strongest
    channel for multichannel maps. ``correlation="spearman"`` is the authors' code,
    ``"pearson"`` the paper text; ``rescale_to=(-1, 1)`` is the paper text's input range.
    """
    _check_pair(reference, other)
    if correlation not in ("spearman", "pearson"):
        raise ConfigError(f"unknown HOG correlation {correlation!r}; choose 'spearman' (authors' "
                          "code) or 'pearson' (paper text)")
    a = hog_features(_rescaled(reference, rescale_to), pixels_per_cell)
    b = hog_features(_rescaled(other, rescale_to), pixels_per_cell)
    values = spearman_rows(a, b) if correlation == "spearman" else pearson_rows(a, b)
    return _nan_where_not_finite(values, reference, other)


SIMILARITY_METRICS: dict[str, Callable[..., np.ndarray]] = {
    "spearman_abs": spearman_abs,
    "spearman_diverging": spearman_diverging,
    "ssim": ssim,
    "hog": hog_similarity,
}


def _options_of(name: str) -> set[str]:
    return set(inspect.signature(SIMILARITY_METRICS[name]).parameters) - {"reference", "other"}


def compare(reference: Tensor, other: Tensor, metrics: Iterable[str] | str,
            **options: object) -> dict[str, np.ndarray]:
    """Each named metric, image by image.

    Each option goes to the requested metrics that take it; one that no metric of the registry
    takes (a typo) is an error, so a whole convention (``CONVENTIONS``) fits any subset of metrics.
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [name for name in names if name not in SIMILARITY_METRICS]
    if unknown:
        raise ConfigError(f"unknown similarity metric(s) {unknown}; choose from "
                          f"{sorted(SIMILARITY_METRICS)}")
    if not names:
        raise ConfigError("no similarity metric requested; choose from "
                          f"{sorted(SIMILARITY_METRICS)}")
    _check_pair(reference, other)
    taken = {name: _options_of(name) for name in SIMILARITY_METRICS}
    valid = set().union(*taken.values())
    if set(options) - valid:
        raise ConfigError(f"unknown similarity option(s) {sorted(set(options) - valid)}; the "
                          f"metrics take {sorted(valid)}")
    return {name: SIMILARITY_METRICS[name](
                reference, other, **{k: v for k, v in options.items() if k in taken[name]})
            for name in names}


@dataclass(frozen=True)
class Summary:
    """Mean and population SD (ddof = 0, the authors' ``np.std``) over the non-NaN images."""

    mean: float
    sd: float
    n: int
    n_nan: int


def summarize(values: np.ndarray | Sequence[float]) -> Summary:
    """Mean ± population SD over images, NaNs dropped and counted (all NaN: mean = sd = NaN)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    kept = values[~np.isnan(values)]
    if kept.size == 0:
        return Summary(float("nan"), float("nan"), 0, int(values.size))
    return Summary(float(kept.mean()), float(kept.std(ddof=0)), int(kept.size),
                   int(values.size - kept.size))


# The paper's tuple order: (rank corr no-ABS, rank corr ABS, HOG, SSIM).
CALIBRATION_METRICS = ("spearman_diverging", "spearman_abs", "hog", "ssim")


def _rng(seed: int, label: str) -> np.random.Generator:
    # One stream per comparison, so a comparison's masks do not depend on the other keys.
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def null_calibration(maps: Mapping[str, Tensor], seed: int,
                     metrics: Sequence[str] = CALIBRATION_METRICS,
                     noise_shape: tuple[int, int, int, int] | None = None,
                     **options: object) -> pd.DataFrame:
    """The App. B null calibration, computed: similarity of maps with random masks.

    Each real map (N, C, H, W) against a standard Gaussian mask of its shape; two Uniform[−1, 1]
    masks against each other; two Gaussian masks, each min–max rescaled to [−1, 1], against each
    other. The mask pairs have ``noise_shape`` (default: the real maps' common shape). ``options``
    go to ``compare`` (e.g. ``percentile=None`` for MNIST, ``**CONVENTIONS["paper_text"]``).
    Returns one row per (comparison, metric): comparison, reference, other, metric, mean, sd
    (population), n (non-NaN images), n_nan; ``null_calibration_values`` gives the values per
    image (or mask pair) they summarize.
    """
    return calibration_summary(null_calibration_values(maps, seed, metrics, noise_shape,
                                                       **options))


def calibration_summary(values: pd.DataFrame) -> pd.DataFrame:
    """``null_calibration_values`` summarized per (comparison, metric), in their order."""
    rows = []
    for (comparison, reference, other, metric), group in values.groupby(
            ["comparison", "reference", "other", "metric"], sort=False):
        s = summarize(group["value"].to_numpy())
        rows.append({"comparison": comparison, "reference": reference, "other": other,
                     "metric": metric, "mean": s.mean, "sd": s.sd, "n": s.n, "n_nan": s.n_nan})
    return pd.DataFrame(rows, columns=["comparison", "reference", "other", "metric", "mean", "sd",
                                       "n", "n_nan"])


def null_calibration_values(maps: Mapping[str, Tensor], seed: int,
                            metrics: Sequence[str] = CALIBRATION_METRICS,
                            noise_shape: tuple[int, int, int, int] | None = None,
                            **options: object) -> pd.DataFrame:
    """The values ``null_calibration`` summarizes: one row per (comparison, metric, image),
    columns comparison, reference, other, metric, image (the index of the real map's image, or
    of the mask pair), value."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer; got {seed!r}")
    if noise_shape is None:
        shapes = {tuple(m.shape) for m in maps.values()}
        if len(shapes) != 1:
            raise ValueError("the maps' shapes differ (or there are none): "
                             f"{sorted(shapes)}; pass noise_shape for the mask-vs-mask pairs")
        noise_shape = shapes.pop()
    shape = tuple(int(s) for s in noise_shape)
    if len(shape) != 4:
        raise ValueError(f"noise_shape must be (batch, channels, height, width); got {shape}")

    pairs: list[tuple[str, str, Tensor, Tensor]] = []
    for name, real in maps.items():
        mask = _rng(seed, f"{name} vs gaussian").standard_normal(tuple(real.shape))
        pairs.append((name, "gaussian", real, torch.from_numpy(mask)))
    uniform = _rng(seed, "uniform vs uniform").uniform(-1.0, 1.0, (2, *shape))
    pairs.append(("uniform", "uniform", torch.from_numpy(uniform[0]), torch.from_numpy(uniform[1])))
    gaussian = torch.from_numpy(
        _rng(seed, "gaussian_rescaled vs gaussian_rescaled").standard_normal((2, *shape)))
    rescaled = [2.0 * postprocess.minmax(g) - 1.0 for g in gaussian]
    pairs.append(("gaussian_rescaled", "gaussian_rescaled", rescaled[0], rescaled[1]))

    rows = []
    for reference, other, a, b in pairs:
        for metric, values in compare(a, b, metrics, **options).items():
            rows += [{"comparison": f"{reference} vs {other}", "reference": reference,
                      "other": other, "metric": metric, "image": image, "value": float(value)}
                     for image, value in enumerate(np.asarray(values, dtype=np.float64))]
    return pd.DataFrame(rows, columns=["comparison", "reference", "other", "metric", "image",
                                       "value"])
