"""Post-processing against independent NumPy versions of PAIR's visualisations (notes §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replication.attribution import postprocess
from replication.errors import ConfigError
from tolerance import FLOAT32, assert_close


def pair_grayscale(image: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Notes §3, ABS, (H, W, C): Σ_c |E|; vmax = percentile, vmin = min; clip to [0, 1]."""
    summed = np.abs(image).sum(axis=2)
    vmax, vmin = np.percentile(summed, percentile), summed.min()
    return np.clip((summed - vmin) / (vmax - vmin), 0.0, 1.0)


def pair_diverging(image: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Notes §3, diverging, (H, W, C): Σ_c E; span = |percentile|; clip (m + span)/(2 span)."""
    summed = image.sum(axis=2)
    span = abs(np.percentile(summed, percentile))
    return np.clip((summed + span) / (2.0 * span), -1.0, 1.0)


def heavy_tailed(shape: tuple[int, ...], seed: int = 0, dtype=np.float64) -> np.ndarray:
    """Gradient-like maps: mostly small values, a few large ones, both signs."""
    return (np.random.default_rng(seed).standard_normal(shape) ** 3).astype(dtype)


def hwc(maps: np.ndarray, i: int) -> np.ndarray:
    return np.moveaxis(maps[i], 0, -1)


@pytest.mark.parametrize("percentile", [99.0, 95.0])
def test_grayscale_and_diverging_equal_pair_formulas_in_float64(percentile):
    maps = heavy_tailed((4, 3, 33, 29))
    gray = postprocess.grayscale(torch.from_numpy(maps), percentile).numpy()
    div = postprocess.diverging(torch.from_numpy(maps), percentile).numpy()
    assert gray.shape == div.shape == (4, 1, 33, 29)
    for i in range(4):
        # Exact up to rounding: a float64 map keeps a float64 percentile, so the same pixels tie.
        # Σ over 3 channels, the percentile's interpolation and the scaling: a few operations.
        expected_gray = pair_grayscale(hwc(maps, i), percentile)
        assert_close(gray[i, 0], expected_gray, ops=3 + 4 + 3, scale=1.0)
        assert_close(div[i, 0], pair_diverging(hwc(maps, i), percentile), ops=3 + 4 + 3, scale=1.0)
        assert np.array_equal(gray[i, 0] == 1.0, expected_gray == 1.0)


def test_float32_maps_match_within_float32_rounding():
    maps = heavy_tailed((2, 3, 40, 40), seed=1, dtype=np.float32)
    gray = postprocess.grayscale(torch.from_numpy(maps)).numpy()
    assert gray.dtype == np.float32
    for i in range(2):
        expected = pair_grayscale(hwc(maps, i).astype(np.float64))
        # As above, with the percentile interpolated and the map scaled in float32.
        assert_close(gray[i, 0], expected, ops=3 + 4 + 3, dtype=FLOAT32, scale=1.0)


def test_grayscale_ties_the_top_percent_at_one():
    maps = torch.from_numpy(heavy_tailed((1, 3, 100, 100), seed=2))
    at_one = (postprocess.grayscale(maps) == 1.0).float().mean().item()
    assert 0.009 <= at_one <= 0.011


def test_two_d_rule_divides_by_max_abs():
    maps = heavy_tailed((3, 1, 28, 28), seed=3)
    gray = postprocess.grayscale(torch.from_numpy(maps), percentile=None).numpy()
    div = postprocess.diverging(torch.from_numpy(maps), percentile=None).numpy()
    peak = np.abs(maps).reshape(3, -1).max(axis=1)[:, None, None, None]
    assert_close(gray, np.abs(maps) / peak, ops=1, scale=1.0)  # one division each
    assert_close(div, maps / peak, ops=1, scale=1.0)


def test_minmax_scales_each_image_over_all_channels():
    raw = heavy_tailed((3, 3, 8, 8), seed=4)
    raw[:, 0] *= 0.01  # a weak channel: a per-channel min–max would stretch it to [0, 1]
    raw[2] = 5.0  # a constant map
    out = postprocess.minmax(torch.from_numpy(raw)).numpy()
    for i in range(2):
        assert_close(out[i], (raw[i] - raw[i].min()) / (raw[i].max() - raw[i].min()), ops=3,
                     scale=1.0)
        assert out[i].min() == 0.0 and out[i].max() == 1.0 and out[i, 0].max() < 0.9
    assert np.array_equal(out[2], np.zeros_like(out[2]))


def test_bilinear_upsampling_equals_opencv_inter_linear():
    cv2 = pytest.importorskip("cv2")
    small = np.random.default_rng(5).random((7, 5))
    # OpenCV's dsize is (width, height).
    expected = cv2.resize(small, (17, 23), interpolation=cv2.INTER_LINEAR)
    got = postprocess.upsample(torch.from_numpy(small)[None, None], (23, 17))[0, 0].numpy()
    assert_close(got, expected, ops=4 + 2)  # 4 taps and their weights, in float64
    square = postprocess.upsample(torch.from_numpy(small[:5, :5])[None, None], 20)
    assert square.shape == (1, 1, 20, 20)


def test_upsample_to_the_same_size_is_a_no_op():
    maps = torch.randn(1, 1, 6, 6)
    assert postprocess.upsample(maps, 6) is maps


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"height, width\); got shape \(3, 8, 8\)"):
        postprocess.grayscale(torch.zeros(3, 8, 8))
    with pytest.raises(ConfigError, match="unknown channel reduction 'median'.*abs_sum"):
        postprocess.reduce_channels(torch.zeros(1, 3, 2, 2), "median")  # type: ignore[arg-type]
