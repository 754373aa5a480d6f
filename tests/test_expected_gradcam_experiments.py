"""Expected Grad-CAM experiments (issue 6): compute functions, claim values, figures, stages.

Everything runs on an untrained MNIST CNN (``create_model("mnist_cnn")``, seeded) and random or
synthetic images with tiny sample counts: the trained checkpoints are DVC outputs, not test
inputs. The stage test builds a fake MNIST folder of random IDX files.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from replication.attribution import create_method
from replication.claims import load_claims, lookup
from replication.data.idx import encode_idx
from replication.errors import ConfigError
from replication.experiments.common import Explainer, ImageSet
from replication.experiments.expected_gradcam import experiments as ex
from replication.experiments.expected_gradcam import figures, stages, summary
from replication.models import create_model
from replication.training import save_checkpoint

from conftest import ROOT
from tolerance import FLOAT32, FLOAT64, assert_close, assert_differs, atol, network_ops

METRICS = {"insertion": {"n_steps": 4}, "deletion": {"n_steps": 4},
           "infidelity": {"images": 2, "perturbation": "gaussian", "n_samples": 2},
           "max_sensitivity": {"images": 1, "n_samples": 1, "skip_methods": ["scorecam"]},
           "complexity": {}, "sparseness": {},
           "road_morf": {"images": 1, "percentages": [50]}}

PARAMS = {
    "seed": 0, "metric_batch_size": 32,
    "methods": {"smooth_gradcam_pp": {"n_samples": 2}, "integrated_gradcam": {"steps": 2},
                "expected_gradcam": {"n_samples": 2, "sigma": 0.15},
                "expected_gradcam_layer": {"method": "expected_gradcam", "variant": "layer_eg",
                                           "n_samples": 2},
                "expected_gradcam_pp": {"n_samples": 2}},
    "comparison": {"methods": ["gradcam", "integrated_gradcam", "scorecam", "expected_gradcam",
                               "expected_gradcam_layer", "expected_gradcam_pp"],
                   "images": 3, "method_images": {"scorecam": 1}, "panel_images": 2,
                   "metrics": METRICS},
    "saturation": {"images": 3, "alphas": 5, "data_draws": 2, "fractions": [0.1, 0.5, 1.0],
                   "method": "expected_gradcam_layer"},
    "smoothing": {"methods": ["expected_gradcam", "expected_gradcam_layer"],
                  "sigmas": [0.0, 0.3], "images": 2, "panel_images": 1,
                  "metrics": {"complexity": {}, "insertion": {"n_steps": 2}},
                  "samples": [1, 2], "stability_images": 2, "seeds": [0, 1]},
    "baselines": {"images": 2, "blur_sigma": 2.0,
                  "integrated_gradcam": {"baselines": ["zeros", "black", "blur"]}},
    "special_cases": {"images": 2, "steps": 3, "n_samples": 2, "completeness_samples": 4,
                      "completeness_pool": 4, "diagnose": ["expected_gradcam_layer"]},
}


@pytest.fixture(scope="module")
def card():
    torch.manual_seed(0)
    return create_model("mnist_cnn")


def _cam_ops(card) -> int:
    """Rounding of two CAMs of the MNIST CNN run in other batch shapes: the passes through the
    network, then the weights' spatial sums over relu2's 14×14 and the map's 64 channels."""
    return network_ops(card.model) + 3 * 14 * 14 + 64


@pytest.fixture(scope="module")
def data() -> tuple[ImageSet, ImageSet]:
    g = torch.Generator().manual_seed(1)
    images = ImageSet(torch.rand(4, 1, 28, 28, generator=g), torch.zeros(4, dtype=torch.long),
                      [f"test[{i}]" for i in range(4)], "random")
    references = ImageSet(torch.rand(6, 1, 28, 28, generator=g), torch.zeros(6, dtype=torch.long),
                          [f"train[{i}]" for i in range(6)], "random")
    return images, references


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    return Explainer(batch_size=2)


# --------------------------------------------------------------------------------- Exp. 1

def test_comparison_has_every_method_metric_and_the_stated_image_counts(card, data, explainer):
    images, references = data
    result = ex.compare_methods(card, images, references, PARAMS, explainer)
    scores = result.scores
    assert list(scores.columns) == ["model", "method", "image", "metric", "value"]
    counts = scores.groupby(["method", "metric"]).size()
    assert counts[("gradcam", "complexity")] == 3          # comparison.images
    assert counts[("gradcam", "infidelity")] == 2          # the metric's own count
    assert counts[("scorecam", "complexity")] == 1         # the method's cap
    assert ("scorecam", "max_sensitivity") not in counts   # skip_methods
    assert counts[("expected_gradcam_pp", "road_morf")] == 1
    assert set(scores["metric"]) == set(METRICS)
    assert scores["value"].notna().all()
    assert set(result.panels) == set(PARAMS["comparison"]["methods"])
    assert result.panels["gradcam"].shape == (2, 14, 14)   # raw coarse maps of relu2
    assert np.isnan(result.panels["scorecam"][1]).all() and not np.isnan(result.panels["scorecam"][0]).any()

    directions = ex.metric_directions(METRICS)
    table = ex.summarize_comparison(scores, directions, n_resamples=200)
    row = table[(table.method == "expected_gradcam") & (table.metric == "insertion")].iloc[0]
    assert row["n_pairs"] == 3 and row["reference"] == "gradcam"
    assert not math.isnan(row["p_value"])


def test_better_than_reference_follows_the_metric_direction():
    rows = []
    for i in range(8):
        rows += [("m", "gradcam", f"i{i}", "insertion", 0.5), ("m", "new", f"i{i}", "insertion", 0.6 + i / 100),
                 ("m", "gradcam", f"i{i}", "deletion", 0.5), ("m", "new", f"i{i}", "deletion", 0.6 + i / 100)]
    scores = pd.DataFrame(rows, columns=["model", "method", "image", "metric", "value"])
    table = ex.summarize_comparison(scores, {"insertion": True, "deletion": False}, n_resamples=200)
    new = table[table.method == "new"].set_index("metric")
    assert bool(new.loc["insertion", "better_than_reference"])
    assert bool(new.loc["insertion", "significantly_better"])
    assert not bool(new.loc["deletion", "better_than_reference"])   # higher deletion is worse
    # A float64 mean of 8 differences of values up to 0.67.
    assert new.loc["deletion", "difference"] == pytest.approx(0.135, abs=atol(0.67, ops=8 + 2,
                                                                                 dtype=FLOAT64))


def test_parameter_errors_are_clear(card, data):
    with pytest.raises(ConfigError, match="non-negative"):
        ex.count(-1, 5)
    with pytest.raises(ConfigError, match="reference set D"):
        ex.build_method(card, "expected_gradcam", {}, None)
    with pytest.raises(ConfigError, match="unknown baseline"):
        ex.baseline_tensors(card, data[0].images, ["grey"], None, seed=0, blur_sigma=1.0)
    assert ex.model_section({"a": {"b": 1, "c": 2}, "per_model": {"m": {"a": {"b": 5}}}}, "m") \
        == {"a": {"b": 5, "c": 2}}


# --------------------------------------------------------------------------------- Exp. 2–4

def test_saturation_curve_ends_at_one_and_alpha_star_is_on_the_grid(card, data):
    images, references = data
    result = ex.internal_saturation(card, images, references, PARAMS)
    curves = result.curves
    assert len(curves) == 3 * (1 + 2) * 5                 # images × (black + 2 draws) × α
    ends = curves[curves["alpha"] == 1.0]["cosine"]
    # float64 cosines of relu2's 64·14·14 activations: a dot product and two norms.
    rounding = atol(1.0, ops=3 * 64 * 14 * 14, dtype=FLOAT64)
    np.testing.assert_allclose(ends, 1.0, rtol=0, atol=rounding)
    assert curves["cosine"].between(-1 - rounding, 1 + rounding).all()
    assert result.alpha_star["alpha_star"].isin([0.0, 0.25, 0.5, 0.75, 1.0]).all()
    topk = result.topk
    assert set(topk["method"]) == {"gradcam", "expected_gradcam_layer"}
    assert set(topk["fraction"]) == {0.1, 0.5, 1.0}
    # All channels kept: the same forward on the same input for both methods, so exactly equal.
    full = topk[topk["fraction"] == 1.0]
    assert full.groupby("image")["probability"].nunique().max() == 1
    aucs = ex.channel_insertion_auc(topk)
    assert len(aucs) == 3 * 2 and aucs["auc"].between(0, 1).all()
    groups = ex.saturation_groups(result.alpha_star)
    assert set(groups["group"]) <= {"strong", "rest"} and len(groups) == 3


def test_smoothing_reuses_draws_across_sigma_and_reports_stability(card, data, explainer):
    images, references = data
    result = ex.smoothing(card, images, references, PARAMS, explainer)
    assert list(result.sigma.columns) == ["model", "method", "sigma", "image", "metric", "value"]
    assert set(result.sigma["sigma"]) == {0.0, 0.3}
    assert set(result.sigma["method"]) == {"expected_gradcam", "expected_gradcam_layer"}
    assert result.sigma_maps.shape == (2, 2, 1, 14, 14)     # methods × σ × images × h × w
    assert set(result.stability["n_samples"]) == {1, 2}
    # The two variants are different maps (layer-EG multiplies by A(x + ε) − A(x')).
    assert_differs(result.sigma_maps[0], result.sigma_maps[1],
                   atol(result.sigma_maps[1], ops=_cam_ops(card), dtype=FLOAT32))
    assert result.stability["value"].dropna().between(-1, 1).all()
    # Common random numbers: at σ = 0 the map equals Expected Grad-CAM run directly.
    direct = ex.build_method(card, "expected_gradcam", {"n_samples": 2, "sigma": 0.0},
                             references.images).attribute(images.images[:1], ex.predicted_classes(
                                 card.model, images.images[:1]))
    assert_close(result.sigma_maps[0, 0, 0], direct[0, 0], ops=_cam_ops(card), dtype=FLOAT32)
    bad = copy.deepcopy(PARAMS)
    bad["smoothing"]["seeds"] = [3, 3]
    with pytest.raises(ConfigError, match="two different seeds"):
        ex.smoothing(card, images, references, bad, explainer)


def test_baseline_sensitivity_compares_every_pair(card, data, explainer):
    images, references = data
    pairs = ex.baseline_sensitivity(card, images, references, PARAMS, explainer)
    igc = pairs[pairs.method == "integrated_gradcam"]
    egc = pairs[pairs.method == "expected_gradcam"]
    assert len(igc) == 2 * 3 and len(egc) == 2 * 3         # images × C(3, 2)
    assert pairs["spearman"].dropna().between(-1, 1).all()
    means = ex.mean_pairwise(pairs)
    assert set(means["method"]) == {"integrated_gradcam", "expected_gradcam"}


def test_special_cases_vanish_on_real_maps(card, data):
    images, references = data
    table = ex.special_cases(card, images, references, PARAMS)
    exact = table[table.case.isin(ex.REDUCTION_CASES)]
    assert set(exact["case"]) == set(ex.REDUCTION_CASES) and len(exact) == 3 * 2
    # relative = max|a − b| / max|b|: other batch shapes, so float32 rounding of the passes.
    rounding = atol(1.0, ops=_cam_ops(card), dtype=FLOAT32)
    assert exact["relative"].max() <= rounding
    assert (exact["scale"] > 0).all()                       # not a trivially zero map
    gaps = table[table.case.str.startswith("completeness")]
    assert set(gaps["case"]) == {"completeness_black", "completeness_data"}
    assert gaps["relative"].notna().all()
    # The layer-EG variant is not Grad-CAM on this model (a diagnostic, not a reduction).
    assert table[table.case == "configured:expected_gradcam_layer"]["relative"].min() > rounding


@pytest.mark.parametrize("variant", ["eg_weights", "layer_eg"])
def test_weight_recorder_draws_as_the_engine(card, data, variant):
    images, references = data
    options = {"references": references.images, "n_samples": 3, "sigma": 0.2, "variant": variant}
    recorder = ex._ExpectedGradCAMWeights(card, **options)
    targets = torch.tensor([1, 2])
    # The same draws and passes; the recorder may sum the weights in another order.
    assert_close(recorder.attribute(images.images[:2], targets),
                 ex.create_method("expected_gradcam", card, **options).attribute(images.images[:2], targets),
                 ops=3 * 14 * 14 + 64, dtype=FLOAT32)
    assert recorder.recorded_weights.shape == (2, 64, 1, 1)


def test_eg_weights_equals_gradcam_under_a_linear_head():
    """With global average pooling and a linear layer after the target layer, ∂y/∂A is the same
    at every input, so Expected Grad-CAM's eg_weights variant is Grad-CAM whatever σ, α, D."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3)).eval()
    x, refs = torch.rand(2, 1, 8, 8), torch.rand(5, 1, 8, 8)
    gc = create_method("gradcam", model, layer="1").attribute(x, [0, 2])
    egc = ex.build_method(model, "expected_gradcam", {"layer": "1", "n_samples": 4, "sigma": 0.5},
                          refs).attribute(x, [0, 2])
    # ∂y/∂A = W / 64 at every input; then a mean of 4 samples, 8×8 spatial means and 4 channels.
    assert_close(egc, gc, ops=4 + 3 * 8 * 8 + 4, dtype=FLOAT32)


# --------------------------------------------------------------------------------- claims

def _synthetic_scores(shift: float) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for i in range(10):
        base, jitter = rng.uniform(0.3, 0.5), rng.uniform(-0.004, 0.004)  # no ties: exact Wilcoxon
        for method, delta in (("gradcam", 0.0), ("integrated_gradcam", -0.01),
                              ("expected_gradcam", shift + jitter), ("gradcam_pp", 0.0),
                              ("expected_gradcam_pp", shift + jitter)):
            rows.append(("lite", method, f"i{i}", "insertion", base + delta))
            rows.append(("lite", method, f"i{i}", "infidelity", 1.0 - delta))
            rows.append(("lite", method, f"i{i}", "max_sensitivity", 0.5 - delta))
    return pd.DataFrame(rows, columns=["model", "method", "image", "metric", "value"])


def _claims(shift: float) -> dict:
    stars = pd.DataFrame({"model": "lite", "image": [f"i{i}" for i in range(4)],
                          "baseline": "black", "draw": 0, "alpha_star": [0.2, 0.4, 0.6, 0.9]})
    sweep = pd.DataFrame([("lite", m, s, f"i{i}", "complexity",
                           5 - s * (1 if shift > 0 else -1) * (m == "expected_gradcam"))
                          for m in ("expected_gradcam", "expected_gradcam_layer")
                          for s in (0.0, 0.1, 0.2, 0.3) for i in range(3)],
                         columns=["model", "method", "sigma", "image", "metric", "value"])
    pairs = pd.DataFrame([("lite", m, f"i{i}", "a", "b", r)
                          for i in range(6) for m, r in (("integrated_gradcam", 0.5),
                                                        ("expected_gradcam", 0.5 + shift * (1 + i)))],
                         columns=["model", "method", "image", "config_a", "config_b", "spearman"])
    special = pd.DataFrame({"model": "lite", "case": ["gradcam", "integrated_gradcam",
                                                      "completeness_black"],
                            "image": "i0", "difference": [0.0, 2e-7, 0.3], "scale": 1.0,
                            "relative": [0.0, 2e-7, 0.3]})
    return summary.claim_values(scores=_synthetic_scores(shift), alpha_star=stars, topk=None,
                                sigma_sweep=sweep, baseline_pairs=pairs, special=special,
                                section={"claims": {"models": ["lite"]},
                                         "bootstrap": {"n_resamples": 200}})


def test_claim_values_follow_the_tables_and_flip_with_the_direction():
    good, bad = _claims(+0.05), _claims(-0.05)
    assert good["C1"]["value"] == pytest.approx(0.5)        # median α*
    assert good["C2"]["value"] == pytest.approx(0.05, abs=0.004)
    assert bad["C2"]["value"] == pytest.approx(-0.05, abs=0.004)
    assert good["C2"]["n"] == 10 and good["C2"]["ci_low"] > 0 and good["C2"]["p_value"] < 0.01
    assert good["C3"]["value"] == 1 and bad["C3"]["value"] == 4   # rank among 3 + EGC
    assert good["C4"]["value"] < 0 < bad["C4"]["value"]
    assert good["C5"]["value"] == pytest.approx(1.0) and good["C5"]["rho"] == pytest.approx(-1.0)
    assert bad["C5"]["rho"] == pytest.approx(1.0)
    assert good["C6"]["value"] > 0 > bad["C6"]["value"]
    assert good["C7"]["value"] is None and "bounding boxes" in good["C7"]["reason"]
    assert good["C8"]["value"] == pytest.approx(good["C2"]["value"])
    assert bad["C8"]["value"] == pytest.approx(bad["C2"]["value"])
    assert good["C9"]["value"] == 2e-7          # the largest reduction gap, as given (exact)
    # The claims can stand on another configured variant: its σ sweep is flat here.
    layer = summary.c5_complexity(pd.DataFrame(), ["lite"], "expected_gradcam_layer")
    assert layer["value"] is None
    flat = summary.c5_complexity(_sweep_for_c5(), ["lite"], "expected_gradcam_layer")
    assert flat["value"] == 0.0


def test_claims_are_void_when_the_claim_method_is_grad_cam():
    diagnostic = pd.DataFrame({"model": "lite", "case": "configured:expected_gradcam",
                               "image": ["i0", "i1"], "difference": 0.0, "scale": 1.0,
                               "relative": 0.0})
    values = summary.claim_values(scores=_synthetic_scores(0.05), alpha_star=None, topk=None,
                                  sigma_sweep=None, baseline_pairs=None, special=diagnostic,
                                  section={"claims": {"models": ["lite"]},
                                           "bootstrap": {"n_resamples": 100}})
    assert values["claim_method_equals_gradcam"] == {"lite": True}
    assert values["C2"]["value"] is None and "coincides with Grad-CAM" in values["C2"]["reason"]
    assert values["C2"]["detail"]["lite"]["difference"] == pytest.approx(0.05, abs=0.004)


def _sweep_for_c5() -> pd.DataFrame:
    return pd.DataFrame([("lite", "expected_gradcam_layer", s, "i0", "complexity", 5.0)
                         for s in (0.0, 0.1, 0.2)],
                        columns=["model", "method", "sigma", "image", "metric", "value"])


def test_claims_file_points_at_the_claim_values():
    claims = [c for c in load_claims(ROOT / "claims") if c.paper == "expected_gradcam"]
    assert [c.id for c in claims] == [f"EGC-C{i}" for i in range(1, 10)]
    values = _claims(+0.05)
    for claim in claims:
        assert claim.ours_file == "metrics/expected_gradcam/claims.json"
        lookup(values, claim.ours_key)                      # every key exists


# --------------------------------------------------------------------------------- figures

def test_figures_render_from_small_tables(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    scores = _synthetic_scores(0.05)
    scores.to_csv(results / "comparison_scores.csv", index=False)
    table = ex.summarize_comparison(scores, {"insertion": True, "infidelity": False,
                                             "max_sensitivity": False}, n_resamples=100)
    table.to_csv(results / "comparison_summary.csv", index=False)
    pd.DataFrame({"model": "lite", "image": "i0", "baseline": "black", "draw": 0,
                  "alpha": [0.0, 0.5, 1.0], "cosine": [0.2, 0.9, 1.0], "logit": 1.0,
                  "probability": 0.5}).to_csv(results / "saturation_curves.csv", index=False)
    pd.DataFrame({"model": "lite", "image": ["i0", "i1"], "baseline": "black", "draw": 0,
                  "alpha_star": [0.5, 1.0]}).to_csv(results / "saturation_alpha_star.csv", index=False)
    np.savez(results / "panels.npz", **{
        "lite/images": np.zeros((2, 8, 8, 3), np.uint8), "lite/names": np.array(["n0_a.JPEG", "b"]),
        "lite/targets": np.array([0, 1]), "lite/methods": np.array(["gradcam", "expected_gradcam"]),
        "lite/maps": np.stack([np.random.default_rng(0).random((2, 2, 2)),
                               np.full((2, 2, 2), np.nan)]).astype(np.float32)})
    written = figures.make_figures(results, tmp_path / "figures", profile="smoke", n_resamples=100)
    names = {p.name for p in written}
    for stem in ("fig01_qualitative_lite", "fig02_internal_saturation", "fig05_insertion_deletion",
                 "fig06_infidelity", "fig12_raw_coarse_maps_lite"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    assert {"table01_comparison.md", "table02_saturation.csv",
            "table06_expected_gradcam_pp.csv"} <= names
    assert "smoke profile; the paper used VGG-16/ResNet-50" in \
        (tmp_path / "figures" / "table01_comparison.md").read_text()
    assert {s for s, *_ in figures.INVENTORY} >= {"fig02_internal_saturation", "table07_special_cases"}


# --------------------------------------------------------------------------------- stages

def test_stages_write_every_output_from_params(tmp_path, card):
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 10)):
        (mnist / f"{split}-images-idx3-ubyte").write_bytes(
            encode_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        (mnist / f"{split}-labels-idx1-ubyte").write_bytes(
            encode_idx(rng.integers(0, 10, n, dtype=np.uint8)))
    checkpoint = tmp_path / "mnist-cnn-true.pt"
    save_checkpoint(checkpoint, card.model, {})
    section = {**copy.deepcopy(PARAMS), "models": ["mnist_cnn"], "threads": 1, "batch_size": 2,
               "bootstrap": {"n_resamples": 100}, "claims": {"models": ["mnist_cnn"]},
               "data": {"mnist": {"images": 3, "reference_images": 6, "reference_offset": 30}}}
    params = {"seed": 0, "profile": "smoke", "expected_gradcam": section}
    paths = stages.DataPaths(mnist=mnist, mnist_checkpoint=checkpoint)
    results, metrics = tmp_path / "results", tmp_path / "metrics"
    for stage in stages.OUTPUTS:
        getattr(stages, f"run_{stage}")(params, data=paths, results=results, metrics=metrics)
        for name in stages.OUTPUTS[stage]:
            assert (results / name).is_file(), name
        assert (metrics / f"{stage}.json").is_file()
    values = stages.run_claims(params, results=results, out=metrics / "claims.json")
    written = json.loads((metrics / "claims.json").read_text())
    assert set(written) >= {f"C{i}" for i in range(1, 10)}
    # The JSON keeps a float64 exactly (repr round-trips); C9 is a reduction gap: rounding only.
    assert written["C9"]["value"] == values["C9"]["value"]
    assert written["C9"]["value"] <= atol(1.0, ops=_cam_ops(card), dtype=FLOAT32)
    scores = pd.read_csv(results / "comparison_scores.csv")
    assert set(scores["image"]) == {"test[0]", "test[1]", "test[2]"}
