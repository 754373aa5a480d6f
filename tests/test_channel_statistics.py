"""The engine's channel statistics (ParchGrad's offline half): t-tests vs scipy, float32 ties,
Shapiro–Wilk, GAP hooks, fitting a model card."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

from replication.attribution import select_channels
from replication.attribution import _significance as T
from replication.attribution.channel_statistics import (ChannelStatistics, conv_names, gather_gap,
                                                        statistics_loader)
from replication.data.idx import parse_idx
from replication.errors import ConfigError, DataError
from replication.models import create_model
from tolerance import FLOAT32, FLOAT64, assert_close

def _random_gaps(seed: int = 0, n: int = 400, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    gap = rng.normal(size=(n, 6)).astype(np.float32)
    gap[:, 0] = 2.5                                    # constant channel: the test is undefined
    gap[:, 1] += 0.8 * (labels == 2)                   # class 2 larger
    gap[:, 2] = np.abs(gap[:, 2]) * (1 + labels)       # unequal variances across classes
    gap[:, 3] = np.maximum(gap[:, 3], 0)               # ReLU-like, many zeros
    return gap, labels


@pytest.mark.parametrize("equal_var", [True, False])
def test_class_log_pvalues_equal_scipy_one_sided(equal_var):
    gap, labels = _random_gaps()
    log_p = T.class_log_pvalues(torch.from_numpy(gap), torch.from_numpy(labels), 4, equal_var)
    assert log_p.shape == (6, 4) and log_p.dtype == torch.float64
    expected = np.empty((6, 4))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):  # scipy, constant channel
        for c in range(6):
            for k in range(4):
                x = gap[:, c].astype(np.float64)
                p = stats.ttest_ind(x[labels == k], x[labels != k], alternative="greater",
                                    equal_var=equal_var).pvalue
                expected[c, k] = 0.0 if np.isnan(p) else np.log(p)
    # Means and variances over 400 gaps summed in another order than scipy's (float64); a tail
    # log-probability moves by about |t|·δt ≲ 2·|log p| times their relative rounding.
    assert_close(log_p, expected, ops=2 * 2 * len(gap), dtype=FLOAT64)
    assert torch.all(log_p[0] == 0)                     # constant channel: p = 1
    assert log_p[1, 2] < np.log(1e-6)                   # the shifted class is significant


def test_absent_class_and_welch_singleton_give_p_one():
    gap, labels = _random_gaps(n=200, classes=3)
    labels[0] = 4                                       # class 4: one image; class 3: none
    pooled = T.class_log_pvalues(torch.from_numpy(gap), torch.from_numpy(labels), 5, True)
    welch = T.class_log_pvalues(torch.from_numpy(gap), torch.from_numpy(labels), 5, False)
    assert torch.all(pooled[:, 3] == 0) and torch.all(welch[:, 3] == 0)
    assert torch.all(welch[:, 4] == 0)                  # Welch with n = 1: undefined
    assert torch.all(pooled[1:, 4] != 0)                # pooled with n = 1: defined


def test_t_logsf_does_not_underflow_where_scipy_does():
    t, df = np.array([5.0, 30.0, 60.0, 300.0]), np.array([54998.0] * 4)
    ours = T.t_logsf(t, df)
    assert np.isneginf(stats.t.logsf(60.0, 54998.0))     # scipy underflows
    assert np.all(np.isfinite(ours)) and np.all(np.diff(ours) < 0)
    np.testing.assert_array_equal(ours[:2], stats.t.logsf(t[:2], df[:2]))  # scipy's own value
    # Just above the switch scipy is still exact; the continued fraction must agree there.
    edge_t = np.linspace(32, 37, 10)
    scipy_edge = stats.t.logsf(edge_t, 54998.0)
    assert np.all(scipy_edge < T.LOGSF_SWITCH) and np.all(np.isfinite(scipy_edge))
    # Not rounding but two algorithms (the continued fraction, scipy's incomplete beta near its
    # underflow): an accuracy requirement of 1e-10 relative, the same bits on every CPU.
    np.testing.assert_allclose(T.t_logsf(edge_t, np.full(10, 54998.0)), scipy_edge, rtol=1e-10)


def test_t_logsf_matches_high_precision_reference():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40

    def reference(t: float, nu: float) -> float:
        t, nu = mpmath.mpf(t), mpmath.mpf(nu)
        const = (mpmath.loggamma((nu + 1) / 2) - mpmath.loggamma(nu / 2)
                 - mpmath.log(nu * mpmath.pi) / 2)
        shift = (nu + 1) / 2 * mpmath.log1p(t * t / nu)
        tail = mpmath.quad(lambda u: mpmath.exp(const - (nu + 1) / 2 * mpmath.log1p(u * u / nu)
                                                + shift), [t, 2 * t, mpmath.inf])
        return float(mpmath.log(tail) - shift)

    for t, nu in [(100.0, 1000.0), (300.0, 49998.0)]:
        assert T.t_logsf(np.array([t]), np.array([nu]))[0] == pytest.approx(reference(t, nu),
                                                                            rel=1e-10)


def _separated(n: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes; channels 0 and 1 separate class 0 by ~40 and ~60 standard deviations."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    gap = torch.randn(n, 20, generator=gen)
    gap[:, 0] += 40.0 * (labels == 0)
    gap[:, 1] += 60.0 * (labels == 0)
    return gap, labels


def test_float32_mode_ties_underflowed_pvalues_and_float64_does_not():
    gap, labels = _separated()
    gaps = {"conv": gap}
    exact = ChannelStatistics.from_gaps(gaps, labels, 2, shapiro=False).layer("conv").log_p
    tied = ChannelStatistics.from_gaps(gaps, labels, 2, pvalue_precision="float32",
                                       shapiro=False).layer("conv").log_p
    assert torch.isfinite(exact[:2, 0]).all() and exact[1, 0] < exact[0, 0] < -745
    assert torch.isneginf(tied[:2, 0]).all()            # both exactly p = 0: a tie
    # Channel portion q = 1/20 selects one channel with exact p, both tied ones in float32.
    assert select_channels(exact.T, 0.05, None, None, None)[0].sum() == 1
    assert select_channels(tied.T, 0.05, None, None, None)[0].sum() == 2


def test_class_mode_refuses_one_image_per_class():
    gaps = {"conv": torch.rand(10, 3)}
    with pytest.raises(DataError, match="mode='instance'"):
        ChannelStatistics.from_gaps(gaps, torch.arange(10), 10, "class")
    instance = ChannelStatistics.from_gaps(gaps, torch.arange(10), 10, "instance")
    assert instance.layer("conv").log_p is None
    assert_close(instance.layer("conv").gap_std, gaps["conv"].double().std(0), ops=2 * 10)


def test_shapiro_matches_scipy_and_subsamples_reproducibly():
    gen = torch.Generator().manual_seed(2)
    gap = torch.stack([torch.randn(600, generator=gen), torch.rand(600, generator=gen) ** 4,
                       torch.zeros(600)], dim=1)
    p, info = T.shapiro_pvalues(gap)
    assert p[0] == pytest.approx(stats.shapiro(gap[:, 0].double().numpy()).pvalue)
    assert p[1] < 1e-6 and p[2] == 1.0                  # skewed; dead channel p = 1
    assert info["n_used"] == 600 and not info["subsampled"]
    sub_a, info_a = T.shapiro_pvalues(gap, max_samples=100, seed=3)
    sub_b, _ = T.shapiro_pvalues(gap, max_samples=100, seed=3)
    assert torch.equal(sub_a, sub_b) and info_a["n_used"] == 100 and info_a["subsampled"]
    assert not torch.equal(sub_a, p)


def test_statistics_round_trip_through_save_and_load(tmp_path):
    gap, labels = _separated(n=200)
    stats_ = ChannelStatistics.from_gaps({"x": gap[:, :5], "y": gap}, labels, 2,
                                    pvalue_precision="float32", meta={"model": "toy"})
    path = tmp_path / "stats.pt"
    stats_.save(path)
    loaded = ChannelStatistics.load(path)
    assert loaded.mode == "class" and list(loaded.layers) == ["x", "y"]
    for name in ("x", "y"):
        for key, value in stats_.layer(name).tensors().items():
            assert torch.equal(getattr(loaded.layer(name), key), value), (name, key)
    assert loaded.meta == stats_.meta and loaded.meta["model"] == "toy"


# ----------------------------------------------------------------------------- real models

@pytest.fixture(scope="module")
def mnist_images(mirror) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 300 MNIST training images (pixels / 255) and labels, read from the mirror."""
    folder = mirror / "mnist"
    images = parse_idx(gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes()))
    labels = parse_idx(gzip.decompress((folder / "train-labels-idx1-ubyte.gz").read_bytes()))
    pixels = torch.from_numpy(images[:300].astype(np.float32) / 255.0).unsqueeze(1)
    return pixels, torch.from_numpy(labels[:300].astype(np.int64))


def test_gather_gap_on_the_mnist_cnn(mnist_images):
    torch.manual_seed(0)
    card = create_model("mnist_cnn")
    pixels, labels = mnist_images
    loader = DataLoader(TensorDataset(pixels, labels), batch_size=64)
    gaps, got_labels = gather_gap(card.model.train(), loader)
    assert card.model.training                           # the training flag is restored
    assert list(gaps) == ["conv1", "conv2"] and torch.equal(got_labels, labels)
    assert gaps["conv1"].shape == (300, 32) and gaps["conv2"].shape == (300, 64)
    assert all(g.dtype == torch.float32 and (g >= 0).all() for g in gaps.values())
    assert (gaps["conv2"] > 0).any()
    model, x = card.model, pixels[7:8]
    # One image against batches of 64 or 128: the convs may round apart (fan-in 5·5 and
    # 32·5·5), then GAP means over 28·28 and 14·14 positions.
    ops = {"conv1": 5 * 5 + 28 * 28, "conv2": 5 * 5 + 32 * 5 * 5 + 14 * 14}
    with torch.no_grad():
        hidden = model.pool1(model.relu1(model.conv1(x)))
        assert_close(gaps["conv1"][7], torch.relu(model.conv1(x)).mean((2, 3))[0], ops=ops["conv1"])
        assert_close(gaps["conv2"][7], torch.relu(model.conv2(hidden)).mean((2, 3))[0],
                     ops=ops["conv2"])
    fast, _ = gather_gap(card.model, statistics_loader(TensorDataset(pixels, labels), 128))
    for name in gaps:  # batch size may change the conv algorithm: close, not equal
        assert_close(fast[name], gaps[name], ops=ops[name])
    # Class statistics of a model card come out per conv.
    stats_ = ChannelStatistics.fit(card, TensorDataset(pixels, labels), "class", batch_size=100,
                                   meta={"statistics_set": "the first 300 MNIST images"})
    assert_close(stats_.layer("conv2").gap_mean, gaps["conv2"].double().mean(0),
                 ops=ops["conv2"] + 300, dtype=FLOAT32)  # float32 gaps from batches of 100
    assert stats_.layer("conv1").log_p.shape == (32, 10)
    assert stats_.meta["model"] == "mnist_cnn" and stats_.meta["n_images"] == 300
    assert stats_.meta["statistics_set"] == "the first 300 MNIST images"
    assert ((stats_.layer("conv2").shapiro_p >= 0) & (stats_.layer("conv2").shapiro_p <= 1)).all()
    with pytest.raises(ConfigError, match="not Conv2d modules"):
        gather_gap(card.model, loader, ["fc1"])


@pytest.fixture
def sample_images(mirror) -> torch.Tensor:
    """Four images of the ImageNet sample through Lite0's preprocessing."""
    from PIL import Image

    from replication.data.imagenet import SAMPLE_MIRROR_FOLDER

    card = create_model("efficientnet_lite0", pretrained=False)
    transform = card.preprocessing.transform()
    names = sorted(p.name for p in (mirror / SAMPLE_MIRROR_FOLDER).iterdir())[:4]
    return torch.stack([transform(Image.open(mirror / SAMPLE_MIRROR_FOLDER / name).convert("RGB"))
                        for name in names])


def test_instance_statistics_on_lite0(sample_images):
    torch.manual_seed(0)
    card = create_model("efficientnet_lite0", pretrained=False)
    x = sample_images
    stats_ = ChannelStatistics.fit(card, [(x, torch.arange(4))], "instance")
    convs = conv_names(card.model)
    assert list(stats_.layers) == convs and len(convs) == 49 and convs[-1] == "conv_head"
    head = stats_.layer("conv_head")
    assert head.log_p is None and head.gap_mean.shape == (1280,) and (head.gap_mean >= 0).all()
    assert head.gap_std.shape == (1280,) and (head.gap_std > 0).any()
    assert ((head.shapiro_p >= 0) & (head.shapiro_p <= 1)).all()
    assert stats_.meta["mode"] == "instance" and stats_.meta["n_images"] == 4
    # The hook sees the conv output before BatchNormAct2d.
    with torch.no_grad():
        stem = torch.relu(card.model.eval().conv_stem(x)).mean((2, 3)).double()
    # The stem conv (fan-in 3·3·3) and its GAP over 112·112 positions, maybe in other kernels.
    ops = 3 * 3 * 3 + 112 * 112
    assert_close(stats_.layer("conv_stem").gap_mean, stem.mean(0), ops=ops + 4, dtype=FLOAT32)
    assert_close(stats_.layer("conv_stem").gap_std, stem.std(0), ops=2 * (ops + 4), dtype=FLOAT32,
                 scale=stem.abs().max())
