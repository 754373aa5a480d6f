"""Sanity Checks experiments: randomization and data-randomization tables, claim derivations,
figures from tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from replication.experiments.common import Explainer, mnist_set
from replication.experiments.sanity_checks import figures, summary
from replication.experiments.sanity_checks.data_randomization import run_data_randomization
from replication.experiments.sanity_checks.model_randomization import (SimilaritySettings,
                                                                       run_randomization,
                                                                       summarize_table)
from replication.experiments.sanity_checks.randomization import RandomizationOptions
from replication.experiments.sanity_checks.stages import linear_identities
from replication.models import create_model
from tolerance import FLOAT32, FLOAT64, assert_within, atol

METHODS = {"gradient": {}, "input_x_gradient": {}, "guided_backprop": {}, "gradcam": {},
           "integrated_gradients": {"steps": 4}}
SETTINGS = SimilaritySettings(("spearman_abs", "spearman_diverging"), percentile=None)


@pytest.fixture(scope="module")
def digits(mirror, tmp_path_factory):
    from replication.data import mnist

    folder = tmp_path_factory.mktemp("mnist")
    mnist.prepare("mnist", folder, mirror=mirror)
    return mnist_set(folder, 4)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return create_model("mnist_cnn")


@pytest.fixture(scope="module")
def explainer():
    return Explainer()


@pytest.fixture(scope="module")
def cascading(cnn, digits, explainer):
    return run_randomization(cnn, digits, METHODS, "cascading", RandomizationOptions(), SETTINGS,
                             explainer=explainer, gallery=[0])


def test_cascading_table_starts_at_the_original_and_covers_every_stage(cascading):
    table, arrays = cascading
    assert list(table.columns) == ["model", "mode", "stage_index", "stage", "method", "convention",
                                   "metric", "image", "value"]
    maps = table[table["method"] != ""]
    assert list(dict.fromkeys(maps["stage"])) == ["Original", "fc2", "fc1", "conv2", "conv1"]
    original = maps[maps["stage"] == "Original"]
    # The original compared with itself: identical maps, similarity 1 up to float64 sums over
    # the 28·28 pixels (SSIM's 7×7 windows are smaller).
    assert_within(original["value"], 1.0, atol(1.0, ops=2 * (3 * 28 * 28 + 4), dtype=FLOAT64))
    assert len(maps) == 5 * len(METHODS) * 2 * 4
    randomized = maps[maps["stage"] == "conv1"]
    assert randomized["value"].mean() < 0.95  # randomizing every layer changes the maps
    assert arrays["0/gradient/grayscale"].shape == (1, 28, 28)
    assert arrays["images"].shape == (1, 28, 28, 1)
    changed = table[table["metric"] == "explained_class_changed"]
    assert set(changed["value"]) <= {0.0, 1.0} and (changed[changed["stage"] == "Original"]["value"] == 0).all()


def test_independent_randomization_has_an_original_and_one_stage_per_block(cnn, digits, explainer):
    table, _ = run_randomization(cnn, digits, {"gradient": {}}, "independent",
                                 RandomizationOptions(), SETTINGS, explainer=explainer)
    assert list(dict.fromkeys(table["stage"])) == ["Original", "fc2", "fc1", "conv2", "conv1"]
    assert table["stage_index"].max() == 4


def test_several_conventions_are_compared_on_the_same_maps(cnn, digits, explainer):
    conventions = [SimilaritySettings(("spearman_abs",), percentile=p, convention=str(p))
                   for p in (None, 99.0)]
    table, _ = run_randomization(cnn, digits, {"gradient": {}}, "cascading",
                                 RandomizationOptions(), conventions, explainer=explainer)
    assert set(table.loc[table["method"] != "", "convention"]) == {"None", "99.0"}


def _synthetic_summary(values: dict[str, list[float]], metric: str, mode: str = "cascading"):
    rows = []
    for method, per_stage in values.items():
        for index, value in enumerate([1.0, *per_stage]):
            rows.append({"model": "mnist_cnn", "mode": mode, "stage_index": index,
                         "stage": ["Original", "fc2", "fc1", "conv2", "conv1"][index],
                         "method": method, "convention": "authors_code", "metric": metric,
                         "mean": value, "sd": 0.0, "n": 4, "n_nan": 0})
    return pd.DataFrame(rows)


def test_claim_values_follow_the_curves(cnn):
    falls = {"input_x_gradient": [0.5, 0.2, 0.05, 0.0], "integrated_gradients": [0.4, 0.1, 0.02, 0.01]}
    claims = summary.model_randomization_claims(_synthetic_summary(falls, "spearman_diverging")
                                                .pipe(lambda d: pd.concat([d, _synthetic_summary(
                                                    falls, "spearman_abs")])), None, cnn)
    assert claims["C1"]["value"] == pytest.approx(0.05)  # the largest from the third stage on
    assert claims["C2"]["value"] == pytest.approx(0.0)
    stays = {"input_x_gradient": [0.5, 0.4, 0.3, 0.3], "integrated_gradients": [0.4, 0.3, 0.3, 0.2]}
    claims = summary.model_randomization_claims(_synthetic_summary(stays, "spearman_diverging")
                                                .pipe(lambda d: pd.concat([d, _synthetic_summary(
                                                    stays, "spearman_abs")])), None, cnn)
    assert claims["C1"]["value"] == pytest.approx(0.3)
    positions = summary.stage_positions(cnn, 4)
    assert positions["cam"] == 3  # conv2 feeds the CAM layer relu2


def test_data_randomization_of_a_model_against_itself_is_perfectly_similar(cnn, digits, explainer):
    table, arrays = run_data_randomization(cnn, cnn, digits, {"gradient": {}, "input_x_gradient": {}},
                                           SETTINGS, explainer=explainer, example=0)
    means = table.groupby("metric")["value"].mean()
    identical = atol(1.0, ops=2 * (3 * 28 * 28 + 4), dtype=FLOAT64)  # Spearman of identical maps
    assert means["spearman_abs"] == pytest.approx(1.0, abs=identical)
    assert means["spearman_diverging"] == pytest.approx(1.0, abs=identical)
    assert "spearman_abs_nonzero_pixels" in means
    assert set(arrays) >= {"true/gradient/grayscale", "random/gradient/diverging", "images"}


def test_data_randomization_claims_from_pair_summaries():
    def pair(values):
        return pd.DataFrame([{"method": m, "metric": "spearman_abs", "mean": v, "sd": 0.1}
                             for m, v in values.items()]
                            + [{"method": m, "metric": "spearman_diverging", "mean": 0.1, "sd": 0.3}
                               for m in values]
                            + [{"method": m, "metric": "spearman_abs_nonzero_pixels",
                                "mean": v - 0.4, "sd": 0.1} for m, v in values.items()])

    good = {"gradient": 0.2, "smoothgrad": 0.25, "guided_backprop": 0.5, "guided_gradcam": 0.55,
            "gradcam": 0.0, "integrated_gradients": 0.99, "input_x_gradient": 0.99}
    claims = summary.data_randomization_claims({"cnn-mnist": pair(good)})
    assert claims["C11"]["guided_backprop"]["value"] == 0.5
    assert claims["C15_order"]["value"] == 0 and claims["C15_gradcam_lowest"]["value"] < 0
    assert claims["C16"]["value"] == pytest.approx(0.4)
    claims = summary.data_randomization_claims({"cnn-mnist": pair({**good, "gradient": 0.7})})
    assert claims["C15_order"]["value"] == 1


def test_linear_identities_hold_to_float_precision(digits):
    table = linear_identities(digits.images, seed=0)
    # Up to float32 rounding of the identities' few steps: a mean of 10 equal gradients, or 10
    # integration steps and the product with x.
    assert ((table["max_abs_difference"] / table["scale"]) <= atol(1.0, ops=10 + 2,
                                                                   dtype=FLOAT32)).all()


def test_figures_draw_from_tables(tmp_path, cascading):
    table, arrays = cascading
    fig = figures.randomization_gallery(arrays, {0: "Original"}, 0, "grayscale", ["gradient"], "t")
    assert len(fig.axes) == 2
    panels = figures.similarity_panels({"cnn": summarize_table(table)}, ["spearman_abs"],
                                       {"cnn": "CNN"}, {})
    written = figures.save_figure(panels, tmp_path / "curves")
    assert [p.suffix for p in written] == [".png", ".pdf"] and all(p.stat().st_size for p in written)
    again = figures.save_figure(figures.similarity_panels({"cnn": summarize_table(table)},
                                                          ["spearman_abs"], {"cnn": "CNN"}, {}),
                                tmp_path / "again")
    assert again[0].read_bytes() == written[0].read_bytes()  # deterministic output


def test_calibration_table_puts_the_papers_numbers_beside_ours():
    calibration = pd.DataFrame([{"comparison": "uniform vs uniform", "reference": "uniform",
                                 "other": "uniform", "metric": m, "mean": 0.1, "sd": 0.0, "n": 5}
                                for m in figures.CALIBRATION_METRICS])
    table = figures.calibration_table(calibration)
    assert table.loc[0, "hog (paper)"] == 0.078 and table.loc[0, "hog (ours)"] == 0.1
    assert "| uniform vs uniform |" in figures.markdown_table(table)
