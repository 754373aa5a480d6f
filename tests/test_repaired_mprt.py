"""Beyond the paper: the repaired randomization tests as a Sanity Checks stage
(``experiments/sanity_checks/repaired_mprt.py``). The stage's compute against the metric modules
and the paper's cascading test on a small case, its rankings on constructed numbers, the stages
on the smoke settings, its settings checks and its cost. (sMPRT / eMPRT against Quantus:
tests/test_mprt.py.)"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import stage_context, stage_settings
from replication.attribution import Explainer
from replication.data import imagenet, sanity_images
from replication.errors import ConfigError, DataError
from replication.experiments.common import mnist_set
from replication.experiments.sanity_checks import repaired_mprt as rm
from replication.experiments.sanity_checks.model_randomization import run_randomization
from replication.fileio import read_table
from replication.metrics import efficient_mprt, smooth_mprt
from replication.metrics._mprt import input_maps
from replication.models import create_model
from replication.randomization import RandomizationOptions
from tolerance import FLOAT64, assert_within, atol

METHODS = {"gradient": {}, "gradcam": {}, "smoothgrad": {"n_samples": 2, "noise_level": 0.15}}
UNIFORM = RandomizationOptions(distribution="uniform")  # the truncated normal is slow to draw


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return create_model("mnist_cnn", init="pytorch_default")


def _settings(**changes) -> rm.TestSettings:
    """The smoke profile's settings of the MNIST stage, with ``changes``."""
    ctx = stage_context("sanity_repaired_mprt_mnist")
    chosen = rm._test_settings(ctx, ctx.settings("sanity_checks.repaired_mprt.mnist"), "mnist")
    return dataclasses.replace(chosen, randomization=UNIFORM, **changes)


def _rows(table: pd.DataFrame, **where) -> pd.DataFrame:
    mask = np.ones(len(table), bool)
    for key, value in where.items():
        mask &= (table[key] == value).to_numpy()
    return table[mask]


def test_the_stage_compute_agrees_with_the_metric_modules_and_the_paper_test(mnist_folder, cnn):
    images = mnist_set(mnist_folder, 3)
    settings = _settings(nr_samples=3)
    explainer = Explainer(torch.device("cpu"), batch_size=4)
    layers, scores = rm.repaired_mprt(cnn, images, METHODS, "cnn-mnist", settings, explainer)
    assert settings.smprt.skip == ("smoothgrad", "ig_smoothgrad")  # the smoke profile's
    assert set(_rows(layers, test="smprt")["method"]) == {"gradient", "gradcam"}
    assert set(_rows(scores, test="emprt")["method"]) == set(METHODS)
    # the same calls the stage makes: the same code path on the same inputs, so equal exactly
    common = dict(randomization=UNIFORM, maps="input")
    for method in ("gradient", "gradcam"):
        smooth = smooth_mprt.smooth_mprt(
            cnn, images.images, "predicted", method, nr_samples=3, noise_magnitude=0.1,
            layer_order="bottom_up", seed=0, batch_size=max(1, settings.batch_size // 3),
            **common)
        rows = _rows(layers, test="smprt", method=method).sort_values(["image", "layer_index"])
        assert list(rows["layer"][:4]) == list(smooth.layers) == ["conv1", "conv2", "fc1", "fc2"]
        np.testing.assert_array_equal(rows["value"].to_numpy(), smooth.similarity.ravel())
        # the per-image score is the mean over layers: numpy's and pandas' sums of 4 terms
        score = _rows(scores, test="smprt", method=method)["value"].to_numpy()
        assert_within(score, smooth.average, atol(1.0, ops=4, dtype=FLOAT64))
    for method, params in METHODS.items():
        efficient = efficient_mprt.efficient_mprt(cnn, images.images, "predicted", method,
                                                  method_params=params, n_bins=100,
                                                  batch_size=settings.batch_size, **common)
        np.testing.assert_array_equal(_rows(scores, test="emprt", method=method)["value"],
                                      efficient.scores)
        entropy = _rows(layers, test="emprt", method=method)
        np.testing.assert_array_equal(entropy["value"], np.concatenate(
            [efficient.original_complexity, efficient.randomized_complexity]))
    paper, _ = run_randomization(cnn, images, METHODS, "cascading", UNIFORM,
                                 dataclasses.replace(settings.similarity,
                                                     metrics=("spearman_abs",)),
                                 explainer=explainer, target="predicted")
    for method in METHODS:
        expected = _rows(paper, metric="spearman_abs", method=method)
        expected = expected[expected["stage_index"] > 0]
        ours = _rows(layers, test="mprt", method=method)
        np.testing.assert_array_equal(ours["value"], expected["value"])
        means = expected.groupby("image")["value"].mean().to_numpy()
        assert_within(_rows(scores, test="mprt", method=method)["value"], means,
                      atol(1.0, ops=4, dtype=FLOAT64))


def test_smprt_without_noise_top_down_is_the_papers_mprt_on_2d_maps(mnist_folder, cnn):
    """With one (clean) copy and the paper's order, sMPRT is the paper's test on MNIST: the
    paper's |E|/max|E| and Quantus's second-moment normalisation rank a one-channel map alike.
    Only ties may differ (a division can round two values together): each tie moves Σd² by at
    most 2, so ρ by at most 12·k/(n(n²−1)) for k ≤ n tied pairs of n pixels."""
    images = mnist_set(mnist_folder, 3)
    explainer = Explainer(torch.device("cpu"), batch_size=4)
    settings = _settings(nr_samples=3)
    methods = {"gradient": {}, "gradcam": {}}
    layers = rm.paper_mprt_layers(cnn, images, methods, settings, explainer)
    n = 28 * 28
    for method in methods:
        clean = smooth_mprt.smooth_mprt(cnn, images.images, "predicted", method, nr_samples=1,
                                        layer_order="top_down", randomization=UNIFORM,
                                        maps="input")
        paper = _rows(layers, method=method).sort_values(["image", "layer_index"])
        assert list(paper["layer"][:4]) == list(clean.layers) == ["fc2", "fc1", "conv2", "conv1"]
        assert_within(paper["value"].to_numpy(), clean.similarity.ravel(), 12 / (n * n - 1))


def test_the_last_layer_score_and_a_nan_layer():
    layers = pd.DataFrame({"test": "mprt", "method": "gradient", "image": [0, 0, 1, 1],
                           "layer_index": [2, 1, 1, 2], "value": [0.5, 0.1, np.nan, 0.3]})
    mean = rm.layer_scores(layers, "mean")
    last = rm.layer_scores(layers, "last")
    assert mean["value"].iloc[0] == pytest.approx(0.3) and np.isnan(mean["value"].iloc[1])
    assert list(last["value"]) == [0.5, 0.3]  # the highest layer index, not the row order


def test_rankings_on_constructed_numbers():
    """MPRT and sMPRT: lower passes; eMPRT: higher passes; a NaN image is left out and counted;
    a method without any defined score gets no rank; ties share their mean rank."""
    a, b, c = "gradient", "guided_backprop", "gradcam"
    values = {("mprt", a): [0.1, 0.3], ("mprt", b): [0.9, np.nan], ("mprt", c): [0.5, 0.5],
              ("smprt", a): [0.2, 0.2], ("smprt", b): [0.2, 0.2], ("smprt", c): [np.nan, np.nan],
              ("emprt", a): [0.4, 0.6], ("emprt", b): [0.1, 0.1], ("emprt", c): [1.0, 0.8]}
    scores = pd.DataFrame([{"setup": "s", "model": "m", "test": test, "method": method,
                            "image": image, "value": value}
                           for (test, method), pair in values.items()
                           for image, value in enumerate(pair)])
    ranked = rm.rankings(scores).set_index(["test", "method"])
    assert ranked.loc[("mprt", a), "mean"] == pytest.approx(0.2)
    assert ranked.loc[("mprt", b), ["mean", "n", "n_nan"]].tolist() == [0.9, 1, 1]
    assert [ranked.loc[("mprt", m), "rank"] for m in (a, b, c)] == [1, 3, 2]
    assert [ranked.loc[("smprt", m), "rank"] for m in (a, b)] == [1.5, 1.5]
    assert np.isnan(ranked.loc[("smprt", c), "rank"]) and ranked.loc[("smprt", c), "n_nan"] == 2
    assert [ranked.loc[("emprt", m), "rank"] for m in (a, b, c)] == [2, 3, 1]
    assert ranked.loc[("emprt", a), "sd"] == pytest.approx(0.1)  # population SD
    taus = rm.agreement(rm.rankings(scores)).set_index("tests")
    # a, b, c by MPRT 1, 3, 2 and eMPRT 2, 3, 1: pairs ab, bc concordant, ac discordant
    assert taus.loc["mprt vs emprt", "methods"] == 3
    assert taus.loc["mprt vs emprt", "kendall_tau"] == pytest.approx(1 / 3)
    assert taus.loc["mprt vs smprt", "methods"] == 2  # c has no sMPRT rank
    assert np.isnan(taus.loc["mprt vs smprt", "kendall_tau"])  # sMPRT ties a and b
    same = pd.concat([scores[scores["test"] != "smprt"],
                      scores[scores["test"] == "mprt"].assign(test="smprt")])
    taus = rm.agreement(rm.rankings(same)).set_index("tests")
    assert taus.loc["mprt vs smprt", "kendall_tau"] == pytest.approx(1.0)
    wide = rm.ranking_table(scores).set_index("method")
    assert list(wide.index) == ["Gradient", "Guided Backprop", "Grad-CAM"]
    assert wide.loc["Guided Backprop", "mprt rank"] == 3 and wide.loc["Grad-CAM", "emprt rank"] == 1
    assert np.isnan(wide.loc["Grad-CAM", "smprt mean"])
    frame, text = rm.draw_table(None, scores)
    assert text.startswith("**Beyond the paper.**") and "| s | Guided Backprop | 0.9 | 3 | 1 |" in text


def test_input_maps_sum_channels_at_the_input_resolution():
    inputs = torch.zeros(2, 3, 4, 4)
    maps = torch.arange(96.0).view(2, 3, 4, 4)
    assert torch.equal(input_maps(maps, inputs), maps.sum(1, keepdim=True))
    coarse = torch.ones(2, 1, 2, 2)
    assert input_maps(coarse, inputs).shape == (2, 1, 4, 4)
    with pytest.raises(ConfigError, match="maps must be one of"):
        efficient_mprt.efficient_mprt(create_model("mnist_cnn"), torch.rand(1, 1, 28, 28),
                                      [0], "gradient", maps="upsampled")


def test_the_mnist_stage_and_its_figures_on_the_smoke_settings(tmp_path, mnist_folder, cnn):
    model = tmp_path / "mnist-cnn-true.pt"
    torch.save({"state_dict": cnn.model.state_dict()}, model)
    out = tmp_path / "results"
    ctx = stage_context("sanity_repaired_mprt_mnist",
                        inputs={"mnist": mnist_folder, "cnn_mnist": model},
                        outputs={"layers": out / "mnist-layers.csv", "scores": out / "mnist.csv",
                                 "metrics": tmp_path / "mnist.json"},
                        sanity_checks={"randomization": {"distribution": "uniform"}})
    rm.run_mnist(ctx)
    scores = read_table(out / "mnist.csv")
    assert list(scores.columns) == rm.SCORE_COLUMNS
    assert set(scores["setup"]) == {"cnn-mnist"} and set(scores["image"]) == {0, 1}
    metrics = json.loads((tmp_path / "mnist.json").read_text())
    assert metrics["note"].startswith("beyond the paper")
    assert set(metrics["setups"]["cnn-mnist"]["tests"]) == set(rm.TESTS)
    assert metrics["setups"]["cnn-mnist"]["kendall_tau"].keys() == {
        "mprt vs smprt", "mprt vs emprt", "smprt vs emprt"}
    figure = rm.draw_rankings(None, scores)
    assert [ax.get_title() for ax in figure.axes] == ["CNN – MNIST (2 images)"]


def test_the_imagenet_images_are_a_seeded_choice_of_the_papers_200(paper_images, tmp_path):
    folder = paper_images
    card = create_model("efficientnet_lite1", pretrained=False)
    chosen = []
    for images_from in ("paper", "paper", "sample"):
        ctx = stage_context("sanity_repaired_mprt_imagenet",
                            inputs={"paper_images": folder, "sample": tmp_path / "absent"},
                            sanity_checks={"repaired_mprt": {"imagenet": {
                                "images": 12, "images_from": images_from}}})
        if images_from == "sample":  # the other source is another input: missing here
            with pytest.raises(DataError, match="absent does not exist"):
                rm.imagenet_images(ctx, card, ctx.settings("sanity_checks.repaired_mprt.imagenet"))
            break
        images = rm.imagenet_images(ctx, card, ctx.settings("sanity_checks.repaired_mprt.imagenet"))
        chosen.append(images.names)
        assert images.images.shape == (12, 3, 240, 240)  # Lite1's own preprocessing
    demos = set(sanity_images.demo_images(folder).values())
    assert chosen[0] == chosen[1] and set(chosen[0]) <= set(sanity_images.curve_images(folder))
    assert not demos & set(chosen[0])
    classes = {row["class_name"] for row in imagenet.read_labels(folder)
               if row["file"] in chosen[0]}
    assert len(classes) > 1  # a seeded choice across the classes, not the first class's 12


def test_the_settings_name_what_is_wrong():
    def build(**repaired):
        stage_settings("sanity_repaired_mprt_mnist", sanity_checks={"repaired_mprt": repaired})

    with pytest.raises(ConfigError, match="repaired_mprt.mnist.methods"):
        build(mnist={"methods": ["gradient", "lrp"]})
    with pytest.raises(ConfigError, match="repaired_mprt.imagenet.models"):
        build(imagenet={"models": ["alexnet"]})
    with pytest.raises(ConfigError, match="smprt.skip"):
        build(smprt={"skip": ["no_such_method"]})
    with pytest.raises(ConfigError):
        build(mnist={"setups": ["cnn-cifar"]})


def test_the_cost_counts_every_test():
    """Smoke: the MNIST CNN (4 blocks, 5 states), 2 images, Gradient and Grad-CAM (one pass
    each), sMPRT with 2 copies: MPRT 5 maps, sMPRT 10, eMPRT 2 per image and method."""
    ctx = stage_context("sanity_repaired_mprt_mnist")
    costs = rm.mnist_cost(ctx)
    assert sum(c.forward_backward for c in costs) == 2 * 2 * (5 + 10 + 2)
    # explained classes: MPRT once per state; sMPRT per method and state; eMPRT per method × 2
    assert sum(c.forward for c in costs) == 2 * (5 + 2 * 5 + 2 * 2)
    ctx = stage_context("sanity_repaired_mprt_imagenet")
    assert {c.model for c in rm.imagenet_cost(ctx)} == {"efficientnet_lite0"}
