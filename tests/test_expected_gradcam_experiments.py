"""Expected Grad-CAM experiments (issue 6): compute functions, claim values, figures, stages.

Everything runs on an untrained MNIST CNN (``create_model("mnist_cnn")``, seeded) and random or
synthetic images with tiny sample counts: the trained checkpoints are DVC outputs, not test
inputs. Settings are the smoke profile's for the MNIST CNN, shrunk where a test says so. The
stage test builds a fake MNIST folder of random IDX files.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from replication.attribution import Explainer, create_method
from replication.claims import load_claims, lookup
from replication.config import load_params
from replication.data.idx import encode_idx
from replication.errors import ConfigError
from replication.experiments.common import ImageSet, predicted_classes
from replication.experiments.expected_gradcam import (baselines, claims, comparison, costs,
                                                      figures, localisation, saturation,
                                                      smoothing, special_cases)
from replication.experiments.expected_gradcam.drawing import View
from replication.experiments.expected_gradcam.loading import Loaded
from replication.experiments.expected_gradcam.methods import build_method
from replication.experiments.expected_gradcam.settings import Bootstrap, Claims
from replication.experiments.expected_gradcam.stages import STAGES, TABLES
from replication.models import create_model
from replication.training import save_checkpoint

from conftest import ROOT, stage_context
from tolerance import FLOAT32, FLOAT64, assert_close, assert_differs, atol, network_ops

MODEL = "mnist_cnn"
BOOTSTRAP = Bootstrap(n_resamples=200, confidence=0.95, alpha=0.05)


def settings_of(stage: str, key: str, **mnist) -> object:
    """``expected_gradcam.<key>`` of ``stage`` for the MNIST CNN under the smoke profile, with
    ``mnist`` merged over the model's section."""
    ctx = stage_context(stage, expected_gradcam={"models": {MODEL: mnist}})
    return ctx.settings(f"expected_gradcam.{key}", model=MODEL)


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    torch.manual_seed(0)
    card = create_model(MODEL)
    g = torch.Generator().manual_seed(1)
    images = ImageSet(torch.rand(4, 1, 28, 28, generator=g), torch.zeros(4, dtype=torch.long),
                      [f"test[{i}]" for i in range(4)], "random")
    references = ImageSet(torch.rand(6, 1, 28, 28, generator=g), torch.zeros(6, dtype=torch.long),
                          [f"train[{i}]" for i in range(6)], "random")
    return Loaded(MODEL, card, images, references, {"model": MODEL})


def _cam_ops(card) -> int:
    """Rounding of two CAMs of the MNIST CNN run in other batch shapes: the passes through the
    network, then the weights' spatial sums over relu2's 14×14 and the map's 64 channels."""
    return network_ops(card.model) + 3 * 14 * 14 + 64


@pytest.fixture(scope="module")
def methods() -> dict:
    return settings_of("egc_comparison", "methods")


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    return Explainer(batch_size=2)


# --------------------------------------------------------------------------------- settings

def test_the_base_is_the_papers_and_profiles_state_their_changes():
    paper = load_params(ROOT / "params.yaml", "paper")["expected_gradcam"]
    quick = load_params(ROOT / "params.yaml", "quick")["expected_gradcam"]
    assert paper["run_models"] == ["vgg16", "resnet50"] and paper["models"] == {}
    assert paper["comparison"]["metrics"]["insertion"] == {"images": 1000, "n_steps": None,
                                                           "step": 224}
    assert quick["comparison"]["metrics"]["insertion"] == {"images": 24, "n_steps": 8,
                                                           "step": None}
    mnist = quick["models"][MODEL]
    assert mnist["comparison"]["metrics"]["insertion"] == {"images": 100, "n_steps": 16,
                                                           "step": None}
    assert mnist["methods"]["expected_gradcam"]["n_samples"] == 50
    smoke = load_params(ROOT / "params.yaml", "smoke")["expected_gradcam"]
    assert smoke["models"][MODEL]["saturation"]["alphas"] == 5   # the profile beats the base


def _params_with(tmp_path, edit) -> object:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["profiles"]["quick"]["expected_gradcam"]["comparison"]["metrics"]["insertion"]
     .pop("step"), r"insertion sets both n_steps \(8\) and step \(224\).*set the other to null"),
    (lambda r: r["expected_gradcam"]["comparison"]["metrics"]["deletion"].update(stepz=3),
     r"metrics.deletion.stepz: unknown option of deletion; did you mean 'step'"),
    (lambda r: r["expected_gradcam"]["smoothing"]["metrics"]["complexity"].update(images=-1),
     r"smoothing.*metrics.complexity.images is -1; it must be >= 0"),
    (lambda r: r["expected_gradcam"]["methods"]["expected_gradcam"].update(n_sample=3),
     r"methods.expected_gradcam.n_sample: expected_gradcam has no such parameter; did you mean "
     r"'n_samples'"),
    (lambda r: r["expected_gradcam"]["smoothing"].update(seeds=[3, 3]), "two different seeds"),
    (lambda r: r["expected_gradcam"]["labels"].pop("expected_gradcam_layer"),
     r"labels.expected_gradcam_layer"),
    (lambda r: r["expected_gradcam"]["comparison"]["method_images"].update(scorcam=1),
     r"comparison.method_images names 'scorcam'.*did you mean 'scorecam'"),
    (lambda r: r["expected_gradcam"]["comparison"]["methods"].append("gradcam_plus"),
     r"comparison.methods names 'gradcam_plus'.*did you mean 'gradcam_pp'"),
    (lambda r: r["profiles"]["quick"]["expected_gradcam"]["smoothing"].update(methods=["gradcam"]),
     r"smoothing.methods: 'gradcam' is not an Expected Grad-CAM method"),
])
def test_settings_errors_name_the_key_and_the_fix(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        load_params(_params_with(tmp_path, edit), "quick")


def test_a_method_that_needs_d_says_so(loaded):
    with pytest.raises(ConfigError, match="reference set D"):
        build_method(loaded.card, "expected_gradcam", {}, None)
    with pytest.raises(ConfigError, match="unknown baseline"):
        baselines.baseline_tensors(loaded.card, loaded.images.images, ["grey"],
                                   loaded.references.images, seed=0, blur_sigma=1.0)


# --------------------------------------------------------------------------------- Exp. 1

def test_comparison_has_every_method_metric_and_the_stated_image_counts(loaded, methods,
                                                                        explainer):
    chosen = ["gradcam", "integrated_gradcam", "scorecam", "expected_gradcam",
              "expected_gradcam_layer", "expected_gradcam_pp"]
    settings = settings_of("egc_comparison", "comparison", comparison={
        "methods": chosen, "method_images": {"scorecam": 1},
        "metrics": {"max_sensitivity": {"skip_methods": ["scorecam"]},
                    "road_morf": {"images": 1}}})
    result = comparison.compare_methods(loaded, settings, methods, explainer, seed=0,
                                        batch_size=32)
    scores = result.scores
    assert list(scores.columns) == ["model", "method", "image", "metric", "value"]
    counts = scores.groupby(["method", "metric"]).size()
    assert counts[("gradcam", "complexity")] == 3          # comparison.images
    assert counts[("gradcam", "infidelity")] == 2          # the metric's own count
    assert counts[("scorecam", "complexity")] == 1         # the method's cap
    assert ("scorecam", "max_sensitivity") not in counts   # skip_methods
    assert counts[("expected_gradcam_pp", "road_morf")] == 1
    assert set(scores["metric"]) == set(settings.metrics)
    assert scores["value"].notna().all()
    assert set(result.panels) == set(chosen)
    assert result.panels["gradcam"].shape == (2, 14, 14)   # raw coarse maps of relu2
    assert np.isnan(result.panels["scorecam"][1]).all()
    assert not np.isnan(result.panels["scorecam"][0]).any()

    directions = {m: True for m in ("insertion", "sparseness", "road_lerf")}
    table = comparison.summarize_comparison(
        scores, {m: directions.get(m, False) for m in settings.metrics}, BOOTSTRAP, seed=0)
    row = table[(table.method == "expected_gradcam") & (table.metric == "insertion")].iloc[0]
    assert row["n_pairs"] == 2 and row["reference"] == "gradcam"
    assert not math.isnan(row["p_value"])


def test_better_than_reference_follows_the_metric_direction():
    rows = []
    for i in range(8):
        rows += [("m", "gradcam", f"i{i}", "insertion", 0.5),
                 ("m", "new", f"i{i}", "insertion", 0.6 + i / 100),
                 ("m", "gradcam", f"i{i}", "deletion", 0.5),
                 ("m", "new", f"i{i}", "deletion", 0.6 + i / 100)]
    scores = pd.DataFrame(rows, columns=comparison.SCORE_COLUMNS)
    table = comparison.summarize_comparison(scores, {"insertion": True, "deletion": False},
                                            BOOTSTRAP, seed=0)
    new = table[table.method == "new"].set_index("metric")
    assert bool(new.loc["insertion", "better_than_reference"])
    assert bool(new.loc["insertion", "significantly_better"])
    assert not bool(new.loc["deletion", "better_than_reference"])   # higher deletion is worse
    # A float64 mean of 8 differences of values up to 0.67.
    assert new.loc["deletion", "difference"] == pytest.approx(0.135, abs=atol(0.67, ops=8 + 2,
                                                                                 dtype=FLOAT64))
    reference = table[table.method == "gradcam"].iloc[0]
    assert reference["n_pairs"] == 0 and reference["better_than_reference"] is None


# --------------------------------------------------------------------------------- Exp. 2–4

def test_saturation_curve_ends_at_one_and_alpha_star_is_on_the_grid(loaded, methods):
    settings = settings_of("egc_saturation", "saturation", saturation={
        "images": 3, "data_draws": 2, "fractions": [0.1, 0.5, 1.0]})
    result = saturation.internal_saturation(loaded, settings, methods, seed=0)
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
    aucs = saturation.channel_insertion_auc(topk)
    assert len(aucs) == 3 * 2 and aucs["auc"].between(0, 1).all()
    groups = saturation.saturation_groups(result.alpha_star)
    assert set(groups["group"]) <= {"strong", "rest"} and len(groups) == 3


def test_topk_ranks_the_channels_by_the_engines_weights(loaded, methods):
    """Layer-EG's channel weights are the GAP of Φ, which the map sums over channels."""
    x = loaded.images.images[:2]
    targets = predicted_classes(loaded.card.model, x)
    method = build_method(loaded.card, "expected_gradcam_layer",
                          methods["expected_gradcam_layer"], loaded.references.images)
    ones, phi = method.activations_and_weights(x, targets)
    assert torch.equal(ones, torch.ones_like(phi))
    # Exact: the same draws and passes on the same inputs; Φ · 1 is Φ.
    assert torch.equal(method.attribute(x, targets), torch.relu(phi.sum(1, keepdim=True)))


def test_smoothing_reuses_draws_across_sigma_and_reports_stability(loaded, methods, explainer):
    settings = settings_of("egc_smoothing", "smoothing")
    result = smoothing.smoothing(loaded, settings, methods, explainer, seed=0, batch_size=32)
    assert list(result.sigma.columns) == ["model", "method", "sigma", "image", "metric", "value"]
    assert set(result.sigma["sigma"]) == {0.0, 0.3}
    assert set(result.sigma["method"]) == {"expected_gradcam", "expected_gradcam_layer"}
    assert result.sigma_maps.shape == (2, 2, 1, 14, 14)     # methods × σ × images × h × w
    assert set(result.stability["n_samples"]) == {1, 2}
    # The two variants are different maps (layer-EG multiplies by A(x + ε) − A(x')).
    assert_differs(result.sigma_maps[0], result.sigma_maps[1],
                   atol(result.sigma_maps[1], ops=_cam_ops(loaded.card), dtype=FLOAT32))
    assert result.stability["value"].dropna().between(-1, 1).all()
    # Common random numbers: at σ = 0 the map equals Expected Grad-CAM run directly.
    x = loaded.images.images[:1]
    direct = build_method(loaded.card, "expected_gradcam",
                          {**methods["expected_gradcam"], "sigma": 0.0},
                          loaded.references.images).attribute(
                              x, predicted_classes(loaded.card.model, x))
    assert_close(result.sigma_maps[0, 0, 0], direct[0, 0], ops=_cam_ops(loaded.card),
                 dtype=FLOAT32)


def test_baseline_sensitivity_compares_every_pair(loaded, methods, explainer):
    settings = settings_of("egc_baselines", "baselines", baselines={
        "methods": ["expected_gradcam"],
        "integrated_gradcam": {"baselines": ["zeros", "black", "blur"]}})
    pairs = baselines.baseline_sensitivity(loaded, settings, methods, explainer, seed=0)
    igc = pairs[pairs.method == "integrated_gradcam"]
    egc = pairs[pairs.method == "expected_gradcam"]
    assert len(igc) == 2 * 3 and len(egc) == 2 * 3         # images × C(3, 2)
    assert pairs["spearman"].dropna().between(-1, 1).all()
    means = baselines.mean_pairwise(pairs)
    assert set(means["method"]) == {"integrated_gradcam", "expected_gradcam"}


def test_special_cases_vanish_on_real_maps(loaded, methods):
    settings = settings_of("egc_special_cases", "special_cases",
                           special_cases={"steps": 3, "diagnose": ["expected_gradcam_layer"]})
    table = special_cases.special_cases(loaded, settings, methods, batch=2)
    exact = table[table.case.isin(special_cases.REDUCTION_CASES)]
    assert set(exact["case"]) == set(special_cases.REDUCTION_CASES) and len(exact) == 3 * 2
    # relative = max|a − b| / max|b|: other batch shapes, so float32 rounding of the passes.
    rounding = atol(1.0, ops=_cam_ops(loaded.card), dtype=FLOAT32)
    assert exact["relative"].max() <= rounding
    assert (exact["scale"] > 0).all()                       # not a trivially zero map
    gaps = table[table.case.str.startswith("completeness")]
    assert set(gaps["case"]) == {"completeness_black", "completeness_data"}
    assert gaps["relative"].notna().all()
    # The layer-EG variant is not Grad-CAM on this model (a diagnostic, not a reduction).
    assert table[table.case == "configured:expected_gradcam_layer"]["relative"].min() > rounding


def test_eg_weights_equals_gradcam_under_a_linear_head():
    """With global average pooling and a linear layer after the target layer, ∂y/∂A is the same
    at every input, so Expected Grad-CAM's eg_weights variant is Grad-CAM whatever σ, α, D."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3)).eval()
    x, refs = torch.rand(2, 1, 8, 8), torch.rand(5, 1, 8, 8)
    gc = create_method("gradcam", model, layer="1").attribute(x, [0, 2])
    egc = build_method(model, "expected_gradcam", {"layer": "1", "n_samples": 4, "sigma": 0.5},
                       refs).attribute(x, [0, 2])
    # ∂y/∂A = W / 64 at every input; then a mean of 4 samples, 8×8 spatial means and 4 channels.
    assert_close(egc, gc, ops=4 + 3 * 8 * 8 + 4, dtype=FLOAT32)


# --------------------------------------------------------------------------------- claims

PAIRING = claims.Pairing(BOOTSTRAP, 0, {"insertion": True, "infidelity": False,
                                        "max_sensitivity": False})


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
    return pd.DataFrame(rows, columns=comparison.SCORE_COLUMNS)


def _tables(shift: float) -> dict:
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
                         columns=baselines.PAIR_COLUMNS)
    special = pd.DataFrame({"model": "lite", "case": ["gradcam", "integrated_gradcam",
                                                      "completeness_black"],
                            "image": "i0", "difference": [0.0, 2e-7, 0.3], "scale": 1.0,
                            "relative": [0.0, 2e-7, 0.3]})
    return {"scores": _synthetic_scores(shift), "alpha_star": stars, "topk": pd.DataFrame(),
            "sigma_sweep": sweep, "pairs": pairs, "special_cases": special}


CLAIMS = Claims(models=("lite",), architectures=("lite",), method="expected_gradcam",
                substitute_models=())


def test_claim_values_follow_the_tables_and_flip_with_the_direction():
    good = claims.claim_values(_tables(+0.05), CLAIMS, PAIRING, "no boxes in this run")
    bad = claims.claim_values(_tables(-0.05), CLAIMS, PAIRING)
    assert good["C1"]["value"] == pytest.approx(0.5)        # median α*
    assert good["C2"]["value"] == pytest.approx(0.05, abs=0.004)
    assert bad["C2"]["value"] == pytest.approx(-0.05, abs=0.004)
    interval = good["C2"]["value_ci"]
    assert good["C2"]["n"] == interval["n"] == 10 and interval["method"] == "bootstrap"
    assert interval["low"] > 0 and good["C2"]["p_value"] < 0.01
    assert good["C3"]["value"] == 1 and bad["C3"]["value"] == 4   # rank among 3 + EGC
    assert good["C4"]["value"] < 0 < bad["C4"]["value"]
    assert good["C5"]["value"] == pytest.approx(1.0) and good["C5"]["rho"] == pytest.approx(-1.0)
    assert bad["C5"]["rho"] == pytest.approx(1.0)
    assert good["C6"]["value"] > 0 > bad["C6"]["value"]
    assert good["C7"]["value"] is None and good["C7"]["reason"] == "no boxes in this run"
    assert good["C8"]["value"] == pytest.approx(good["C2"]["value"])
    assert bad["C8"]["value"] == pytest.approx(bad["C2"]["value"])
    assert good["C9"]["value"] == 2e-7          # the largest reduction gap, as given (exact)
    assert good["C9"]["value_ci"]["method"] == "exact"
    for key in ("C1", "C2", "C3", "C4", "C5", "C6", "C8"):      # every sampled claim: an interval
        interval = good[key]["value_ci"]
        assert interval["method"] == "bootstrap" and interval["n"] == good[key]["n"] >= 3, key
        assert interval["low"] <= good[key]["value"] <= interval["high"], key
    # The claims can stand on another configured variant: its σ sweep is flat here.
    assert claims.c5_complexity(pd.DataFrame(), CLAIMS, PAIRING,
                                "expected_gradcam_layer")["value"] is None
    flat = pd.DataFrame([("lite", "expected_gradcam_layer", s, "i0", "complexity", 5.0)
                         for s in (0.0, 0.1, 0.2)],
                        columns=["model", "method", "sigma", "image", "metric", "value"])
    assert claims.c5_complexity(flat, CLAIMS, PAIRING, "expected_gradcam_layer")["value"] == 0.0


def test_claims_are_void_when_the_claim_method_is_grad_cam():
    diagnostic = pd.DataFrame({"model": "lite", "case": "configured:expected_gradcam",
                               "image": ["i0", "i1"], "difference": 0.0, "scale": 1.0,
                               "relative": 0.0})
    values = claims.claim_values({"scores": _synthetic_scores(0.05),
                                  "special_cases": diagnostic}, CLAIMS, PAIRING)
    assert values["claim_method_equals_gradcam"] == {"lite": True}
    assert values["C2"]["value"] is None and "coincides with Grad-CAM" in values["C2"]["reason"]
    assert values["C2"]["detail"]["lite"]["difference"] == pytest.approx(0.05, abs=0.004)


def test_claims_file_points_at_the_claim_values():
    found = [c for c in load_claims(ROOT / "claims") if c.paper == "expected_gradcam"]
    assert [c.id for c in found] == [f"EGC-C{i}" for i in range(1, 10)]
    values = claims.claim_values(_tables(+0.05), CLAIMS, PAIRING)
    for claim in found:
        assert claim.ours_file == "metrics/expected_gradcam/claims.json"
        lookup(values, claim.ours_key)                      # every key exists


# --------------------------------------------------------------------------------- figures

def _inventory() -> dict[str, tuple[set[str], set[str]]]:
    """paper_notes §3: stem → (the tables it is drawn from, the claims it shows)."""
    text = (ROOT / "paper_notes" / "expected_gradcam.md").read_text()
    found = {}
    for row in re.findall(r"^\| `((?:fig|table)\d\d[^`]*)`[^|]*\|[^|]*\|([^|]*)\|[^|]*\|([^|]*)\|",
                          text, re.M):
        stem, sources, claim = row
        numbers = set()
        for first, last in re.findall(r"C(\d)(?:–C?(\d))?", claim):
            numbers |= {f"EGC-C{i}" for i in range(int(first), int(last or first) + 1)}
        found[stem.replace("<model>", "{model}")] = (set(re.findall(r"`([^`]+)`", sources)),
                                                     numbers)
    return found


def test_figures_table_matches_the_inventory_and_the_claims():
    inventory = _inventory()
    assert [f.stem for f in figures.FIGURES] == list(inventory)
    for entry in figures.FIGURES:
        sources, numbers = inventory[entry.stem]
        assert {TABLES[s].rsplit("/", 1)[1] for s in entry.sources} == sources, entry.stem
        assert set(entry.claims) == numbers, entry.stem
    by_stem = {f.stem: f for f in figures.FIGURES}
    for claim in load_claims(ROOT / "claims"):
        if claim.paper == "expected_gradcam" and claim.figure_file:
            stem = claim.figure_file.rsplit("/", 1)[1].rsplit(".", 1)[0]
            assert claim.id in by_stem[stem].claims, claim.id


def test_figures_render_from_small_tables(tmp_path):
    scores = _synthetic_scores(0.05)
    directions = {"insertion": True, "infidelity": False, "max_sensitivity": False}
    summary = comparison.summarize_comparison(scores, directions, BOOTSTRAP, seed=0)
    panels = {"lite/images": np.zeros((2, 8, 8, 3), np.uint8),
              "lite/names": np.array(["n0_a.JPEG", "b"]), "lite/targets": np.array([0, 1]),
              "lite/methods": np.array(["gradcam", "expected_gradcam"]),
              "lite/maps": np.stack([np.random.default_rng(0).random((2, 2, 2)),
                                     np.full((2, 2, 2), np.nan)]).astype(np.float32)}
    sources = {name: pd.DataFrame() for name in TABLES} | {
        "scores": scores, "summary": summary, "panels": panels, "sigma_panels": {},
        "curves": pd.DataFrame({"model": "lite", "image": "i0", "baseline": "black", "draw": 0,
                                "alpha": [0.0, 0.5, 1.0], "cosine": [0.2, 0.9, 1.0],
                                "logit": 1.0, "probability": 0.5}),
        "alpha_star": pd.DataFrame({"model": "lite", "image": ["i0", "i1"], "baseline": "black",
                                    "draw": 0, "alpha_star": [0.5, 1.0]})}
    view = View("smoke", {}, BOOTSTRAP, 0, directions, figures.tables_note(summary, "smoke"))
    written = figures.draw_figures(sources, view, tmp_path)
    names = {p.name for p in written}
    for stem in ("fig01_qualitative_lite", "fig02_internal_saturation", "fig05_insertion_deletion",
                 "fig06_infidelity", "fig12_raw_coarse_maps_lite"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    assert {"table01_comparison.md", "table06_expected_gradcam_pp.csv"} <= names
    assert "table02_saturation.csv" not in names            # no top-k table: skipped
    assert "smoke profile; the paper used VGG-16/ResNet-50" in \
        (tmp_path / "table01_comparison.md").read_text()


# --------------------------------------------------------------------------------- stages

def _fake_mnist(folder) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 10)):
        (folder / f"{split}-images-idx3-ubyte").write_bytes(
            encode_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(
            encode_idx(rng.integers(0, 10, n, dtype=np.uint8)))


class DevicePlacements:
    """Records where a stage puts things: every ``nn.Module.to`` and the device setting the
    stage resolves (to ``SENTINEL``, a CPU device of its own name, which ``.to`` calls must
    receive), and every module that ran a forward."""

    SENTINEL = torch.device("cpu", 0)

    def __init__(self, monkeypatch):
        import replication.experiments.common as common

        self.settings, self.placed, self.called = [], [], {}
        monkeypatch.setattr(common, "resolve_device",
                            lambda setting: self.settings.append(setting) or self.SENTINEL)
        to = torch.nn.Module.to

        def recording_to(module, *args, **kwargs):
            self.placed.append((module, torch._C._nn._parse_to(*args, **kwargs)[0]))
            return to(module, *args, **kwargs)

        monkeypatch.setattr(torch.nn.Module, "to", recording_to)
        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(self._called)

    def _called(self, module, inputs) -> None:  # a pre-hook returning a value replaces inputs
        self.called.setdefault(id(module), module)

    def unplaced(self) -> list[str]:
        """Modules with parameters that ran a forward without being placed on the sentinel
        (their own ``.to`` or a parent's)."""
        placed = {id(m) for root, device in self.placed if device == self.SENTINEL
                  for m in root.modules()}
        return [type(m).__name__ for key, m in self.called.items()
                if key not in placed and any(True for _ in m.parameters(recurse=False))]


@pytest.fixture
def devices(monkeypatch):
    placements = DevicePlacements(monkeypatch)
    yield placements
    placements.handle.remove()


def test_stages_write_every_output_from_params_on_the_configured_device(tmp_path, loaded,
                                                                        devices):
    """Every stage, in pipeline order, on the MNIST CNN: the smoke profile shrunk. Every model
    that runs (maps, metric forwards, saturation paths, special cases) was placed on the
    device the ``device`` setting names."""
    _fake_mnist(tmp_path / "mnist")
    checkpoint = tmp_path / "mnist-cnn-true.pt"
    save_checkpoint(checkpoint, loaded.card.model, {})
    data = {"imagenet_sample": tmp_path / "none", "ilsvrc2012": tmp_path / "none",
            "mnist": tmp_path / "mnist", "mnist_checkpoint": checkpoint}
    shrunk = {"run_models": [MODEL], "claims": {"models": [MODEL]},
              "models": {MODEL: {"data": {"mnist": {"images": 3, "reference_images": 6,
                                                    "reference_offset": 30}},
                                 "comparison": {"methods": ["gradcam", "gradcam_pp",
                                                            "integrated_gradcam",
                                                            "expected_gradcam",
                                                            "expected_gradcam_layer",
                                                            "expected_gradcam_pp"]}}}}
    for stage in STAGES:
        outputs = {name: tmp_path / out.path for name, out in stage.outs.items()}
        inputs = data if "mnist" in stage.deps else {name: tmp_path / path
                                                     for name, path in stage.deps.items()}
        ctx = stage_context(stage.name, inputs=inputs, outputs=outputs,
                            expected_gradcam=shrunk, device="cuda:7")
        stage.function()(ctx)
        for name, path in outputs.items():
            assert path.exists(), (stage.name, name)
    written = json.loads((tmp_path / "metrics/expected_gradcam/claims.json").read_text())
    assert set(written) >= {f"C{i}" for i in range(1, 10)}
    # C9 is a reduction gap: rounding only.
    assert written["C9"]["value"] <= atol(1.0, ops=_cam_ops(loaded.card), dtype=FLOAT32)
    scores = pd.read_csv(tmp_path / TABLES["scores"])
    assert set(scores["image"]) == {"test[0]", "test[1]", "test[2]"}
    assert (tmp_path / "figures/expected_gradcam/table07_special_cases.md").is_file()
    assert set(devices.settings) == {"cuda:7"}     # each experiment resolved the setting …
    experiments = [s for s in STAGES if s.name not in ("egc_claims", "egc_figures",
                                                       "egc_localisation")]
    assert len(devices.settings) == len(experiments)
    assert len(devices.called) > 0
    assert devices.unplaced() == []                 # … and ran every model there


# ----------------------------------------------------------------------- localisation (C7)


def test_energy_in_the_box_and_the_pointing_hit():
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0       # ¾ of the energy in the box, the peak too
    maps[1, 0, 0], maps[1, 3, 3] = -5.0, 2.0      # negative values are clipped: all outside
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    energy, hits = localisation.energy_and_hits(maps, masks)
    assert energy[0] == pytest.approx(0.75) and hits[0] == 1.0
    assert energy[1] == 0.0 and hits[1] == 0.0
    assert math.isnan(energy[2])                  # an all-zero map has no energy to place


def test_box_masks_map_the_boxes_into_the_crop(tmp_path):
    from replication.data.boxes import Box, BoxAnnotation, write_prepared_boxes
    from replication.errors import DataError
    from replication.models.base import Preprocessing

    crop = Preprocessing(input_size=8, channels=3, mean=(0.0,) * 3, std=(1.0,) * 3, resize=8)
    annotation = BoxAnnotation("ILSVRC2012_val_00000001", 16, 16,
                               (Box("n0", 0, 0, 7.9, 7.9), Box("n0", 12, 12, 16, 16)))
    write_prepared_boxes({annotation.stem: annotation}, tmp_path / "boxes.csv")
    masks = localisation.box_masks(["ILSVRC2012_val_00000001.JPEG"], tmp_path, crop)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:4, :4] = expected[6:, 6:] = True    # the union of both boxes, scaled by ½
    assert masks.shape == (1, 8, 8) and torch.equal(masks[0], expected)
    with pytest.raises(DataError, match="no box for ILSVRC2012_val_00000002"):
        localisation.box_masks(["ILSVRC2012_val_00000002.JPEG"], tmp_path, crop)


def test_localisation_scores_each_method_and_c7_pairs_them(loaded, methods, explainer):
    settings = settings_of("egc_localisation", "localisation")
    everywhere = torch.ones(len(loaded.images), 28, 28, dtype=torch.bool)
    table = localisation.localisation(loaded, settings, methods, explainer, everywhere)
    n = min(settings.images or len(loaded.images), len(loaded.images))
    assert len(table) == len(settings.methods) * 2 * n
    energy = table[table.metric == localisation.ENERGY]["value"].dropna()
    assert len(energy) > 0 and np.allclose(energy, 1.0)   # the whole image is the box
    assert set(table[table.metric == localisation.HIT]["value"]) <= {1.0}
    # C7 from a table where Expected Grad-CAM puts more energy in the boxes than Grad-CAM.
    rows = [("lite", m, f"i{i}", localisation.ENERGY, 0.4 + 0.01 * i + (0.1 if m != "gradcam"
                                                                          else 0.0))
            for i in range(8) for m in ("gradcam", "expected_gradcam")]
    c7 = claims.c7_localisation(pd.DataFrame(rows, columns=localisation.COLUMNS), CLAIMS,
                                PAIRING, "")
    assert c7["value"] == pytest.approx(0.1)
    assert c7["value_ci"]["method"] == "bootstrap" and c7["value_ci"]["n"] == 8
    assert claims.c7_localisation(pd.DataFrame(columns=localisation.COLUMNS), CLAIMS, PAIRING,
                                  "no boxes")["reason"] == "no boxes"


def test_localisation_says_why_it_did_not_run_without_ilsvrc2012():
    ctx = stage_context("egc_localisation", imagenet={"source": "sample"})
    folder, reason = localisation.box_folder(ctx)
    assert folder is None and "ilsvrc2012_val" in reason


# -------------------------------------------------------------------------------------- cost


def test_costs_count_the_passes_the_settings_imply():
    from replication.cost import stage_costs
    from replication.metrics.faithfulness import pixel_counts

    params = load_params(ROOT / "params.yaml", profile="quick")
    egc = [s for s in STAGES if s.name not in ("egc_claims", "egc_figures")]
    assert all(s.cost for s in egc)
    rows = stage_costs(params, egc)
    by_stage = {name for name, _ in rows}
    # every experiment but localisation (the quick profile has no boxes) costs something
    assert by_stage == {s.name for s in egc} - {"egc_localisation"}
    quick = params["expected_gradcam"]
    lite0 = quick["comparison"]["images"]
    gradcam = [c for name, c in rows if name == "egc_comparison"
               and c.model == "efficientnet_lite0" and c.what == "comparison: gradcam maps"]
    assert gradcam == [costs.Cost("efficientnet_lite0", "comparison: gradcam maps", lite0, 0)]
    insertion = [c for name, c in rows if name == "egc_comparison" and c.model ==
                 "efficientnet_lite0" and c.what == "comparison: gradcam insertion"]
    steps = quick["comparison"]["metrics"]["insertion"]["n_steps"]
    size = create_model("efficientnet_lite0", pretrained=False).preprocessing.input_size
    assert insertion == [costs.Cost("efficientnet_lite0", "comparison: gradcam insertion", 0,
                                    lite0 * len(pixel_counts(size * size, steps, None)))]


def test_localisation_stage_scores_the_prepared_boxes_of_a_synthetic_ilsvrc2012(tmp_path):
    """The stage on ILSVRC2012 validation images with their boxes (the synthetic archives of
    the paper dry run) on EfficientNet-Lite0: a table per method, then C7 from it."""
    from replication.data import imagenet

    from synthetic_ilsvrc import write_archives

    pins = write_archives(tmp_path / "data", per_class=1)
    imagenet.prepare_ilsvrc2012_val(tmp_path / "data", tmp_path / "val", **pins)
    outputs = {"localisation": tmp_path / "localisation.csv", "metrics": tmp_path / "loc.json"}
    ctx = stage_context(
        "egc_localisation", inputs={"imagenet_sample": tmp_path / "none",
                                    "ilsvrc2012": tmp_path / "val"},
        outputs=outputs, imagenet={"source": "ilsvrc2012_val"},
        expected_gradcam={"run_models": ["efficientnet_lite0"],
                          "data": {"imagenet": {"images": 2, "reference_images": 2}},
                          "localisation": {"methods": ["gradcam", "expected_gradcam_layer"],
                                           "images": 2}})
    localisation.run(ctx)
    table = pd.read_csv(outputs["localisation"])
    assert len(table) == 2 * 2 * 2        # methods × metrics × images
    assert set(table["method"]) == {"gradcam", "expected_gradcam_layer"}
    energy = table[table.metric == localisation.ENERGY]["value"].dropna()  # NaN: an all-zero map
    assert len(energy) >= 2 and ((energy >= 0) & (energy <= 1)).all()
    assert "reason" not in json.loads(outputs["metrics"].read_text())
    c7 = claims.c7_localisation(table, Claims(models=("efficientnet_lite0",),
                                              architectures=("efficientnet_lite0",),
                                              method="expected_gradcam_layer",
                                              substitute_models=()), PAIRING, "",
                                "expected_gradcam_layer")
    wide = (table[table.metric == localisation.ENERGY]
            .pivot(index="image", columns="method", values="value").dropna())
    assert c7["n"] == len(wide) >= 1              # an all-zero map's image is left out of C7
    difference = (wide["expected_gradcam_layer"] - wide["gradcam"]).mean()
    assert_close(c7["value"], difference, ops=4)   # a mean of differences of 2 float64s
