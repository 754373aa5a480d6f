"""The Sanity Checks toy studies: the one-layer conv net of Fig. 7 / claim C18 (locality, edge
likeness; ``one_layer_net``) and the input ⊙ random-gradient table of Fig. 19 (``toys``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from replication.errors import ConfigError
from replication.experiments.sanity_checks import one_layer_net, toys
from tolerance import FLOAT32, FLOAT64, assert_close, assert_differs, atol

JUNCO = "n01534433_junco.JPEG"  # the paper's bird is a junco (notes §2.2)
CORN = "n12144580_corn.JPEG"  # the appendix figures show a corn image too


def _sample_image(mirror, name: str) -> np.ndarray:
    from replication.data import imagenet

    return one_layer_net.load_image(mirror / imagenet.SAMPLE_MIRROR_FOLDER / name, size=128)


@pytest.fixture(scope="module")
def junco(mirror) -> np.ndarray:
    return _sample_image(mirror, JUNCO)


@pytest.fixture(scope="module")
def corn(mirror) -> np.ndarray:
    return _sample_image(mirror, CORN)


@pytest.fixture(scope="module")
def digits(mirror, tmp_path_factory) -> torch.Tensor:
    from replication.data import mnist

    folder = tmp_path_factory.mktemp("mnist")
    mnist.prepare("mnist", folder, mirror=mirror)
    images, _ = mnist.load(folder, "test")
    return torch.from_numpy(images[:4].astype(np.float32) / 255).unsqueeze(1)


def test_gradient_at_a_pixel_depends_on_its_5x5_neighbourhood_only(junco):
    table = one_layer_net.locality_check(junco[:48, :48], n_positions=10, version="rgb")
    outside = table[table.region == "outside_5x5"]
    ring = table[table.region == "ring_5x5"]
    # Exact: in float64 each conv output is a dot product over its own 3×3 window, so pixels
    # farther than 2 from q enter none of the sums behind the gradient at q.
    assert len(outside) == 12 and (outside.max_abs_change == 0.0).all()
    assert (ring.max_abs_change > 0).any()  # the 5×5 is needed, not just the 3×3
    # gradient = f(ReLU pattern): autograd and the transposed conv sum the same 3×3 taps per
    # channel in float64, at the scale of a channel's Σ|w|.
    weight = one_layer_net.OneLayerConv(3, 0, dtype=torch.float64).conv.weight
    assert table.pattern_max_abs_diff.max() <= atol(weight.abs().sum((0, 2, 3)), ops=9,
                                                     dtype=FLOAT64)


def test_gradient_maps_correlate_with_edges_more_than_a_random_map(corn):
    # Over 20 random filters: the edge likeness depends on the filter (its Σw decides whether
    # flat regions are active), so the claim is tested on the average, not on one filter.
    study = one_layer_net.one_layer_edge_study(corn, filter_seeds=range(20),
                                      methods=["gradient", "guided_backprop"],
                                      versions=["grayscale"])
    summary = one_layer_net.summarize_edge_study(study.table).set_index("method")
    assert abs(summary.loc["random", "mean"]) < 0.01 and summary.loc["random", "sd"] < 0.02
    assert summary.loc["gradient", "mean"] > 0.05
    assert summary.loc["gradient", "share_above_random"] >= 0.7
    assert summary.loc["gradient", "n"] + summary.loc["gradient", "n_nan"] == 20
    # Guided Backprop is the gradient here: the gradient reaching the ReLU is 1 > 0
    maps = study.maps["grayscale"]
    np.testing.assert_array_equal(maps["guided_backprop"], maps["gradient"])
    assert maps["gradient"].shape == (1, 128, 128) and study.edges.shape == (128, 128)


def test_integrated_gradients_is_input_times_gradient_for_the_homogeneous_net(junco):
    study = one_layer_net.one_layer_edge_study(junco, filter_seeds=[3],
                                      methods=["gradient", "integrated_gradients"],
                                      versions=["rgb"])
    maps = study.maps["rgb"]
    x = one_layer_net.model_input(junco, "rgb")[0].numpy()
    steps = one_layer_net.EDGE_METHODS["integrated_gradients"]["steps"]
    # The one-layer net's gradient is the same at every α > 0; ours runs the steps in batches
    # (the conv: 3·3·3 taps forward and backward) and sums the steps in float32.
    assert_close(maps["integrated_gradients"], (1 - 1 / steps) * x * maps["gradient"],
                 ops=2 * 27 + steps + 2, dtype=FLOAT32)


def test_edge_study_rejects_unknown_methods(junco):
    with pytest.raises(ConfigError, match="unknown edge-study method"):
        one_layer_net.one_layer_edge_study(junco, methods=["lrp"])


def _fig19(digits: torch.Tensor, **kwargs) -> pd.DataFrame:
    return toys.input_times_random(digits, [0.0, 0.5, 2.0], seed=kwargs.pop("seed", 0),
                                   percentile=None, pixels_per_cell=4, **kwargs)


def test_fig19_table_is_tidy_and_deterministic(digits):
    table = _fig19(digits)
    assert list(table.columns) == ["distribution", "location", "scale", "metric", "mean", "sd",
                                   "n", "n_nan"]
    assert len(table) == 2 * 3 * 4 and set(table.metric) == set(toys.FIG19_METRICS)
    pd.testing.assert_frame_equal(table, _fig19(digits), check_exact=True)  # the same call
    other = _fig19(digits, seed=1)
    noisy = table.scale > 0
    assert_differs(table["mean"][noisy], other["mean"][noisy], atol(1.0, ops=8 * 28 * 28,
                                                                     dtype=FLOAT64))
    assert table[~noisy]["mean"].isna().all()  # u = v = 0: constant maps, undefined similarity


def test_fig19_noise_scale_cancels_at_zero_mean_and_matters_around_one(digits):
    zero = _fig19(digits)
    for _, group in zero[zero.scale > 0].groupby(["distribution", "metric"]):
        # Every metric is scale invariant, exactly here: the scales 0.5 and 2 are powers of two.
        assert group["mean"].nunique() == 1
    unit = _fig19(digits, location=1.0).set_index(["distribution", "scale", "metric"])["mean"]
    # x ⊙ u against x ⊙ v with u = v = 1: identical maps, Spearman 1 up to float64 sums.
    assert unit[("truncated_normal", 0.0, "spearman_abs")] == pytest.approx(
        1.0, abs=atol(1.0, ops=2 * (3 * 28 * 28 + 4), dtype=FLOAT64))
    assert unit[("uniform", 2.0, "ssim")] < unit[("uniform", 0.5, "ssim")] < 1.0
    # what survives large noise is the input's structure: |x ⊙ u| and |x ⊙ v| share |x|
    abs_zero = zero[(zero.metric == "spearman_abs") & (zero.scale > 0)]["mean"]
    assert (abs_zero > 0.5).all()


def test_fig19_rejects_bad_arguments(digits):
    with pytest.raises(ConfigError, match="unknown noise distribution"):
        toys.input_times_random(digits, [1.0], seed=0, distributions=["cauchy"])
    with pytest.raises(ConfigError, match="non-negative"):
        toys.input_times_random(digits, [-1.0], seed=0)
