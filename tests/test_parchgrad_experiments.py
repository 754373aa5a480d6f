"""ParchGrad experiments, stages, claims and figures on tiny inputs (untrained MNIST CNN).

Settings come from the repository's params.yaml (smoke profile), shrunk where a test needs it.
"""

from __future__ import annotations

import io
import json
import math
import re
import tarfile

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from conftest import ROOT, stage_context
from replication.attribution import ChannelStatistics, Explainer
from replication.attribution.channel_statistics import gather_gap, statistics_loader
from replication.errors import ConfigError, DataError
from replication.experiments.common import ImageSet
from replication.data import boxes as D
from replication.experiments.parchgrad import boxes as B
from replication.experiments.parchgrad import (bbox, claims, costs, faithfulness, figures,
                                               q_sweep, statistics, statistics_checks, toys, vc)
from replication.experiments.parchgrad.display import panel_key
from replication.experiments.parchgrad.methods import (MethodOptions, authors_pixel_map,
                                                       hooked_convs)
from replication.fileio import write_npz, write_table
from replication.metrics import stats
from replication.models import create_model
from replication.models.base import Preprocessing
from tolerance import FLOAT32, FLOAT64, assert_close, assert_within, atol, network_ops


def _relative_rounding(card) -> float:
    """Relative float32 rounding of a map through the MNIST CNN's passes (other batch shapes,
    or a scaled gradient through the same backward)."""
    return atol(1.0, ops=network_ops(card.model), dtype=FLOAT32)

# Random images give normal-looking GAPs, which the authors' Shapiro filter would drop (leaving
# H empty, i.e. no modification): the mechanics are tested without it.
NO_FILTER = {"shapiro_threshold": None}


def settings_of(stage: str, key: str, **section) -> tuple[object, MethodOptions]:
    """The typed ``parchgrad.<key>`` settings of ``stage`` (smoke, ``section`` merged in,
    Shapiro filter off) and the method options."""
    ctx = stage_context(stage, parchgrad={**NO_FILTER, key: section})
    return ctx.settings(f"parchgrad.{key}"), MethodOptions.of(ctx)


@pytest.fixture(scope="module")
def setup():
    """An untrained MNIST CNN (no trained checkpoint is needed), class statistics from 80
    random images (8 per class) with their bug-compatible copy, and 3 images to explain."""
    torch.manual_seed(0)
    card = create_model("mnist_cnn")
    card.model.eval()
    generator = torch.Generator().manual_seed(1)
    pixels = torch.rand(80, 1, 28, 28, generator=generator)
    labels = torch.arange(80) % 10
    gaps, got = gather_gap(card.model, statistics_loader(TensorDataset(pixels, labels), 40))
    corrected = ChannelStatistics.from_gaps(gaps, got, 10, "class")
    bug = statistics.authors_bug_statistics(gaps, got, 10, corrected)
    images = ImageSet(pixels[:3], labels[:3], ["a", "b", "c"], "random")
    return card, corrected, bug, images, Explainer(batch_size=8)


@pytest.fixture(scope="module")
def computed(setup):
    card, corrected, bug, images, explainer = setup
    settings, options = settings_of("parchgrad_vc", "vc", hooks=["default", 0.5],
                                    channel_portions=[0.1], panels=2)
    vc_result = vc.vc_ablation(card, images, corrected, settings, options, explainer)
    settings, options = settings_of("parchgrad_q_sweep", "q_sweep", hooks="default",
                                    channel_portions=[1.0, 0.3, 0.05], panels=1)
    sweep = q_sweep.channel_portion_sweep(card, images, corrected, settings, options, explainer)
    settings, options = settings_of("parchgrad_faithfulness", "faithfulness",
                                    bases=["gradient", "integrated_gradients"],
                                    channel_portions=[0.1], ratios=[0.0, 0.2, 0.5], ig_steps=2,
                                    batch_size=16)
    faith = faithfulness.faithfulness(card, images, corrected, settings, options, explainer)
    return vc_result, sweep, faith


def test_vc_is_a_positive_scale_on_the_sequential_cnn(setup, computed):
    result, _, _ = computed
    pairs, artifacts = result.pairs, result.artifacts
    rounding = _relative_rounding(setup[0])
    assert set(pairs.columns) >= {"model", "image", "label", "hooks", "n_convs", "q",
                                  "pearson", "best_scale", "relative_residual"}
    assert set(pairs["hooks"]) == {"default", "r=0.5"} and len(pairs) == 6
    # Claim C4's mechanism: the VC map is the zero-pruned one scaled, up to relative rounding δ,
    # so Pearson r ≥ 1 − δ²/2 (and float64 sums over 28·28 pixels) and the residual ≤ δ.
    r_bound = rounding ** 2 / 2 + atol(1.0, ops=3 * 28 * 28, dtype=FLOAT64)
    assert (pairs["pearson"] >= 1 - r_bound).all()
    assert (pairs["best_scale"] > 0).all() and (pairs["relative_residual"] <= rounding).all()
    assert set(artifacts["variant"]) == {"gradient", "vc", "zero_pruning"}
    hooked = artifacts[artifacts["variant"] != "gradient"]
    # scale-invariant measures are identical with and without VC here
    wide = hooked.pivot_table(index=["image", "hooks"], columns="variant", values="hf_energy")
    # An energy ratio of maps equal up to relative rounding δ moves by at most ~2δ relatively.
    assert_within(wide["vc"], wide["zero_pruning"], 2 * rounding * wide["zero_pruning"].abs())
    assert panel_key("vc", "default", "0.1", 1) in result.maps
    assert result.maps[panel_key("image", 0)].shape == (28, 28, 3)


def test_q_one_is_the_gradient_and_similarity_falls(setup, computed):
    _, sweep, _ = computed
    rounding = _relative_rounding(setup[0])
    table = sweep.table
    assert set(table.columns) >= {"model", "hooks", "q", "image", "spearman", "pearson", "ssim",
                                  "max_relative_difference", "max_relative_difference_no_shapiro"}
    full = table[table["q"] == 1.0]
    assert (full["max_relative_difference_no_shapiro"] <= rounding).all()      # claim C3
    assert table.loc[table["q"] != 1.0, "max_relative_difference_no_shapiro"].isna().all()
    assert (table.loc[table["q"] == 0.05, "max_relative_difference"] > rounding).all()
    summary = q_sweep.sweep_summary(table)
    assert list(summary.loc[summary["metric"] == "spearman", "q"]) == [1.0, 0.3, 0.05]
    assert summary["monotone"].dtype == bool


def test_faithfulness_tables(setup, computed):
    card, _, _, images, _ = setup
    _, _, faith = computed
    methods = ["gradient", "parchgrad(gradient, q=0.1)", "integrated_gradients",
               "parchgrad(integrated_gradients, q=0.1)"]
    assert list(dict.fromkeys(faith.per_image["method"])) == methods
    assert len(faith.per_image) == 4 * 3 and len(faith.curves) == 4 * 3 * 2 * 3
    assert set(faith.per_image.columns) >= {"morf_aopc", "lerf_aopc", "morf_lodds",
                                            "lerf_lodds", "gini", "probability"}
    at_zero = faith.curves[faith.curves["ratio"] == 0.0]
    # Nothing removed at ratio 0: p(x) − p(x) from batches of other shapes, so within the
    # rounding of the logits through the forward (a probability moves by at most half of it).
    with torch.no_grad():
        logits = card.model(images.images)
    scored_apart = atol(logits, ops=network_ops(card.model, backward=False), dtype=FLOAT32)
    assert_within(at_zero["aopc"], 0.0, scored_apart)
    assert ((faith.per_image["gini"] > 0) & (faith.per_image["gini"] < 1)).all()
    paired = faithfulness.faithfulness_comparisons(faith.per_image, 200, 0)
    assert set(paired["metric"]) == set(faithfulness.METRICS) and (paired["n_pairs"] == 3).all()
    summary = faithfulness.faithfulness_summary(faith.per_image, 200, 0)
    assert len(summary) == 4 * len(faithfulness.METRICS)


def test_paired_comparisons_pair_images_in_the_order_they_were_explained():
    """Twelve images named test[0] … test[11]: sorted by name they would pair (and bootstrap)
    in another order; the table is what the paired comparison of each column gives."""
    rng = np.random.default_rng(0)
    names = [f"test[{i}]" for i in range(12)]
    rows = [{"model": "m", "image": name, "method": method, "base": "gradient", "q": q,
             **{metric: rng.normal() for metric in faithfulness.METRICS}}
            for q, method in ((None, "gradient"), (0.1, "parchgrad(gradient, q=0.1)"))
            for name in names]
    per_image = pd.DataFrame(rows)
    paired = faithfulness.faithfulness_comparisons(per_image, 200, 0).set_index("metric")
    base, variant = per_image[per_image["q"].isna()], per_image[per_image["q"].notna()]
    for metric, higher in faithfulness.METRICS.items():
        expected = stats.paired_comparison(variant[metric].to_numpy(), base[metric].to_numpy(),
                                           n_resamples=200, seed=0)
        row = paired.loc[metric]
        assert (row["mean_difference"], row["ci_low"], row["ci_high"], row["p_value"]) == (
            expected.mean_difference, expected.ci_low, expected.ci_high, expected.p_value)
        assert row["favours_parchgrad"] == ((expected.mean_difference > 0) == higher)


def test_method_costs_table(setup):
    card, corrected, _, images, _ = setup
    settings, options = settings_of("parchgrad_costs", "costs", repeats=2, ig_steps=3,
                                    smoothgrad_samples=4)
    table = costs.method_costs(card, images.subset([0]), corrected, settings, options,
                               torch.device("cpu"))
    rows = table.set_index("method")
    assert not rows.loc["CRP", "provided"] and math.isnan(rows.loc["CRP", "seconds_per_map"])
    assert rows.loc["ParchGrad", "forward_backward"] == 1
    assert rows.loc["Integrated Gradient", "forward_backward"] == 4  # steps + 1 trapezoid points
    assert rows.loc["SmoothGrad", "forward_backward"] == 4
    assert rows.loc["ScoreCAM", "forward"] == 1 + 64     # one forward per relu2 channel
    assert rows.loc["Gradient", "relative_to_gradient"] == 1.0
    assert (rows.loc[rows["provided"], "seconds_per_map"] > 0).all()
    assert rows.loc["Gradient", "repeats"] == 2 and rows.loc["ScoreCAM", "repeats"] == 1
    assert rows.loc["Gradient", "seconds_per_map"] <= rows.loc["Gradient", "seconds_per_map_median"]


def test_statistics_bug_effect(setup):
    card, corrected, bug, images, explainer = setup
    settings, options = settings_of("parchgrad_statistics_checks", "statistics_checks",
                                    channel_portions=[0.25], hooks="default")
    effect = statistics_checks.statistics_bug_effect(card, images, corrected, bug, settings,
                                                     options, explainer)
    selection = effect.selection.set_index("layer")
    assert selection["bug_is_last_layer_copy"].all()
    assert selection.loc["conv2", "is_last_conv"] and selection.loc["conv2", "jaccard_mean"] == 1.0
    assert selection.loc["conv1", "jaccard_mean"] < 1.0      # the bug changes conv1's H sets
    assert len(effect.maps) == 3 and effect.maps["spearman"].between(-1, 1).all()


def test_dead_channels_in_instance_mode(setup):
    card, corrected, _, images, _ = setup
    model = create_model("mnist_cnn").model.eval()
    with torch.no_grad():                                    # conv2 channel 0 can never fire
        model.conv2.weight[0] = -1.0
        model.conv2.bias[0] = -1.0
    card = type(card)(**{**vars(card), "model": model})
    gaps, _ = gather_gap(model, [(images.images, images.labels)])
    stats_ = ChannelStatistics.from_gaps(gaps, images.labels, 10, "instance")
    layer = stats_.layers["conv2"]                           # channel 1 alive, but recorded
    layer.gap_mean[1], layer.gap_std[1], layer.shapiro_p[1] = 0.0, 0.0, 1.0  # as dead
    ctx = stage_context("parchgrad_statistics_checks")          # the authors' Shapiro filter
    settings, options = ctx.settings("parchgrad.statistics_checks"), MethodOptions.of(ctx)
    check = statistics_checks.dead_channel_check
    table = check(card, images, stats_, settings, options, torch.device("cpu"))
    row = table.set_index(["conv", "input"]).loc[("conv2", "statistics_images")]
    assert row["dead_channels"] == 2 and row["dead_awake_fraction"] == 0.5
    # channel 0: 0/0 → p = 1; channel 1 (awake, std 0): z = +∞ → p = 0, kept only without Shapiro
    assert row["dead_p_one_fraction"] == 0.5 and row["dead_p_zero_fraction"] == 0.5
    assert row["dead_selected_with_shapiro"] == 0.0 and row["dead_selected_without_shapiro"] > 0
    assert math.isnan(row["dead_active_after_bn_fraction"])  # no BatchNorm after the conv
    assert check(card, images, corrected, settings, options, torch.device("cpu")).empty


def test_hooks_and_errors(setup):
    card = setup[0]
    assert hooked_convs(card, "default") == ["conv1", "conv2"]
    assert hooked_convs(card, 0.5) == ["conv2"] and hooked_convs(card, 1.0) == ["conv1", "conv2"]
    with pytest.raises(ConfigError, match="hooks no conv"):
        hooked_convs(card, 0.2)
    with pytest.raises(ConfigError, match=r"parchgrad.vc.hooks\[1\] is 1.5"):
        settings_of("parchgrad_vc", "vc", hooks=["default", 1.5])
    with pytest.raises(ConfigError, match="parchgrad.vc.images names \\['resnet'\\]"):
        settings_of("parchgrad_vc", "vc", images={"resnet": 2})
    maps = torch.zeros(2, 3, 4, 4)
    maps[:, 0] = 1.0
    maps[:, 1] = -3.0
    # float32 means over 3 channels.
    assert_close(authors_pixel_map(maps, "gradient"), torch.full((2, 1, 4, 4), 4 / 3), ops=3,
                 dtype=FLOAT32)
    assert_close(authors_pixel_map(maps, "integrated_gradients"), torch.full((2, 1, 4, 4), 2 / 3),
                 ops=3, dtype=FLOAT32)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1",
                                  "efficientnet_lite2"])
def test_lite_default_hooks_lie_on_paths_all_the_gradient_crosses(name):
    """Lite1/Lite2 declare Lite0's hooks: the first block of the last two stages (no skip
    connection, so variance conservation is a per-image scale there) and conv_head."""
    card = create_model(name, pretrained=False)
    assert card.parchgrad_convs == ["blocks.5.0.conv_dw", "blocks.6.0.conv_dw", "conv_head"]
    assert not any(card.module(block).has_skip for block in ("blocks.5.0", "blocks.6.0"))


def test_artifact_measures():
    smooth = torch.cos(2 * math.pi * torch.arange(32) / 32).repeat(32, 1)[None, None] + 1.0
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2).double()[None, None]
    assert vc.high_frequency_energy(checker)[0] > 0.99
    assert vc.high_frequency_energy(smooth)[0] < 0.05
    assert vc.total_variation(checker)[0] > vc.total_variation(smooth)[0]
    # Scale-free: the two maps are 3× each other up to float32 rounding of 3·smooth (smooth is
    # float32), which moves an energy ratio by a few such roundings.
    assert_close(vc.high_frequency_energy(3 * smooth + checker),
                 vc.high_frequency_energy(smooth + checker / 3), ops=4, dtype=FLOAT32)
    assert np.isnan(vc.total_variation(torch.zeros(1, 1, 4, 4))[0])


# --------------------------------------------------------------------------- boxes

XML = """<annotation><filename>{stem}</filename><size><width>{w}</width><height>{h}</height>
<depth>3</depth></size>{objects}</annotation>"""
OBJECT = "<object><name>{wnid}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>" \
         "<ymax>{y1}</ymax></bndbox></object>"


def _xml(stem: str, w: int, h: int, *boxes: tuple) -> str:
    objects = "".join(OBJECT.format(wnid=b[0], x0=b[1], y0=b[2], x1=b[3], y1=b[4]) for b in boxes)
    return XML.format(stem=stem, w=w, h=h, objects=objects)


def test_parse_and_crop_boxes():
    annotation = D.parse_voc_xml(_xml("ILSVRC2012_val_00000007", 500, 400,
                                      ("n01", 50, 100, 450, 300), ("n02", 0, 0, 10, 10)))
    assert annotation.stem == "ILSVRC2012_val_00000007" and len(annotation.boxes) == 2
    assert annotation.first.wnid == "n01"
    preprocessing = Preprocessing(224, 3, (0.5,) * 3, (0.5,) * 3, resize=256)
    # 500×400 → 320×256, centre crop offsets left 48, top 16
    x0, y0, x1, y1 = D.crop_box(annotation, preprocessing)
    assert (x0, y0, x1, y1) == pytest.approx((0.0, 100 * 0.64 - 16, 224.0, 300 * 0.64 - 16))
    mask = D.box_mask((x0, y0, x1, y1), 224)
    assert mask.shape == (224, 224) and mask[100, 100] and not mask[10, 10]
    with pytest.raises(DataError, match="no <object>"):
        D.parse_voc_xml(_xml("x", 10, 10))


def test_box_energy_values():
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, :5, :] = True                                     # half the image
    inside = torch.zeros(1, 10, 10)
    inside[0, :5] = -2.0                                      # abs is taken
    mu_in, mu_in_w, area = B.box_energy(inside, mask)
    assert mu_in[0] == pytest.approx(1.0) and mu_in_w[0] == pytest.approx(2.0) and area[0] == 0.5
    uniform = torch.ones(1, 1, 10, 10)
    assert B.box_energy(uniform, mask)[1][0] == pytest.approx(1.0)
    nan_map = torch.full((1, 10, 10), float("nan"))
    assert np.isnan(B.box_energy(nan_map, mask)[0][0])       # nan_to_num → all-zero map


def test_correct_and_authors_pairings(tmp_path):
    # validation files by number; classes interleaved so class order ≠ file order
    rows = [{"file": f"ILSVRC2012_val_{i:08d}.JPEG", "wnid": wnid}
            for i, wnid in zip(range(1, 7), ["n2", "n1", "n3", "n1", "n2", "n3"])]
    with tarfile.open(tmp_path / D.BOX_ARCHIVE, "w:gz") as archive:
        for i, row in enumerate(rows, start=1):
            data = _xml(f"ILSVRC2012_val_{i:08d}", 100, 100, (row["wnid"], i, i, 50, 50)).encode()
            info = tarfile.TarInfo(f"val/ILSVRC2012_val_{i:08d}.xml")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    annotations = D.read_boxes(tmp_path / D.BOX_ARCHIVE)
    assert len(annotations) == 6
    files = [r["file"] for r in rows]
    correct = B.pair_boxes(files, rows, annotations, "correct")
    assert [a.first.xmin for a in correct] == [1, 2, 3, 4, 5, 6]
    # class-sorted order: n1 (files 2, 4), n2 (1, 5), n3 (3, 6) → positions 0..5
    authors = B.pair_boxes(files, rows, annotations, "authors")
    assert [a.first.xmin for a in authors] == [3, 1, 5, 2, 4, 6]
    assert [a.first.wnid for a in authors] != [r["wnid"] for r in rows]
    with pytest.raises(ConfigError, match="pairing"):
        B.pair_boxes(files, rows, annotations, "sorted")
    with pytest.raises(DataError, match="ILSVRC2012_bbox_val_v3"):
        D.read_boxes(tmp_path / "missing.tgz")


# --------------------------------------------------------------------------- stages, claims, figures

RESULT_INPUTS = ("toys", "vc", "q_sweep", "faithfulness", "costs", "statistics_checks", "bbox")


def test_stages_claims_and_figures(tmp_path, computed, setup):
    vc_result, sweep, faith = computed
    results, maps = tmp_path / "results", tmp_path / "maps"
    inputs = {name: results / name for name in RESULT_INPUTS}
    toys.run(stage_context("parchgrad_toys", outputs={"out": inputs["toys"],
                                                      "metrics": tmp_path / "toys.json"},
                           parchgrad={"toys": {"seeds": 20, "readings": ["code_uniform",
                                                                         "text_normal_std"],
                                               "checkerboard": {"strides": [1, 2]},
                                               "variance_identity": {"seeds": 2}}}))
    bbox_ctx = stage_context("parchgrad_bbox", inputs={"ilsvrc2012_val": tmp_path},
                             outputs={"out": inputs["bbox"], "metrics": tmp_path / "bbox.json"},
                             parchgrad={"bbox": {"images": {"resnet18": 4}}})
    bbox.run(bbox_ctx)
    reason = json.loads((tmp_path / "bbox.json").read_text())
    assert reason["status"] == "not run" and "ILSVRC2012 validation" in reason["reason"]
    assert "models" not in reason and reason["stage"] == "parchgrad_bbox"
    # the experiment stages' tables, as those stages write them
    write_table(vc_result.artifacts, inputs["vc"] / "e2_artifacts.csv")
    write_table(vc_result.pairs, inputs["vc"] / "e2_pairs.csv")
    write_table(sweep.table, inputs["q_sweep"] / "e6_q_sweep.csv")
    write_table(q_sweep.sweep_summary(sweep.table), inputs["q_sweep"] / "e6_q_sweep_summary.csv")
    write_table(faith.curves, inputs["faithfulness"] / "e5_curves.csv")
    write_table(faith.per_image, inputs["faithfulness"] / "e5_per_image.csv")
    write_table(faithfulness.faithfulness_summary(faith.per_image, 100, 0),
                inputs["faithfulness"] / "e5_summary.csv")
    write_table(faithfulness.faithfulness_comparisons(faith.per_image, 100, 0),
                inputs["faithfulness"] / "e5_paired.csv")
    write_npz(maps / "vc.npz", {panel_key("mnist_cnn", k): v for k, v in vc_result.maps.items()})
    write_npz(maps / "q-sweep.npz",
              {panel_key("mnist_cnn", k): v for k, v in sweep.maps.items()})
    card, corrected, bug, images, explainer = setup
    settings, options = settings_of("parchgrad_statistics_checks", "statistics_checks",
                                    channel_portions=[0.25])
    effect = statistics_checks.statistics_bug_effect(card, images.subset([0]), corrected, bug,
                                                     settings, options, explainer)
    write_table(effect.selection, inputs["statistics_checks"] / "s1_bug_selection.csv")
    write_table(effect.maps, inputs["statistics_checks"] / "s1_bug_maps.csv")
    write_table(pd.DataFrame({"model": ["mnist_cnn"], "fraction": [0.5]}),
                inputs["statistics_checks"] / "s1_shapiro.csv")
    write_table(pd.DataFrame(), inputs["statistics_checks"] / "s1_dead_channels.csv")
    inputs["costs"].mkdir()
    summaries = tmp_path / "statistics"
    summaries.mkdir()
    (summaries / "mnist_cnn.json").write_text(json.dumps(statistics.statistics_summary(corrected)))

    claims.run(stage_context("parchgrad_claims", inputs={
        **inputs, "statistics_metrics": summaries, "imagenet_sample": tmp_path,
        "ilsvrc2012_val": tmp_path}, outputs={"out": tmp_path / "claims.json"}))
    values = json.loads((tmp_path / "claims.json").read_text())
    assert list(values) == list(claims.CLAIM_IDS)
    assert values["C1"]["value"] < 1.0                         # the authors' seed 21
    assert values["C1b"]["value"] == pytest.approx(0.225, abs=5e-4)
    for cid in ("C1", "C1b", "C1c", "C2", "C3", "C4", "C11", "C12", "C13"):
        assert values[cid]["value_ci"]["method"] == "exact", cid
    # C2: float64 variances of 7×7 sums over 16 channels and the scales' steps, plus ParchGrad's
    # ε = 1e-13 in M and N, relative to the smallest variance of the cases the toys stage ran.
    toys_table = toys.variance_identity_table(seeds=range(2), gammas=[math.inf, 2.0])
    epsilon_effect = 2e-13 / toys_table[["M", "N"]].to_numpy().min()
    assert values["C2"]["value"] <= atol(1.0, ops=7 * 7 + 16 + 8, dtype=FLOAT64) + epsilon_effect
    # C13: the checkerboard's two backward convolutions (12·7·7 and 64·7·7 terms), then ÷ k.
    assert values["C13"]["value"] <= atol(1.0, ops=12 * 49 + 64 * 49 + 2, dtype=FLOAT32)
    rounding = _relative_rounding(card)                        # C3, C4, C7: the MNIST CNN's passes
    assert values["C3"]["value"] <= rounding
    assert values["C4"]["value"] >= 1 - rounding ** 2 / 2 - atol(1.0, ops=3 * 28 * 28, dtype=FLOAT64)
    assert values["C5"]["value"] is None and "ILSVRC2012" in values["C5"]["reason"]
    assert values["C6"]["value"] is None
    assert values["C7"]["value"] == pytest.approx(0.0, abs=2 * rounding)   # sequential: no difference
    assert values["C7"]["value_ci"]["method"] == "bootstrap" and values["C7"]["value_ci"]["n"] == 3
    assert values["C7"]["per_model"] == {}                     # smoke: no ImageNet architecture
    for cid in ("C8a", "C8b", "C8c", "C9"):                    # three images, bootstrapped
        interval = values[cid]["value_ci"]
        assert interval["n"] == 3 and interval["low"] <= values[cid]["value"] <= interval["high"]
    assert values["C10"]["value"] is None and "costs" in values["C10"]["reason"]
    assert values["C11"]["value"] == json.loads((summaries / "mnist_cnn.json").read_text())[
        "shapiro_below_0.05"]["fraction"]
    assert values["C12"]["value"] < 1.0 and values["C12"]["detail"]["last_conv_jaccard"] == 1.0
    assert not any("note" in v for v in values.values())        # nothing fell back

    out = tmp_path / "figures"
    figures.run(stage_context("parchgrad_figures", outputs={"out": out}, inputs={
        **inputs, "vc_maps": maps / "vc.npz", "q_sweep_maps": maps / "q-sweep.npz"}))
    names = {p.name for p in out.iterdir()}
    for stem in ("e0_channel_portion_panels_mnist_cnn", "e1_toy_vector_sum",
                 "e2_zero_pruning_vs_vc_mnist_cnn", "e2_artifacts", "e5_pixel_removal",
                 "e6_channel_portion_sweep", "e7_gradient_scale_checkerboard"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names, stem
    for stem in ("e1_toy_summary", "e2_scale_invariance", "e4_bbox_energy",
                 "e5_faithfulness_summary", "e5_paired_comparisons", "s1_channel_statistics"):
        assert {f"{stem}.csv", f"{stem}.md"} <= names, stem
    assert "s1_dead_channels.md" not in names                 # an empty table is not drawn
    assert "not run" in (out / "e4_bbox_energy.md").read_text()
    assert all(p.stat().st_size > 0 for p in out.iterdir())


def _claim_inputs(tables: dict, **claims_settings) -> claims.Inputs:
    settings = stage_context("parchgrad_claims", parchgrad={"claims": claims_settings}).settings(
        "parchgrad.claims")
    return claims.Inputs(tables, {}, settings, seed=0)


def test_claims_of_synthetic_tables():
    sweep = pd.DataFrame({"model": "mnist_cnn", "hooks": "default", "image": ["a", "b"] * 3,
                          "q": [1.0, 1.0, 0.5, 0.5, 0.1, 0.1],
                          "spearman": [1, 1, 0.6, 0.5, 0.7, 0.6], "ssim": [1, 1, .5, .5, .4, .4],
                          "max_relative_difference": 0.0,
                          "max_relative_difference_no_shapiro": 0.0})
    summary = q_sweep.sweep_summary(sweep)
    values = claims.claim_values(_claim_inputs({"e6_q_sweep": sweep, "e6_q_sweep_summary": summary},
                                               sweep_models=["mnist_cnn"]))
    # the smallest step: 0.55 → 0.65 rises by 0.1 at q = 0.1
    assert values["C9"]["value"] == pytest.approx(-0.1)
    assert values["C9"]["detail"]["monotone_ssim"] == {"mnist_cnn": True}
    assert values["C11"]["value"] is None and values["C3"]["value"] == 0.0
    table = pd.DataFrame({"model": "m", "provided": True, "engine_method": ["gradient", "parchgrad"],
                          "forward_backward": [1, 1], "forward": [0, 0],
                          "seconds_per_map": [0.1, 0.15], "load_average_1min": 2.0})
    pairs = pd.DataFrame({"model": "m", "repeat": range(5),
                          "gradient_seconds": [0.1, 0.1, 0.2, 0.1, 0.1],
                          "parchgrad_seconds": [0.12, 0.13, 0.22, 0.11, 0.15]})
    found = claims.c10(_claim_inputs({"e3_costs": table, "e3_paired_timings": pairs},
                                     cost_model="m", architectures=[]))
    assert found["C10"]["value"] == 1 and found["C10"]["value_ci"]["method"] == "exact"
    assert found["C10"]["detail"]["fastest_time_ratio"] == pytest.approx(1.5)
    assert found["C10b"]["value"] == pytest.approx(1.2)        # the median of the ratios
    assert found["C10b"]["value_ci"]["unit"] == "timing repeats"
    assert found["C10b"]["value_ci"]["n"] == 5


def test_claim_intervals_bootstrap_the_whole_statistic_and_are_seeded():
    rng = np.random.default_rng(0)
    images = [f"i{k}" for k in range(12)]
    rows = []
    a, b = "efficientnet_lite0", "efficientnet_lite1"
    for model, shift in ((a, 0.02), (b, -0.05)):
        for q, level in ((1.0, 1.0), (0.5, 0.8), (0.1, 0.8 + shift)):
            rows += [{"model": model, "hooks": "default", "image": i, "q": q,
                      "spearman": level + 0.05 * rng.standard_normal(), "ssim": 0.5}
                     for i in images]
    sweep = pd.DataFrame(rows)
    inputs = _claim_inputs({"e6_q_sweep": sweep,
                            "e6_q_sweep_summary": q_sweep.sweep_summary(sweep)},
                           architectures=[a, b], sweep_models=[a, b], bootstrap_resamples=500)
    first, again = claims.c9(inputs), claims.c9(inputs)
    assert first == again                                       # seeded
    per_model = first["per_model"]
    # the whole statistic (the smallest step of the mean curve) against a brute-force bootstrap
    wide = sweep[sweep["model"] == b].pivot_table(index="image", columns="q",
                                                    values="spearman")[[1.0, 0.5, 0.1]]
    draws = np.random.default_rng(1).integers(0, 12, size=(4000, 12))
    brute = [claims._smallest_step(wide.to_numpy()[d]) for d in draws]
    low, high = np.percentile(brute, [2.5, 97.5])
    interval = per_model[b]["value_ci"]
    spread = high - low
    assert abs(interval["low"] - low) < 0.25 * spread and abs(interval["high"] - high) < 0.25 * spread
    # every model must hold: each side of the interval from the least favourable model
    assert first["value"] == min(v["value"] for v in per_model.values())
    assert first["value_ci"]["low"] == min(v["value_ci"]["low"] for v in per_model.values())
    assert first["value_ci"]["high"] == min(v["value_ci"]["high"] for v in per_model.values())


def test_least_favourable_interval_decides_for_every_model():
    from replication.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim, judge

    claim = Claim("X", "parchgrad", "", "", "f", "k", ">=", threshold=0)
    above, straddles, below = (stats.Interval(v, lo, hi, 10, "bootstrap")
                               for v, lo, hi in ((0.3, 0.1, 0.5), (0.2, -0.1, 0.4),
                                                 (-0.3, -0.5, -0.1)))
    for intervals, verdict in (((above, above), REPRODUCED), ((above, straddles), INCONCLUSIVE),
                               ((straddles, below), NOT_REPRODUCED)):
        combined = claims.least_favourable(dict(enumerate(intervals)))
        assert judge(claim, combined.value, combined.as_json())[0] == verdict


def test_imagenet_claims_say_when_they_fell_back_to_the_sample(tmp_path):
    (tmp_path / "ilsvrc").mkdir()
    ctx = stage_context("parchgrad_claims", inputs={"imagenet_sample": tmp_path / "sample",
                                                    "ilsvrc2012_val": tmp_path / "ilsvrc"},
                        profile="paper")
    statistics_fallback = {"resnet18": {"fallback_note": statistics.FALLBACK_NOTE}}
    notes = claims.fallback_notes(ctx, statistics_fallback)
    assert set(notes) == {"resnet18", "vgg16_bn", "efficientnet_b0", "efficientnet_lite0",
                          "efficientnet_lite1", "efficientnet_lite2"}
    assert "1000-image ImageNet sample" in notes["vgg16_bn"]
    assert statistics.FALLBACK_NOTE in notes["resnet18"]
    assert claims.fallback_notes(stage_context("parchgrad_claims", inputs={
        "imagenet_sample": tmp_path, "ilsvrc2012_val": tmp_path / "ilsvrc"}), {}) == {}
    pairs = pd.DataFrame({"model": "resnet18", "hooks": "r=0.5", "image": ["a", "b"] * 2,
                          "q": 0.1, "variant": ["vc"] * 2 + ["zero_pruning"] * 2,
                          "hf_energy": [0.1, 0.2, 0.3, 0.3], "total_variation": 1.0})
    inputs = claims.Inputs({"e2_artifacts": pairs}, {}, ctx.settings("parchgrad.claims"), 0, notes)
    c7 = claims.c7(inputs)
    assert c7["value"] == pytest.approx(0.15) and c7["note"] == notes["resnet18"]


def test_the_bug_check_is_not_run_on_instance_wise_statistics(tmp_path, setup):
    card, corrected, bug, images, _ = setup
    gaps, _ = gather_gap(card.model, [(images.images, images.labels)])
    ChannelStatistics.from_gaps(gaps, images.labels, 10, "instance",
                                meta={"fallback_note": statistics.FALLBACK_NOTE}
                                ).save(tmp_path / "resnet18.pt")
    corrected.save(tmp_path / "mnist_cnn.pt")
    ctx = stage_context("parchgrad_statistics_checks", inputs={"statistics": tmp_path})
    assert "mnist_cnn-authors-bug.pt is missing" in statistics_checks.bug_status(ctx, "mnist_cnn")
    bug.save(tmp_path / "mnist_cnn-authors-bug.pt")
    assert statistics_checks.bug_status(ctx, "mnist_cnn") == ""
    reason = statistics_checks.bug_status(ctx, "resnet18")
    assert reason.startswith("not run: the authors' bug needs class-wise statistics (ILSVRC2012 "
                             "archives)") and statistics.FALLBACK_NOTE in reason
    status = pd.DataFrame([{"model": "resnet18", "status": "not run", "reason": reason}])
    c12 = claims.c12(_claim_inputs({"s1_bug_status": status}, bug_model="resnet18"))
    assert c12["value"] is None and c12["reason"] == reason


def test_box_energy_reads_the_boxes_the_validation_stage_prepared(tmp_path):
    from replication.pipeline import get_stage

    assert get_stage("parchgrad_bbox").deps["ilsvrc2012_val"] == "datasets/ilsvrc2012_val"
    assert "data" not in get_stage("parchgrad_bbox").deps.values()
    ctx = stage_context("parchgrad_bbox", imagenet={"source": "ilsvrc2012_val"},
                        parchgrad={"bbox": {"images": {"resnet18": 2}}})
    settings = ctx.settings("parchgrad.bbox")
    assert "ILSVRC2012 validation images" in bbox.not_run_reason(ctx, settings, tmp_path)
    (tmp_path / "labels.csv").write_text("file,wnid,class_index,class_name\n")
    assert D.BOX_ARCHIVE in bbox.not_run_reason(ctx, settings, tmp_path)
    D.write_prepared_boxes({"ILSVRC2012_val_00000001": D.parse_voc_xml(
        _xml("ILSVRC2012_val_00000001", 100, 80, ("n01", 1, 2, 50, 60)))}, tmp_path / "boxes.csv")
    assert bbox.not_run_reason(ctx, settings, tmp_path) == ""
    assert D.prepared_boxes(tmp_path)["ILSVRC2012_val_00000001"].first.ymax == 60
    sample = stage_context("parchgrad_bbox", parchgrad={"bbox": {"images": {"resnet18": 2}}})
    assert "imagenet.source is the sample" in bbox.not_run_reason(sample, settings, tmp_path)


def test_every_parchgrad_stage_that_runs_models_counts_its_passes():
    from replication.config import load_params
    from replication.cost import stage_costs
    from replication.pipeline import stages

    declared = [s for name, s in stages().items() if name.startswith("parchgrad")]
    running = {"parchgrad_statistics", "parchgrad_vc", "parchgrad_q_sweep",
               "parchgrad_faithfulness", "parchgrad_costs", "parchgrad_statistics_checks",
               "parchgrad_bbox"}
    assert {s.name for s in declared if s.cost} == running
    params = load_params(ROOT / "params.yaml", "quick")
    rows = stage_costs(params, declared)
    section = params["parchgrad"]
    vc_maps = 1 + 2 * len(section["vc"]["hooks"]) * len(section["vc"]["channel_portions"])
    found = {(stage, c.model, c.what): c for stage, c in rows}
    lite0 = found[("parchgrad_vc", "efficientnet_lite0", f"E2: {vc_maps} maps per image")]
    assert lite0.forward_backward == vc_maps * section["vc"]["images"]["efficientnet_lite0"]
    subset = (section["statistics"]["subset"] or {}).get("efficientnet_lite0", 1000)
    assert found[("parchgrad_statistics", "efficientnet_lite0",
                  f"GAP over {subset:,} images (imagenet_sample)")].forward == subset
    paper = dict(((s, c.model), c) for s, c in stage_costs(load_params(ROOT / "params.yaml",
                                                                      "paper"), declared)
                 if c.what.startswith("E4"))
    assert paper[("parchgrad_bbox", "resnet18")].forward_backward == 5000 * 17


def test_figures_of_a_stand_in_run_are_stamped(tmp_path, monkeypatch):
    from replication import plotting

    seen = []
    monkeypatch.setattr(figures, "draw_all",
                        lambda sources, out: seen.append(plotting._STAMP) or [])
    for stand_in in (True, False):
        figures.run(stage_context(
            "parchgrad_figures", outputs={"out": tmp_path / str(stand_in)},
            inputs={name: tmp_path / "none" for name in (*figures.RESULTS, *figures.MAPS)},
            stand_in_weights=stand_in))
    assert seen == [figures.STAND_IN_STAMP, None] and plotting._STAMP is None


# --------------------------------------------------------------------------- the figure table

def _inventory() -> dict[str, str]:
    """Output stem -> inventory id, from the table of paper_notes/parchgrad.md §3."""
    text = (ROOT / "paper_notes" / "parchgrad.md").read_text()
    section = text.split("## 3. Figure and table inventory")[1].split("\n## ")[0]
    stems = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)]  # not at an escaped \|
        if len(cells) > 3 and re.fullmatch(r"[ES]\d", cells[1]):
            for name in re.findall(r"`([a-z0-9_<>{}]+)(?:\.[a-z/.]+)?`", cells[3]):
                stems[name.replace("<model>", "{model}")] = cells[1]
    return stems


def test_figures_table_matches_the_inventory_and_the_claims():
    stems = [figure.stem for figure in figures.FIGURES]
    assert len(set(stems)) == len(stems)
    assert set(stems) == set(_inventory()), "FIGURES and the notes' inventory list other files"
    registered = yaml.safe_load((ROOT / "claims" / "parchgrad.yaml").read_text())["claims"]
    shown = {claim["id"]: claim["figure_file"] for claim in registered if "figure_file" in claim}
    by_claim = {cid: figure for figure in figures.FIGURES for cid in figure.claims}
    assert set(by_claim) == set(shown)
    for cid, path in shown.items():
        stem = path.removeprefix("figures/parchgrad/").rsplit(".", 1)[0]
        pattern = re.escape(by_claim[cid].stem).replace(re.escape("{model}"), "[a-z0-9_]+")
        assert re.fullmatch(pattern, stem), f"{cid}'s figure {path} is not {by_claim[cid].stem}"
    for figure in figures.FIGURES:
        assert figure.tables and callable(figure.draw)


def test_the_paper_dry_run_overlay_builds_every_parchgrad_stage_settings(tmp_path):
    """The ParchGrad section of tests/paper_dry_run.yaml (the slow paper dry run's overlay)
    validates on the paper profile: the paper's models and options, smoke counts."""
    from replication.config import deep_merge, load_params
    from replication.pipeline import StageContext, extract, stages

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "tests" / "paper_dry_run.yaml").read_text())
    params["profiles"]["paper"] = deep_merge(params["profiles"]["paper"] or {}, overlay)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    resolved = load_params(tmp_path / "params.yaml", "paper")
    assert resolved["parchgrad"]["statistics"]["subset"]["resnet18"] == 16
    for name, stage in stages().items():
        if name.startswith("parchgrad"):
            context = StageContext(stage, extract(resolved, stage.reads), {}, {})
            for key in stage.reads:
                context.settings(key)
