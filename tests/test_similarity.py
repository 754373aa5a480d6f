"""Sanity Checks similarity metrics (notes §5) against scipy / skimage calls; the App. B null."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, rankdata, spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

from replication.attribution import postprocess
from replication.errors import ConfigError
from replication.metrics import similarity as sim
from tolerance import FLOAT64, assert_differs, assert_within, atol


def correlation_rounding(n: int) -> float:
    """How far two float64 correlations of n values may differ, computed in other orders: the
    means, the centred products and the two norms are sums of n terms each (Σ|da·db| ≤
    √(Σda²·Σdb²), so the scale is 1), for each of the two implementations."""
    return atol(1.0, ops=2 * (3 * n + 4), dtype=FLOAT64)


def maps_pair(shape: tuple[int, int, int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Heavy-tailed gradient-like maps and a noisy copy: correlated, but far from identical."""
    g = torch.Generator().manual_seed(seed)
    reference = torch.randn(shape, generator=g, dtype=torch.float64) ** 3
    return reference, reference + 2.0 * torch.randn(shape, generator=g, dtype=torch.float64)


def unit_hwc(maps: torch.Tensor, i: int) -> np.ndarray:
    """Image i min–max scaled to [0, 1] over all channels, (H, W, C), computed here in NumPy."""
    m = np.moveaxis(maps[i].numpy(), 0, -1)
    return (m - m.min()) / (m.max() - m.min())


def smooth_maps(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Map-like structure: a coarse random field modulating pixel noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.randn(n, channels, size // 8, size // 8, generator=g), size=size,
                           mode="bilinear")
    return coarse * torch.randn(n, channels, size, size, generator=g)


# --- row-wise correlations --------------------------------------------------------------------

def test_row_correlations_equal_scipy_with_ties_and_nan_for_constant_rows():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, (5, 200)).astype(float)  # heavy ties
    b = a + rng.integers(0, 3, (5, 200))
    a[4] = 1.0  # constant row
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the vectorised path warns about nothing
        rho, r = sim.spearman_rows(a, b), sim.pearson_rows(a, b)
    for i in range(4):
        assert rho[i] == pytest.approx(spearmanr(a[i], b[i]).statistic, abs=correlation_rounding(200))
        assert r[i] == pytest.approx(pearsonr(a[i], b[i]).statistic, abs=correlation_rounding(200))
    assert np.isnan(rho[4]) and np.isnan(r[4])
    b[0, 3] = np.nan
    assert np.isnan(sim.spearman_rows(a, b)[0]) and not np.isnan(sim.spearman_rows(a, b)[1])


# --- Spearman of visualised maps --------------------------------------------------------------

@pytest.mark.parametrize("shape,percentile", [((3, 3, 40, 40), 99.0), ((3, 1, 28, 28), None)])
def test_spearman_metrics_equal_scipy_image_by_image(shape, percentile):
    reference, other = maps_pair(shape)
    got_abs = sim.spearman_abs(reference, other, percentile)
    got_div = sim.spearman_diverging(reference, other, percentile)
    assert got_abs.shape == got_div.shape == (3,) and got_abs.dtype == np.float64
    gray = [postprocess.grayscale(m, percentile).flatten(1).numpy() for m in (reference, other)]
    div = [postprocess.diverging(m, percentile).flatten(1).numpy() for m in (reference, other)]
    rounding = correlation_rounding(gray[0].shape[1])
    for i in range(3):
        assert got_abs[i] == pytest.approx(spearmanr(gray[0][i], gray[1][i]).statistic, abs=rounding)
        assert got_div[i] == pytest.approx(spearmanr(div[0][i], div[1][i]).statistic, abs=rounding)
    for got in (got_abs, got_div):
        assert 0.1 < got.min() and got.max() < 0.99


def test_large_ties_get_average_ranks_as_in_scipy():
    reference, other = maps_pair((2, 1, 28, 28), seed=1)
    reference[reference.abs() < 1.0] = 0.0  # most pixels exactly zero, as an MNIST background
    other[other.abs() < 1.0] = 0.0
    got = sim.spearman_abs(reference, other, percentile=None)
    for i in range(2):
        a, b = (np.abs(m[i, 0].numpy()).ravel() for m in (reference, other))
        assert (a == 0).mean() > 0.5
        assert got[i] == pytest.approx(spearmanr(a / a.max(), b / b.max()).statistic,
                                       abs=correlation_rounding(a.size))
        ordinal = pearsonr(rankdata(a, method="ordinal"), rankdata(b, method="ordinal")).statistic
        assert abs(got[i] - ordinal) > 0.02  # tie handling matters here


def test_identical_maps_give_one_and_negation_separates_abs_from_diverging():
    reference, _ = maps_pair((2, 3, 32, 32), seed=2)
    rounding = correlation_rounding(32 * 32)
    for fn in (sim.spearman_abs, sim.spearman_diverging):
        assert_within(fn(reference, reference.clone()), 1.0, rounding)
    assert_within(sim.spearman_abs(reference, -reference), 1.0, rounding)
    assert_within(sim.spearman_diverging(reference, -reference, percentile=None), -1.0, rounding)
    # The 99th-percentile span of −E is |p1(E)|, not |p99(E)|: the clipped tails tie differently,
    # so −1 holds only up to those few tied pixels.
    assert np.all(sim.spearman_diverging(reference, -reference) < -0.98)


def test_constant_map_gives_nan_for_every_metric():
    reference, other = maps_pair((2, 3, 48, 48), seed=3)
    reference[1] = 0.0  # an all-zero map, e.g. a dead Grad-CAM
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = sim.compare(reference, other, list(sim.SIMILARITY_METRICS))
    for name, v in values.items():
        assert not np.isnan(v[0]) and np.isnan(v[1]), name


def test_a_non_finite_map_gives_nan_for_every_metric():
    # Before: an inf ranked as the largest value and gave a plausible Spearman correlation.
    reference, other = maps_pair((4, 3, 48, 48), seed=3)
    broken = reference.clone()
    broken[0] = float("nan")
    broken[1, 0, 7, 3] = float("nan")
    broken[2, 2, 0, 0] = float("inf")
    intact = sim.compare(reference, other, list(sim.SIMILARITY_METRICS))
    for first, second in ((broken, other), (other, broken)):
        values = sim.compare(first, second, list(sim.SIMILARITY_METRICS))
        for name, v in values.items():
            assert np.isnan(v[:3]).all(), (name, v)
            # Exact: image 3 goes through the same per-image arithmetic as before.
            assert v[3] == sim.SIMILARITY_METRICS[name](first[3:], second[3:])[0], name
    assert all(np.isfinite(v).all() for v in intact.values())


# --- SSIM -------------------------------------------------------------------------------------

# SSIM: skimage on both sides, on inputs equal up to the min–max's rounding; per value a few
# Gaussian-filtered moments (an 11×11 window) and their ratio.
SSIM_ROUNDING = atol(1.0, ops=5 * 11 * 11 + 3, dtype=FLOAT64)


def test_ssim_equals_a_direct_skimage_call():
    reference, other = maps_pair((2, 3, 40, 40), seed=4)
    got = sim.ssim(reference, other)
    for i in range(2):
        expected = structural_similarity(unit_hwc(reference, i), unit_hwc(other, i),
                                         channel_axis=-1, gaussian_weights=True, data_range=2.0)
        assert got[i] == pytest.approx(expected, abs=SSIM_ROUNDING)
    paper_text = sim.ssim(reference, other, gaussian_weights=False, win_size=5,
                          rescale_to=(-1.0, 1.0))
    expected = structural_similarity(2 * unit_hwc(reference, 0) - 1, 2 * unit_hwc(other, 0) - 1,
                                     channel_axis=-1, win_size=5, data_range=2.0)
    assert paper_text[0] == pytest.approx(expected, abs=SSIM_ROUNDING)


def test_ssim_single_channel_identity_and_data_range():
    reference, other = maps_pair((2, 1, 28, 28), seed=5)
    expected = structural_similarity(unit_hwc(reference, 0)[..., 0], unit_hwc(other, 0)[..., 0],
                                     gaussian_weights=True, data_range=2.0)
    assert sim.ssim(reference, other)[0] == pytest.approx(expected, abs=SSIM_ROUNDING)
    assert_within(sim.ssim(reference, reference.clone()), 1.0, SSIM_ROUNDING)
    wide = sim.ssim(reference, other, data_range=2.0)
    tight = sim.ssim(reference, other, data_range=1.0)
    assert np.all(np.abs(wide - tight) > 1e-3)


# --- HOG --------------------------------------------------------------------------------------

def test_hog_similarity_equals_direct_skimage_hog_and_correlations():
    reference, other = maps_pair((2, 3, 64, 64), seed=6)
    rho = sim.hog_similarity(reference, other, correlation="spearman")
    r = sim.hog_similarity(reference, other, correlation="pearson")
    for i in range(2):
        ha, hb = (hog(unit_hwc(m, i), orientations=9, pixels_per_cell=(16, 16),
                      cells_per_block=(3, 3), block_norm="L2-Hys", channel_axis=-1)
                  for m in (reference, other))
        assert ha.size == 2 * 2 * 3 * 3 * 9
        assert rho[i] == pytest.approx(spearmanr(ha, hb).statistic, abs=correlation_rounding(ha.size))
        assert r[i] == pytest.approx(pearsonr(ha, hb).statistic, abs=correlation_rounding(ha.size))
    assert np.all(np.abs(rho - r) > 1e-4)
    same = reference.clone()
    for correlation in ("spearman", "pearson"):
        identical = sim.hog_similarity(reference, same, correlation=correlation)
        assert_within(identical, 1.0, correlation_rounding(2 * 2 * 3 * 3 * 9))


def test_hog_single_channel_and_too_small_maps():
    reference, other = maps_pair((1, 1, 48, 48), seed=7)
    ha, hb = (hog(unit_hwc(m, 0)[..., 0], pixels_per_cell=(16, 16)) for m in (reference, other))
    expected = spearmanr(ha, hb).statistic
    assert sim.hog_similarity(reference, other)[0] == pytest.approx(expected,
                                                                   abs=correlation_rounding(ha.size))
    mnist = torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match="3×3 cells of 16×16 pixels; maps of 28×28 are too"):
        sim.hog_similarity(mnist, mnist)
    assert sim.hog_similarity(mnist, mnist, pixels_per_cell=4).shape == (2,)
    with pytest.raises(ConfigError, match="'kendall'.*'spearman'.*'pearson'"):
        sim.hog_similarity(mnist, mnist, correlation="kendall")  # type: ignore[arg-type]


# --- registry, compare, summarize -------------------------------------------------------------

def test_compare_routes_options_to_the_metrics_that_take_them():
    reference, other = maps_pair((2, 3, 48, 48), seed=8)
    got = sim.compare(reference, other, ["spearman_abs", "hog"], percentile=None,
                      correlation="pearson")
    assert set(got) == {"spearman_abs", "hog"}
    # Exact: compare calls the same functions with the same options.
    np.testing.assert_array_equal(got["spearman_abs"], sim.spearman_abs(reference, other, None))
    np.testing.assert_array_equal(got["hog"],
                                  sim.hog_similarity(reference, other, correlation="pearson"))
    # A whole convention fits any subset: 'correlation' is simply not used by SSIM.
    only_ssim = sim.compare(reference, other, "ssim", **sim.CONVENTIONS["paper_text"])
    expected = sim.ssim(reference, other, gaussian_weights=False, win_size=5,
                        rescale_to=(-1.0, 1.0))
    np.testing.assert_array_equal(only_ssim["ssim"], expected)


def test_compare_errors():
    reference, other = maps_pair((2, 3, 48, 48))
    valid = r"\['hog', 'spearman_abs', 'spearman_diverging', 'ssim'\]"
    with pytest.raises(ConfigError, match=r"metric\(s\) \['pearson'\]; choose from " + valid):
        sim.compare(reference, other, ["ssim", "pearson"])
    with pytest.raises(ConfigError, match="no similarity metric requested; choose from " + valid):
        sim.compare(reference, other, [])
    with pytest.raises(ValueError, match=r"\(2, 3, 48, 48\) and \(2, 1, 48, 48\)"):
        sim.compare(reference, other[:, :1], ["ssim"])
    with pytest.raises(ConfigError, match=r"unknown similarity option\(s\) \['percentil'\]"):
        sim.compare(reference, other, ["spearman_abs"], percentil=99)
    with pytest.raises(ConfigError, match="percentile must be in"):
        sim.spearman_abs(reference, other, percentile=-1.0)


def test_summarize_is_mean_and_population_sd_without_nans():
    values = np.array([0.2, np.nan, 0.4, 0.9, np.nan])
    s = sim.summarize(values)
    assert s.mean == pytest.approx(0.5) and s.sd == pytest.approx(np.std([0.2, 0.4, 0.9]))
    assert s.sd != pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert (s.n, s.n_nan) == (3, 2)
    empty = sim.summarize([np.nan, np.nan])
    assert np.isnan(empty.mean) and np.isnan(empty.sd) and (empty.n, empty.n_nan) == (0, 2)


# --- App. B null calibration ------------------------------------------------------------------

@pytest.fixture(scope="module")
def imagenet_like_calibration() -> pd.DataFrame:
    return sim.null_calibration({"gradient": smooth_maps(6, 3, 128, seed=0)}, seed=0)


def test_calibration_is_tidy_and_computed(imagenet_like_calibration):
    df = imagenet_like_calibration
    assert list(df.columns) == ["comparison", "reference", "other", "metric", "mean", "sd", "n",
                                "n_nan"]
    assert set(df.comparison) == {"gradient vs gaussian", "uniform vs uniform",
                                  "gaussian_rescaled vs gaussian_rescaled"}
    assert len(df) == 3 * 4 and (df.n == 6).all() and (df.n_nan == 0).all() and (df.sd > 0).all()


def test_calibration_null_is_near_zero_except_hog_of_uniform_masks(imagenet_like_calibration):
    mean = imagenet_like_calibration.set_index(["comparison", "metric"])["mean"]
    for comparison in ("gradient vs gaussian", "uniform vs uniform",
                       "gaussian_rescaled vs gaussian_rescaled"):
        for metric in ("spearman_diverging", "spearman_abs"):
            assert abs(mean[comparison, metric]) < 0.02, (comparison, metric)
    hog_uniform = mean["uniform vs uniform", "hog"]
    assert hog_uniform > 0.2
    for comparison in ("gradient vs gaussian", "gaussian_rescaled vs gaussian_rescaled"):
        # At 128 px the first row and column of cells (zero gradient at the border) leave a small
        # positive floor; it shrinks with the image size.
        assert abs(mean[comparison, "hog"]) < 0.15 and mean[comparison, "hog"] < hog_uniform - 0.15
    # With the authors' [0, 1] maps and data_range 2, SSIM of noise is not ≈ 0: the contrast
    # term's constant dominates. The paper-text convention ([−1, 1], window 5) gives ≈ 0.
    assert mean["gaussian_rescaled vs gaussian_rescaled", "ssim"] > 0.05


def test_calibration_ssim_near_zero_under_the_paper_text_convention():
    df = sim.null_calibration({"gradient": smooth_maps(4, 3, 64, seed=1)}, seed=0, metrics=["ssim"],
                              **sim.CONVENTIONS["paper_text"])
    assert (df.metric == "ssim").all() and len(df) == 3
    assert df["mean"].abs().max() < 0.02


def test_mnist_calibration_is_near_zero_and_deterministic():
    maps = {"gradient": smooth_maps(8, 1, 28, seed=2),
            "integrated_gradients": smooth_maps(8, 1, 28, seed=3)}
    metrics = ["spearman_diverging", "spearman_abs"]  # HOG needs larger maps; SSIM as for ImageNet
    first = sim.null_calibration(maps, seed=7, metrics=metrics, percentile=None)
    again = sim.null_calibration(maps, seed=7, metrics=metrics, percentile=None)
    pd.testing.assert_frame_equal(first, again, check_exact=True)  # the same call: the same bits
    assert len(first) == 4 * 2 and first["mean"].abs().max() < 0.06
    other_seed = sim.null_calibration(maps, seed=8, metrics=metrics, percentile=None)
    assert_differs(first["mean"], other_seed["mean"], correlation_rounding(28 * 28))
    # One stream per comparison: dropping a map leaves the other comparisons' masks unchanged,
    # and each comparison is computed on its own, so exactly.
    alone = sim.null_calibration({"gradient": maps["gradient"]}, seed=7, metrics=metrics,
                                 percentile=None).set_index(["comparison", "metric"])
    pd.testing.assert_frame_equal(alone, first.set_index(["comparison", "metric"]).loc[alone.index],
                                  check_exact=True)


def test_calibration_needs_one_noise_shape():
    maps = {"gradient": torch.randn(2, 3, 32, 32), "grad_cam": torch.randn(2, 1, 32, 32)}
    with pytest.raises(ValueError, match="pass noise_shape"):
        sim.null_calibration(maps, seed=0, metrics=["spearman_abs"])
    df = sim.null_calibration(maps, seed=0, metrics=["spearman_abs"], noise_shape=(3, 1, 32, 32))
    assert df.set_index("comparison").loc["uniform vs uniform", "n"] == 3
    with pytest.raises(ConfigError, match="non-negative integer"):
        sim.null_calibration(maps, seed=-1, metrics=["spearman_abs"], noise_shape=(3, 1, 32, 32))


def test_calibration_values_are_the_per_image_rows_the_summary_averages():
    maps = {"gradient": smooth_maps(5, 1, 28, seed=4)}
    metrics = ["spearman_abs"]
    values = sim.null_calibration_values(maps, seed=3, metrics=metrics, percentile=None)
    assert list(values.columns) == ["comparison", "reference", "other", "metric", "image", "value"]
    assert len(values) == 3 * 5 and values.groupby("comparison")["image"].nunique().eq(5).all()
    summary = sim.null_calibration(maps, seed=3, metrics=metrics, percentile=None)
    pd.testing.assert_frame_equal(sim.calibration_summary(values), summary, check_exact=True)
    means = values.groupby("comparison", sort=False)["value"].mean().to_numpy()
    np.testing.assert_allclose(summary["mean"].to_numpy(), means, rtol=0, atol=atol(1.0, ops=5))
