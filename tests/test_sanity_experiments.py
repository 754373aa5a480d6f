"""Sanity Checks experiments: randomization and data-randomization tables, claim derivations,
figures from tables, the stages on the real settings shrunk, the figure inventory."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, stage_context
from replication.claims import read_claims
from replication.config import load_params
from replication.errors import ConfigError
from replication.experiments.common import Explainer, mnist_set
from replication.experiments.sanity_checks import claims, data_randomization, figures
from replication.experiments.sanity_checks.calibration import calibration_table
from replication.experiments.sanity_checks.data_randomization import run_data_randomization
from replication.experiments.sanity_checks.model_randomization import (randomization_gallery,
                                                                       run_mnist,
                                                                       run_randomization,
                                                                       similarity_panels,
                                                                       summarize_table)
from replication.experiments.sanity_checks.settings import (Bootstrap, SanityChecks,
                                                            SimilaritySettings)
from replication.randomization import RandomizationOptions
from replication.experiments.sanity_checks.toys import linear_identities
from replication.fileio import read_table
from replication.metrics.stats import bootstrap_statistic
from replication.metrics.similarity import CALIBRATION_METRICS
from replication.models import create_model
from replication.plotting import markdown_table, save_figure
from tolerance import FLOAT32, FLOAT64, assert_within, atol

METHODS = {"gradient": {}, "input_x_gradient": {}, "guided_backprop": {}, "gradcam": {},
           "integrated_gradients": {"steps": 4}}
SETTINGS = SimilaritySettings(metrics=("spearman_abs", "spearman_diverging"), percentile=None)


@pytest.fixture(scope="module")
def digits(mnist_folder):
    return mnist_set(mnist_folder, 4)


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
    conventions = {str(p): SimilaritySettings(metrics=("spearman_abs",), percentile=p)
                   for p in (None, 99.0)}
    table, _ = run_randomization(cnn, digits, {"gradient": {}}, "cascading",
                                 RandomizationOptions(), conventions, explainer=explainer)
    assert set(table.loc[table["method"] != "", "convention"]) == {"None", "99.0"}


STAGES = ["Original", "fc2", "fc1", "conv2", "conv1"]


def _per_image_table(values: dict[str, list[list[float]]], metric: str,
                     mode: str = "cascading") -> pd.DataFrame:
    """A randomization table: ``values[method][image]`` are the randomized stages' values."""
    rows = []
    for method, per_image in values.items():
        for image, per_stage in enumerate(per_image):
            for index, value in enumerate([1.0, *per_stage]):
                rows.append({"model": "mnist_cnn", "mode": mode, "stage_index": index,
                             "stage": STAGES[index], "method": method,
                             "convention": "authors_code", "metric": metric, "image": image,
                             "value": value})
    return pd.DataFrame(rows)


def _both_metrics(values: dict[str, list[list[float]]]) -> pd.DataFrame:
    return pd.concat([_per_image_table(values, "spearman_diverging"),
                      _per_image_table(values, "spearman_abs")])


def test_claim_values_follow_the_curves(cnn):
    falls = {"input_x_gradient": [[0.5, 0.2, 0.05, 0.0], [0.5, 0.2, 0.05, 0.0]],
             "integrated_gradients": [[0.4, 0.1, 0.0, 0.01], [0.4, 0.1, 0.04, 0.01]]}
    values = claims.model_randomization_claims(_both_metrics(falls), None, cnn)
    assert values["C1"]["value"] == pytest.approx(0.05)  # the largest mean from the third stage on
    assert values["C2"]["value"] == pytest.approx(0.0)
    assert "value_ci" not in values["C1"]  # no bootstrap settings: point values only
    stays = {"input_x_gradient": [[0.5, 0.4, 0.3, 0.3]], "integrated_gradients": [[0.4, 0.3, 0.3, 0.2]]}
    values = claims.model_randomization_claims(_both_metrics(stays), None, cnn)
    assert values["C1"]["value"] == pytest.approx(0.3)
    positions = claims.stage_positions(cnn, 4)
    assert positions["cam"] == 3  # conv2 feeds the CAM layer relu2


@pytest.mark.parametrize("model", ["efficientnet_lite0", "efficientnet_lite1",
                                   "efficientnet_lite2", "inception_v3"])
def test_the_paper_blocks_map_onto_every_imagenet_model(model):
    card = create_model(model, pretrained=False)
    n = len(card.randomization_blocks)
    at = claims.stage_positions(card, n)
    labels = [label for label, _ in card.randomization_blocks]
    if model == "inception_v3":  # the paper's own blocks
        assert (n, labels[at["cam"] - 1], labels[at["middle"] - 1]) == (17, "Mixed_7c", "Mixed_6a")
        assert labels[at["top"][-1] - 1] == "Mixed_6e" and labels[at["stem"][0] - 1] == "Conv2d_4a_3x3"
    else:  # every Lite model has the same 10 stages: the CAM layer bn2 is randomized with conv_head
        assert (n, labels[at["cam"] - 1], at["middle"], at["top"], at["stem"]) == (
            10, "conv_head", 5, [1, 2, 3], [8, 9, 10])


def test_a_claims_interval_is_the_bootstrap_of_its_whole_statistic(cnn):
    rng = np.random.default_rng(3)
    values = {m: rng.uniform(0, 1, (12, 4)).tolist() for m in ("input_x_gradient",
                                                            "integrated_gradients",
                                                            "gradient", "guided_backprop")}
    settings = Bootstrap(n_resamples=300, confidence=0.95)
    found = claims.model_randomization_claims(_both_metrics(values), None, cnn, settings, seed=7)
    # C2: the least favourable mean ABS rank correlation over both methods and every stage,
    # recomputed on every resample of the 12 images
    rows = np.column_stack([np.array(values[m])[:, s] for m in claims.C1_METHODS
                            for s in range(4)])
    expected = bootstrap_statistic(rows, lambda r: r.mean(axis=0).min(), n_resamples=300,
                                   seed=7)
    assert found["C2"]["value"] == pytest.approx(rows.mean(axis=0).min(), abs=atol(1.0, ops=12))
    assert found["C2"]["value_ci"] == expected.as_json() and found["C2"]["value_ci"]["n"] == 12
    # C4: a ratio of means (the middle stage over the first), not a mean of ratios
    gbp = np.array(values["guided_backprop"])
    middle = claims.stage_positions(cnn, 4)["middle"]
    assert found["C4"]["value"] == pytest.approx(gbp[:, middle - 1].mean() / gbp[:, 0].mean())
    again = claims.model_randomization_claims(_both_metrics(values), None, cnn, settings, seed=7)
    assert again["C4"]["value_ci"] == found["C4"]["value_ci"]  # seeded: reproducible


def test_a_claim_over_several_methods_uses_the_images_all_of_them_explained(cnn):
    values = {"input_x_gradient": [[0.5, 0.4, 0.3, 0.2]] * 6,
              "integrated_gradients": [[0.6, 0.5, 0.4, 0.3]] * 2}
    found = claims.model_randomization_claims(_both_metrics(values), None, cnn,
                                              Bootstrap(n_resamples=100, confidence=0.95))
    assert found["C2"]["value_ci"]["n"] == 2 and found["C2"]["value"] == pytest.approx(0.2)


def test_per_model_claims_keep_the_primary_value_and_list_every_model():
    merged = claims.per_model_claims({
        "lite0": {"stages": {"n": 10}, "C4": {"value": 0.8, "value_ci": {"low": 0.7}, "stage": "x"}},
        "lite1": {"stages": {"n": 10}, "C4": {"value": 0.6, "value_ci": {"low": 0.5}}},
        "lite2": {"stages": {"n": 10}}})
    assert merged["C4"]["value"] == 0.8 and merged["C4"]["stage"] == "x"
    assert merged["C4"]["per_model"]["lite1"] == {"value": 0.6, "value_ci": {"low": 0.5}}
    assert "reason" in merged["C4"]["per_model"]["lite2"]
    assert set(merged["stages"]) == {"lite0", "lite1", "lite2"}


def test_calibration_claims_resample_the_images():
    rng = np.random.default_rng(0)
    rows = [{"comparison": f"{ref} vs {other}", "reference": ref, "other": other, "metric": metric,
             "image": image, "value": value}
            for ref, other, centre in (("gradient", "gaussian", 0.001), ("uniform", "uniform", 0.08))
            for metric in ("spearman_abs", "hog")
            for image, value in enumerate(rng.normal(centre, 0.01, 10))]
    values = pd.DataFrame(rows)
    found = claims.calibration_claims(values, Bootstrap(n_resamples=200, confidence=0.95))
    means = values.groupby(["comparison", "metric"])["value"].mean()
    assert found["C7_hog_uniform"]["value"] == pytest.approx(means[("uniform vs uniform", "hog")])
    others = means.drop(("uniform vs uniform", "hog"))
    assert found["C7"]["value"] == pytest.approx(others.abs().max())
    assert found["C7"]["value_ci"]["n"] == 10 and found["C7_hog_uniform"]["value_ci"]["unit"] == "mask pairs"


def test_data_randomization_of_a_model_against_itself_is_perfectly_similar(cnn, digits, explainer):
    table, arrays = run_data_randomization(cnn, cnn, digits, {"gradient": {}, "input_x_gradient": {}},
                                           SETTINGS, explainer=explainer, example=0)
    means = table.groupby("metric")["value"].mean()
    identical = atol(1.0, ops=2 * (3 * 28 * 28 + 4), dtype=FLOAT64)  # Spearman of identical maps
    assert means["spearman_abs"] == pytest.approx(1.0, abs=identical)
    assert means["spearman_diverging"] == pytest.approx(1.0, abs=identical)
    assert "spearman_abs_nonzero_pixels" in means
    assert set(arrays) >= {"true/gradient/grayscale", "random/gradient/diverging", "images"}


def _pair_table(abs_means: dict[str, float], images: int = 12, spread: float = 0.05,
                seed: int = 0) -> pd.DataFrame:
    """A per-image data-randomization table whose Spearman ABS means are ``abs_means``."""
    noise = np.random.default_rng(seed).normal(0, spread, (len(abs_means), images))
    noise -= noise.mean(1, keepdims=True)  # the means are exactly the given ones
    rows = []
    for (method, mean), row_noise in zip(abs_means.items(), noise):
        for image, e in enumerate(row_noise):
            rows += [{"method": method, "metric": "spearman_abs", "image": image, "value": mean + e},
                     {"method": method, "metric": "spearman_diverging", "image": image,
                      "value": 0.1 + e},
                     {"method": method, "metric": "spearman_abs_nonzero_pixels", "image": image,
                      "value": mean - 0.4 + e}]
    return pd.DataFrame(rows)


GOOD = {"gradient": 0.2, "smoothgrad": 0.25, "guided_backprop": 0.5, "guided_gradcam": 0.55,
        "gradcam": 0.0, "integrated_gradients": 0.99, "input_x_gradient": 0.99}


def test_data_randomization_claims_carry_bootstrap_intervals_of_the_whole_statistic():
    values = claims.data_randomization_claims({"cnn-mnist": _pair_table(GOOD)}, n_resamples=300)
    entry = values["C11"]["guided_backprop"]
    assert entry["value"] == pytest.approx(0.5, abs=atol(1.0, ops=24, dtype=FLOAT64))
    interval = entry["value_ci"]
    assert interval["method"] == "bootstrap" and interval["n"] == 12
    assert interval["low"] < entry["value"] < interval["high"]
    assert values["C15_order"]["value"] == 0 and values["C15_gradcam_lowest"]["value"] < 0
    assert values["C16"]["value"] == pytest.approx(0.4)
    low, high = values["C16"]["value_ci"]["low"], values["C16"]["value_ci"]["high"]
    exact = atol(1.0, ops=24, dtype=FLOAT64)  # the drop is 0.4 on every image
    assert low == pytest.approx(0.4, abs=exact) and high == pytest.approx(0.4, abs=exact)
    again = claims.data_randomization_claims({"cnn-mnist": _pair_table(GOOD)}, n_resamples=300)
    assert again == values  # seeded: the same intervals
    violated = claims.data_randomization_claims(
        {"cnn-mnist": _pair_table({**GOOD, "gradient": 0.7})}, n_resamples=300)
    assert violated["C15_order"]["value"] == 1


def test_the_aggregate_interval_matches_a_brute_force_percentile_bootstrap():
    """C14-max is a maximum of means over methods: the bootstrap must resample images jointly
    and recompute the maximum (the percentile interval, checked against a plain loop)."""
    from replication.metrics.stats import bootstrap_statistic

    table = _pair_table(GOOD, images=10, spread=0.2)
    rows, columns = claims.image_matrix({"cnn-mnist": table})
    diverging = [i for i, c in enumerate(columns) if c[2] == "spearman_diverging"]
    interval = bootstrap_statistic(rows, lambda r: r[:, diverging].mean(0).max(), n_resamples=400,
                                   seed=3, method="percentile")
    rng = np.random.default_rng(3)
    draws = [rows[rng.integers(0, 10, 10)][:, diverging].mean(0).max() for _ in range(4000)]
    assert interval.value == pytest.approx(rows[:, diverging].mean(0).max())
    assert interval.low == pytest.approx(np.percentile(draws, 2.5), abs=0.03)
    assert interval.high == pytest.approx(np.percentile(draws, 97.5), abs=0.03)


def test_seed_accounting_widens_the_image_interval_by_the_seed_spread():
    from scipy import stats as scipy_stats

    from replication.metrics.stats import Interval

    image = Interval(0.5, 0.45, 0.53, 50, "bootstrap", "images")
    widened = claims.widen_by_seeds(image, [0.5, 0.6, 0.4])
    margin = scipy_stats.t.ppf(0.975, 2) * 0.1  # SD of (0.5, 0.6, 0.4) is 0.1
    assert widened["seed_sd"] == pytest.approx(0.1) and widened["seed_margin"] == pytest.approx(margin)
    assert widened["low"] == pytest.approx(0.5 - np.hypot(0.05, margin))
    assert widened["high"] == pytest.approx(0.5 + np.hypot(0.03, margin))
    assert (widened["image_low"], widened["image_high"]) == (0.45, 0.53)
    assert widened["method"] == "bootstrap+seeds" and widened["n"] == 50
    # identical seeds add nothing; one seed has no spread to add
    assert claims.widen_by_seeds(image, [0.5, 0.5, 0.5])["low"] == pytest.approx(0.45)
    assert claims.widen_by_seeds(image, [0.5]) == image.as_json()


def test_claims_of_retrained_pairs_are_widened_and_the_others_are_not():
    mlp = {m: v for m, v in GOOD.items() if "gradcam" not in m}
    tables = {"cnn-mnist": _pair_table(GOOD), "mlp-mnist": _pair_table(mlp)}
    retrained = {1: {"mlp-mnist": _pair_table({**mlp, "gradient": 0.3}, seed=1)},
                 2: {"mlp-mnist": _pair_table({**mlp, "gradient": 0.1}, seed=2)}}
    plain = claims.data_randomization_claims(tables, n_resamples=200)
    values = claims.data_randomization_claims(tables, retrained, n_resamples=200)
    gradient = values["C13"]["gradient"]["value_ci"]
    assert gradient["seed_values"] == pytest.approx([0.2, 0.3, 0.1])
    assert gradient["low"] < plain["C13"]["gradient"]["value_ci"]["low"] - 0.1
    assert values["C13"]["gradient"]["value"] == plain["C13"]["gradient"]["value"]
    assert values["C11"]["gradient"] == plain["C11"]["gradient"]  # the CNN pair was not retrained
    assert values["C14_max"]["value_ci"]["method"] == "bootstrap+seeds"  # reads the MLP pair too
    spread = claims.seed_spread_table(tables, retrained, n_resamples=200, seed=0)
    row = spread[(spread["pair"] == "mlp-mnist") & (spread["method"] == "gradient")
                 & (spread["metric"] == "spearman_abs")].iloc[0]
    assert row["seeds"] == 3 and row["larger"] == "seeds"
    assert row["low"] == pytest.approx(gradient["low"])


def test_the_border_diagnostic_on_a_constructed_map():
    training = torch.zeros(100, 1, 4, 4)
    training[:, 0, 1:3, 1:3] = 1.0  # the centre is lit in every image
    training[:1, 0, 0, 0] = 1.0     # one corner pixel in 1% of them
    groups = data_randomization.pixel_groups(training)
    assert int(groups["abs_common_pixels"].sum()) == 4 and int(groups["abs_rare_pixels"].sum()) == 12
    maps = torch.zeros(2, 1, 4, 4)
    maps[0, 0, 1:3, 1:3] = -2.0  # |E| / max|E| = 1 on the centre
    maps[0, 0, 0, :] = 1.0       # 0.5 on the four pixels of the top row
    maps[1, 0] = 3.0
    values = data_randomization.border_diagnostic(maps, groups)
    assert values["abs_common_pixels"].tolist() == [1.0, 1.0]
    assert values["abs_rare_pixels"][0] == pytest.approx(4 * 0.5 / 12)
    assert values["abs_rare_pixels"][1] == 1.0


def test_linear_identities_hold_to_float_precision(digits):
    table = linear_identities(digits.images, seed=0)
    # Up to float32 rounding of the identities' few steps: a mean of 10 equal gradients, or 10
    # integration steps and the product with x.
    assert ((table["max_abs_difference"] / table["scale"]) <= atol(1.0, ops=10 + 2,
                                                                   dtype=FLOAT32)).all()


def test_figures_draw_from_tables(tmp_path, cascading):
    table, arrays = cascading
    fig = randomization_gallery(arrays, {0: "Original"}, 0, "grayscale", ["gradient"], "t")
    assert len(fig.axes) == 2
    panels = similarity_panels({"cnn": summarize_table(table)}, ["spearman_abs"],
                               {"cnn": "CNN"}, {})
    written = save_figure(panels, tmp_path / "curves")
    assert [p.suffix for p in written] == [".png", ".pdf"] and all(p.stat().st_size for p in written)
    again = save_figure(similarity_panels({"cnn": summarize_table(table)}, ["spearman_abs"],
                                          {"cnn": "CNN"}, {}), tmp_path / "again")
    assert again[0].read_bytes() == written[0].read_bytes()  # deterministic output


def test_calibration_table_puts_the_papers_numbers_beside_ours():
    calibration = pd.DataFrame([{"comparison": "uniform vs uniform", "reference": "uniform",
                                 "other": "uniform", "metric": m, "image": i, "value": 0.1 * i}
                                for m in CALIBRATION_METRICS for i in range(3)])
    table = calibration_table(calibration)  # the per-image values, summarized
    assert table.loc[0, "hog (paper)"] == 0.078 and table.loc[0, "hog (ours)"] == pytest.approx(0.1)
    assert table.loc[0, "images"] == 3
    assert "| uniform vs uniform |" in markdown_table(table)


def test_negative_image_counts_are_refused(mnist_folder):
    with pytest.raises(ValueError, match="must be >= 0"):
        mnist_set(mnist_folder, -4)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["imagenet"]["methods"]["smoothgrad"].update(n_sample=2),
     r"sanity_checks.imagenet.methods.smoothgrad: smoothgrad has no parameter 'n_sample'; "
     r"its parameters are \[.*'n_samples'"),
    (lambda s: s["mnist"]["methods"].update(gradcm={}),
     r"sanity_checks.mnist.methods.gradcm: unknown attribution method 'gradcm'; choose one of"),
    (lambda s: s["calibration"].update(methods=["gradient", "gradiant"]),
     r"sanity_checks.calibration.methods names \['gradiant'\], which sanity_checks.imagenet.methods"
     r" does not configure"),
    (lambda s: s["bn_study"].update(batchnorm=["authors_code", "all"]),
     r"sanity_checks.bn_study.batchnorm\[1\] is 'all'"),
    (lambda s: s["imagenet"].update(run_models=["inception_v4"]),
     r"sanity_checks.imagenet.run_models is \['inception_v4'\]; name each model once, from"),
    (lambda s: s["imagenet"].update(method_images={"gradiant": 2}),
     r"sanity_checks.imagenet.method_images names \['gradiant'\]"),
])
def test_the_section_names_unknown_methods_and_parameters(edit, message):
    section = copy.deepcopy(load_params(ROOT / "params.yaml", "smoke")["sanity_checks"])
    edit(section)
    with pytest.raises(ConfigError, match=message):
        SanityChecks.from_params(section, "sanity_checks")


def _checkpoint(card, path: Path) -> Path:
    torch.save({"state_dict": card.model.state_dict()}, path)
    return path


def test_the_mnist_stages_and_their_figures_on_the_smoke_settings(tmp_path, mnist_folder, cnn):
    """The stage functions on the real smoke settings shrunk; the figures runner draws what
    their tables can show and skips the rest."""
    model = _checkpoint(cnn, tmp_path / "mnist-cnn-true.pt")
    results = tmp_path / "results"
    shrunk = {"mnist": {"images": 3, "independent": {"images": 2}},
              "data_randomization": {"images": 3}}
    ctx = stage_context("sanity_mnist_randomization", sanity_checks=shrunk,
                        item={"arch": "cnn", "dataset": "mnist", "mode": "independent"},
                        inputs={"data": mnist_folder, "model": model},
                        outputs={"table": results / "randomization/cnn-mnist-independent.csv",
                                 "maps": results / "maps/cnn-mnist-independent.npz",
                                 "metrics": tmp_path / "randomization.json"})
    run_mnist(ctx)
    table = read_table(results / "randomization/cnn-mnist-independent.csv")
    assert set(table["image"]) == {0, 1} and set(table["setup"]) == {"cnn-mnist"}
    metrics = json.loads((tmp_path / "randomization.json").read_text())
    assert metrics["images"] == 2 and metrics["randomization"]["batchnorm"] == "authors_code"

    ctx = stage_context("sanity_data_randomization", sanity_checks=shrunk,
                        item={"arch": "cnn", "dataset": "mnist"},
                        inputs={"data": mnist_folder, "true_model": model, "random_model": model},
                        outputs={"table": results / "data_randomization/cnn-mnist.csv",
                                 "maps": results / "maps/cnn-mnist-data.npz",
                                 "metrics": tmp_path / "data.json"})
    data_randomization.run(ctx)
    table = read_table(results / "data_randomization/cnn-mnist.csv")
    pairs = data_randomization.pair_summary(table)
    # the same model on both sides: identical maps, whose Spearman is 1 up to its own rounding
    identical = atol(1.0, ops=2 * (3 * 28 * 28 + 4), dtype=FLOAT64)
    assert (pairs.loc[pairs["metric"] == "spearman_abs", "mean"] - 1.0).abs().max() <= identical

    inputs = {name: results / name for name in ("randomization", "data_randomization", "toys",
                                                "maps", "repaired_mprt", "training_seeds")}
    inputs.update(calibration=results / "calibration",
                  seed_spread=results / "seed_spread.csv",
                  verdicts=results / "bn_study_verdicts.csv",
                  claims=ROOT / "claims" / "sanity_checks.yaml")
    figures.run(stage_context("sanity_figures", inputs=inputs,
                              outputs={"out": tmp_path / "figures"}))
    drawn = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert drawn == ["NOT_DRAWN.md", "fig06_data_randomization_cnn_mnist.pdf",
                     "fig06_data_randomization_cnn_mnist.png",
                     "fig22_data_randomization_cnn_mnist.pdf",
                     "fig22_data_randomization_cnn_mnist.png",
                     "fig32_cnn-mnist_independent_grayscale.pdf",
                     "fig32_cnn-mnist_independent_grayscale.png",
                     "fig33_cnn-mnist_independent_diverging.pdf",
                     "fig33_cnn-mnist_independent_diverging.png"]


def _imagenet_context(tmp_path, folder, model: str, mode: str, **imagenet):
    outputs = {"table": tmp_path / f"imagenet-{model}-{mode}.csv",
               "maps": tmp_path / f"imagenet-{model}-{mode}.npz",
               "metrics": tmp_path / f"imagenet-{model}-{mode}.json"}
    return stage_context("sanity_imagenet_randomization", inputs={"images": folder},
                         outputs=outputs, item={"model": model, "mode": mode},
                         sanity_checks={"imagenet": imagenet})


def test_the_imagenet_stage_explains_the_papers_images_and_costs_what_it_declares(
        tmp_path, paper_images):
    """Lite0 on the first curve images, two methods, the Fig. 8-9 examples: the table holds the
    curve images only, each method on its own count, and the model ran exactly the passes the
    cost function counts."""
    from replication.experiments.sanity_checks import model_randomization as mr

    only = {"gradient": 2, "gradcam": 1}
    ctx = _imagenet_context(tmp_path, paper_images, "efficientnet_lite0", "cascading", demos=[],
                            images=2, guided_backprop_examples=1,
                            method_images={m: only.get(m, 0) for m in SanityChecks.from_params(
                                load_params(ROOT / "params.yaml", "smoke")["sanity_checks"],
                                "sanity_checks").imagenet.methods})
    card = create_model("efficientnet_lite0")
    images_through_the_model = []
    card.model.register_forward_hook(lambda m, i, o: images_through_the_model.append(len(i[0])))
    ctx.cache[("imagenet_card", "efficientnet_lite0")] = card  # what imagenet_card would load
    mr.run_imagenet(ctx)
    counted = mr.imagenet_cost(ctx)
    assert sum(images_through_the_model) == sum(c.forward_backward + c.forward for c in counted)
    table = read_table(ctx.output("table"))
    per_method = table[table["method"].notna()].groupby("method")["image"].nunique().to_dict()
    assert per_method == only and set(table["setup"]) == {"imagenet-efficientnet_lite0"}
    metrics = json.loads(ctx.output("metrics").read_text())
    assert metrics["image_names"] == ["ILSVRC2012_val_00000204.JPEG", "ILSVRC2012_val_00001221.JPEG"]
    assert metrics["image_source"].startswith("sanity_checks_imagenet")
    assert metrics["method_images"]["gradient"] == 2 and metrics["method_images"]["smoothgrad"] == 0


def test_a_model_the_profile_does_not_run_writes_empty_outputs_that_say_so(tmp_path, paper_images):
    from replication.experiments.sanity_checks import model_randomization as mr

    ctx = _imagenet_context(tmp_path, paper_images, "inception_v3", "independent")
    mr.run_imagenet(ctx)
    assert read_table(ctx.output("table")).empty and not np.load(ctx.output("maps")).files
    assert "not among sanity_checks.imagenet.run_models" in json.loads(
        ctx.output("metrics").read_text())["not_run"]
    assert mr.imagenet_cost(ctx) == []


def test_a_models_own_counts_override_the_imagenet_section(tmp_path):
    """``models: {name: …}`` under sanity_checks.imagenet sets that model's counts (the quick
    profile runs Lite1 and Lite2 on fewer images and methods than Lite0)."""
    from replication.experiments.sanity_checks import model_randomization as mr

    def passes(model: str) -> int:
        ctx = _imagenet_context(tmp_path, tmp_path, model, "cascading",
                                run_models=["efficientnet_lite0", "efficientnet_lite1"],
                                demos=[], images=4, guided_backprop_examples=0,
                                models={"efficientnet_lite1": {"images": 2, "demos": [],
                                                               "guided_backprop_examples": 0}})
        return sum(c.forward_backward + c.forward for c in mr.imagenet_cost(ctx))

    lite0, lite1 = passes("efficientnet_lite0"), passes("efficientnet_lite1")
    assert lite0 > 0 and lite1 * 2 == lite0  # same stages and methods, half the images


def test_the_imagenet_gallery_finds_its_demo_image_by_role(tmp_path):
    from replication.experiments.sanity_checks.model_randomization import draw_imagenet_gallery

    arrays = {"images": np.zeros((1, 8, 8, 3), np.float16),
              "image_names": np.array(["ILSVRC2012_val_00032239.JPEG"]),
              "demo_roles": np.array(["dog"]),
              "0/gradient/grayscale": np.zeros((1, 8, 8), np.float16)}
    table = pd.DataFrame({"stage_index": [0], "stage": ["Original"]})
    context = figures.FigureContext("note", [])
    assert draw_imagenet_gallery(context, table, arrays, role="bird", style="grayscale",
                                 title="t") is None
    fig = draw_imagenet_gallery(context, table, arrays, role="dog", style="grayscale", title="t")
    assert "dog (ILSVRC2012_val_00032239.JPEG)" in fig._suptitle.get_text()


def test_the_figures_table_matches_the_notes_inventory_and_the_claims():
    notes = (ROOT / "paper_notes" / "sanity_checks.md").read_text()
    inventory = notes.split("## 3. Figure and table inventory")[1].split("\n## ")[0]
    listed = set(re.findall(r"`((?:fig\d+[a-z]?|table|beyond)_[0-9a-z_-]+?)(?:\.md|\.csv)?`",
                            inventory))
    stems = [f.stem for f in figures.FIGURES]
    assert len(stems) == len(set(stems)) and listed == set(stems)
    paper_claims = read_claims(ROOT / "claims" / "sanity_checks.yaml")
    for claim in paper_claims:
        if claim.figure_file:
            path = Path(claim.figure_file)
            assert path.parent == Path("figures/sanity_checks") and path.stem in stems, claim.id
            entry = figures.FIGURES[stems.index(path.stem)]
            assert figures.of_family(claim.id, entry.claims), (claim.id, entry.stem)
    for entry in figures.FIGURES:
        for family in entry.claims:
            assert any(figures.of_family(c.id, (family,)) for c in paper_claims), family
