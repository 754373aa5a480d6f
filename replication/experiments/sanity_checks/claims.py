"""Claim values of the Sanity Checks paper, derived from the experiment tables (the
`sanity_claims` stage).

Each function returns numbers a claim check (claims/sanity_checks.yaml) judges. The paper's
curves are Inception v3's 17 blocks; claims naming an Inception block are mapped to positions
that exist in every model's randomized stages S1 … Sn (output first), so the quick profile's
EfficientNet-Lite0 is judged at the corresponding depth:

- "third stage" (Mixed_7b) → S3; "the CAM layer's stage" (Mixed_7c) → the first stage that
  randomizes the model's CAM layer;
- "Mixed_6a" (S9 of 17, the middle) → S⌈n/2⌉;
- "Logits … Mixed_6e" (the top 5 of 17) → S1 … S_round(5n/17); the stem convolutions
  (Conv2d_4a … Conv2d_1a, the bottom 5 of 17) → the bottom round(5n/17) stages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from replication.claims import point_verdict, read_claims
from replication.experiments.sanity_checks.data_randomization import pair_summary
from replication.experiments.sanity_checks.model_randomization import CONVENTION, summarize_table
from replication.fileio import read_table, write_json, write_table
from replication.models import ModelCard, create_model

C1_METHODS = ("input_x_gradient", "integrated_gradients")
C1_EXTENSION = ("gradient", "smoothgrad")
TOP_FRACTION = 5 / 17


def _mean(summary: pd.DataFrame, mode: str, method: str, metric: str) -> pd.Series:
    """Mean over images per randomized stage (S1 … Sn, in order), indexed by stage index."""
    rows = summary[(summary["mode"] == mode) & (summary["method"] == method)
                   & (summary["metric"] == metric) & (summary["stage_index"] > 0)]
    return rows.set_index("stage_index")["mean"].sort_index()


def stage_positions(card: ModelCard, n_stages: int) -> dict[str, object]:
    """Which randomized stages stand for the paper's named blocks (module docstring)."""
    top = max(1, round(n_stages * TOP_FRACTION))
    # The CAM layer's stage is the first (from the output) whose block lies at or before the
    # CAM layer in module order: from there on the CAM layer's activations are random.
    order = {name: i for i, (name, _) in enumerate(card.model.named_modules())}
    cam_index = max(i for name, i in order.items()
                    if name == card.cam_layer or name.startswith(card.cam_layer + "."))
    cam_stage = next(i + 1 for i, (_, modules) in enumerate(card.randomization_blocks)
                     if max(order[m] for m in modules) <= cam_index)
    return {"third": 3, "cam": cam_stage, "middle": math.ceil(n_stages / 2),
            "top": list(range(1, top + 1)),
            "stem": list(range(n_stages - top + 1, n_stages + 1)), "n": n_stages}


def _label(summary: pd.DataFrame, index: int) -> str:
    return str(summary.loc[summary["stage_index"] == index, "stage"].iloc[0])


def model_randomization_claims(cascading: pd.DataFrame, independent: pd.DataFrame | None,
                               card: ModelCard) -> dict[str, dict]:
    """C1–C6 (and the Guided Backprop erratum) from the summarized randomization tables."""
    n = int(cascading["stage_index"].max())
    at = stage_positions(card, n)
    names = {k: (_label(cascading, v) if isinstance(v, int) else [_label(cascading, i) for i in v])
             for k, v in at.items() if k != "n"}
    claims: dict[str, dict] = {"stages": {"positions": at, "labels": names}}

    present = set(cascading["method"])
    metrics = set(cascading["metric"])

    def worst(methods, metric, stages, reducer):
        values = {m: _mean(cascading, "cascading", m, metric).loc[stages] for m in methods}
        value = reducer(reducer(v) for v in values.values())
        return float(value), {m: [round(float(x), 4) for x in v] for m, v in values.items()}

    def available(*methods: str) -> bool:
        return set(methods) <= present

    after_third = list(range(at["third"], n + 1))
    all_stages = list(range(1, n + 1))
    if available(*C1_METHODS):
        value, detail = worst(C1_METHODS, "spearman_diverging", after_third, max)
        claims["C1"] = {"value": value, "stages": [names["third"], "…", _label(cascading, n)],
                        "per_method": detail}
        value, detail = worst(C1_METHODS, "spearman_abs", all_stages, min)
        claims["C2"] = {"value": value, "per_method": detail}
        if "ssim" in metrics:
            value, detail = worst(C1_METHODS, "ssim", all_stages, min)
            claims["C2_ssim"] = {"value": value, "per_method": detail}
    if available(*C1_EXTENSION):
        value, detail = worst(C1_EXTENSION, "spearman_diverging", after_third, max)
        claims["C1_extension"] = {"value": value, "per_method": detail}
    if available("gradient", "guided_backprop"):
        gradient = _mean(cascading, "cascading", "gradient", "spearman_abs")
        guided = _mean(cascading, "cascading", "guided_backprop", "spearman_abs")
        claims["C3"] = {"value": float(gradient.loc[n] - gradient.loc[1]),
                        "first": float(gradient.loc[1]), "last": float(gradient.loc[n])}
        upper = list(range(at["cam"], at["middle"] + 1))
        if upper:
            claims["C3_vs_guided_backprop"] = {
                "value": float((gradient.loc[upper] - guided.loc[upper]).max()),
                "stages": [names["cam"], "…", names["middle"]]}
        claims["C4"] = {"value": float(guided.loc[at["middle"]] / guided.loc[1]),
                        "first": float(guided.loc[1]), "middle": float(guided.loc[at["middle"]]),
                        "stage": names["middle"]}
        if "ssim" in metrics:
            guided_ssim = _mean(cascading, "cascading", "guided_backprop", "ssim")
            claims["C4_ssim"] = {"value": float(guided_ssim.loc[at["middle"]] / guided_ssim.loc[1])}
        claims["C4_drop"] = {"value": float(guided.loc[n] / guided.loc[1]),
                             "last": float(guided.loc[n])}
        claims["C4_pre_erratum"] = {"value": float(guided.loc[n]), "stage": _label(cascading, n)}
    if available("gradcam"):
        gradcam = _mean(cascading, "cascading", "gradcam", "spearman_abs")
        claims["C5"] = {"value": float(gradcam.loc[at["cam"]]), "stage": names["cam"]}
        claims["C5_logits_only"] = {"value": float(gradcam.loc[1]), "stage": _label(cascading, 1)}
    if independent is not None and len(independent) and available("guided_backprop"):
        independent_gbp = _mean(independent, "independent", "guided_backprop", "spearman_abs")
        claims["C6"] = {"value": float(independent_gbp.loc[at["top"]].min()),
                        "stages": [_label(independent, i) for i in at["top"]]}
        claims["C6_stem"] = {"value": float(independent_gbp.loc[at["stem"]].max()),
                             "stages": [_label(independent, i) for i in at["stem"]]}
    return claims


def calibration_claims(calibration: pd.DataFrame) -> dict[str, dict]:
    """C7: every null comparison ≈ 0 except HOG between two uniform masks (≈ 0.08)."""
    hog_uniform = (calibration["reference"] == "uniform") & (calibration["metric"] == "hog")
    rest = calibration[~hog_uniform]
    return {"C7": {"value": float(rest["mean"].abs().max()),
                   "worst": rest.loc[rest["mean"].abs().idxmax(), ["comparison", "metric"]].tolist()},
            "C7_hog_uniform": {"value": float(calibration.loc[hog_uniform, "mean"].mean())}}


def data_randomization_claims(tables: Mapping[str, pd.DataFrame]) -> dict[str, dict]:
    """C11–C16 from the per-pair summaries (``pair`` → rows method, metric, mean, sd, n)."""
    def mean(pair, method, metric):
        frame = tables[pair]
        row = frame[(frame["method"] == method) & (frame["metric"] == metric)]
        return float(row["mean"].iloc[0]) if len(row) else float("nan")

    claims: dict[str, dict] = {}
    if not tables:
        return claims
    for claim, pair in (("C11", "cnn-mnist"), ("C12", "cnn-fashion_mnist"), ("C13", "mlp-mnist"),
                        ("C13_fashion", "mlp-fashion_mnist")):
        if pair in tables:
            claims[claim] = {m: {"value": mean(pair, m, "spearman_abs")}
                             for m in tables[pair]["method"].unique()}
    diverging = pd.concat([t[t["metric"] == "spearman_diverging"].assign(pair=p)
                           for p, t in tables.items()])
    claims["C14_max"] = {"value": float(diverging["mean"].max())}
    claims["C14_min"] = {"value": float(diverging["mean"].min())}
    claims["C14_sd"] = {"value": float(diverging["sd"].mean())}

    violations, gaps, gradcam_margins = [], {}, {}
    for pair in tables:
        abs_of = {m: mean(pair, m, "spearman_abs") for m in tables[pair]["method"].unique()}
        low = [abs_of[m] for m in ("gradient", "smoothgrad") if m in abs_of]
        middle = [abs_of[m] for m in ("guided_backprop", "guided_gradcam") if m in abs_of]
        high = [abs_of[m] for m in ("integrated_gradients", "input_x_gradient") if m in abs_of]
        if low and middle and high and not (max(low) < min(middle) and max(middle) < min(high)):
            violations.append(pair)
        gaps[pair] = abs(abs_of["integrated_gradients"] - abs_of["input_x_gradient"])
        if "gradcam" in abs_of:
            others = [v for m, v in abs_of.items() if m != "gradcam"]
            gradcam_margins[pair] = abs_of["gradcam"] - min(others)
    claims["C15_gradcam_lowest"] = {"value": max(gradcam_margins.values()) if gradcam_margins
                                    else None, "per_pair": gradcam_margins}
    claims["C15_order"] = {"value": len(violations), "violations": violations}
    claims["C15_ig_vs_input_x_gradient"] = {"value": max(gaps.values()), "per_pair": gaps}
    drops = {}
    for pair in tables:
        if pair.endswith("mnist") and not pair.endswith("fashion_mnist"):
            for method in ("integrated_gradients", "input_x_gradient"):
                drops[f"{pair}/{method}"] = (mean(pair, method, "spearman_abs")
                                             - mean(pair, method, "spearman_abs_nonzero_pixels"))
    claims["C16"] = {"value": float(np.min(list(drops.values()))) if drops else None,
                     "per_pair": drops}
    return claims


def toy_claims(edge_study: pd.DataFrame, locality: pd.DataFrame,
               linear: pd.DataFrame) -> dict[str, dict]:
    """C17 (linear-model identities) and C18 (one-layer conv net: locality; edge-likeness)."""
    relative = (linear["max_abs_difference"] / linear["scale"]).max()
    gradient = edge_study[(edge_study["method"] == "gradient")
                          & (edge_study["version"] == "grayscale")]
    random = edge_study[(edge_study["method"] == "random") & (edge_study["version"] == "grayscale")]
    merged = gradient.merge(random, on=["version", "scaling", "filter_seed"],
                            suffixes=("", "_random"))
    outside = locality[locality["region"] == "outside_5x5"]["max_abs_change"]
    return {
        "C17": {"value": float(relative), "per_method": dict(zip(
            linear["method"], (linear["max_abs_difference"] / linear["scale"]).round(12)))},
        "C18_locality": {"value": float(outside.max())},
        "C18_edges": {"value": float((merged["spearman_edge"] - merged["spearman_edge_random"]).mean()),
                      "gradient_mean": float(gradient["spearman_edge"].mean()),
                      "share_above_random": float((merged["spearman_edge"]
                                                   > merged["spearman_edge_random"]).mean())},
    }


def bn_study_verdicts(study: pd.DataFrame, card: ModelCard, claims: list) -> pd.DataFrame:
    """The model-randomization claims' values and verdicts under every option of the study."""
    by_id = {c.id: c for c in claims}
    rows = []
    for (batchnorm, convention), group in study.groupby(["batchnorm", "convention"], sort=False):
        if not convention:
            continue
        summary = summarize_table(group.drop(columns=["batchnorm", "setup"], errors="ignore"))
        values = model_randomization_claims(summary, None, card)
        for claim_id, entry in values.items():
            if claim_id in by_id:
                rows.append({"batchnorm": batchnorm, "convention": convention, "claim": claim_id,
                             "value": entry["value"], "verdict": point_verdict(by_id[claim_id], entry["value"])})
    return pd.DataFrame(rows, columns=["batchnorm", "convention", "claim", "value", "verdict"])


def run(ctx) -> None:
    """`sanity_claims`: every claim value of the paper from the stage tables, into one JSON
    file; and the option study's verdicts."""
    model = ctx.settings("sanity_checks.imagenet.model")
    card = create_model(model, pretrained=False)
    randomization = ctx.input("randomization")
    summarized = {mode: summarize_table(read_table(randomization / f"imagenet-{mode}.csv")
                                        .drop(columns="setup"))
                  for mode in ("cascading", "independent")}
    claims = model_randomization_claims(
        *(t[t["convention"].isin([CONVENTION, np.nan])] for t in summarized.values()), card)
    calibration = read_table(ctx.input("calibration"))
    claims.update(calibration_claims(calibration))
    if "C2_ssim" in claims:  # "above the null": our own null, the gradient map vs a Gaussian mask
        null = calibration[(calibration["reference"] == "gradient")
                           & (calibration["other"] == "gaussian")
                           & (calibration["metric"] == "ssim")]["mean"]
        claims["C2_ssim"]["null"] = float(null.iloc[0]) if len(null) else None
        claims["C2_ssim"]["value"] -= claims["C2_ssim"]["null"] or 0.0
    pairs = {path.stem: pair_summary(read_table(path))
             for path in sorted(ctx.input("data_randomization").glob("*.csv"))}
    claims.update(data_randomization_claims(pairs))
    toys = ctx.input("toys")
    claims.update(toy_claims(read_table(toys / "edge_study.csv"),
                             read_table(toys / "locality.csv"),
                             read_table(toys / "linear_identities.csv")))
    claims["model"] = {"name": model, "profile": ctx.settings("profile")}
    write_json(ctx.output("metrics"), claims)
    write_table(bn_study_verdicts(read_table(ctx.input("bn_study")), card,
                                  read_claims(ctx.input("claims"))), ctx.output("verdicts"))
