"""ParchGrad claim values C1–C13 (notes §4), derived from the stage tables only
(``parchgrad_claims``).

``claim_values`` returns ``{"C1": {"value": …, "detail": {…}}, …}``: ``value`` is the number (or
boolean) a claim check in ``claims/parchgrad.yaml`` judges, ``detail`` what a reader needs to
interpret it. A claim whose inputs were not produced (the bounding boxes of C5/C6 offline, a
stage the profile skips) gets ``value: null`` and a ``reason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from replication.experiments.parchgrad.loading import read_results, read_statistics_summaries
from replication.experiments.parchgrad.settings import ClaimsSettings
from replication.experiments.parchgrad.vc import ARTIFACT_MEASURES
from replication.fileio import json_safe, write_json
from replication.metrics import stats

CLAIM_IDS = tuple(f"C{i}" for i in range(1, 14))
OFFLINE_BOXES = ("needs ILSVRC2012 validation images, ILSVRC2012_bbox_val_v3.tgz and the paper "
                 "profile's ImageNet models (ResNet-18, VGG16-BN, EfficientNet-B0); not "
                 "available offline")
# The result folders (stage inputs) the claims are read from.
RESULTS = ("toys", "vc", "q_sweep", "faithfulness", "costs", "statistics_checks", "bbox")


def _missing(reason: str) -> dict:
    return {"value": None, "detail": {}, "reason": reason}


def _table(tables: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame | None:
    frame = tables.get(name)
    return frame if frame is not None and not frame.empty else None


# --------------------------------------------------------------------------- one per claim

def c1(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings) -> dict:
    sums, summary = _table(tables, "e1_toy_sums"), _table(tables, "e1_toy_summary")
    if sums is None or summary is None:
        return _missing("the toys stage did not run")
    authors = sums[sums["reading"] == "code_uniform"].set_index("group")
    if authors.empty:
        return _missing("the toy tables lack the authors' code_uniform reading")
    total = authors.loc["total"]
    angle = abs(float(total["direction_deg"]) - 45.0)
    by_reading = summary.set_index("reading")
    return {"value": angle, "detail": {
        "seed": int(total["seed"]),
        "sum_h": [float(authors.loc["H", "dim1"]), float(authors.loc["H", "dim2"])],
        "sum_l": [float(authors.loc["L", "dim1"]), float(authors.loc["L", "dim2"])],
        "sum_total": [float(total["dim1"]), float(total["dim2"])],
        "fraction_l_dominated": by_reading["fraction_l_dominated"].to_dict(),
        "fraction_within_1deg_of_diagonal":
            by_reading["fraction_total_within_1deg_of_diagonal"].to_dict(),
        "seeds": int(by_reading["seeds"].iloc[0]),
        "meaning": "value: angle (degrees) between Σ_total of the authors' seed and (1, 1)"}}


def c2(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings) -> dict:
    table = _table(tables, "c2_variance_identity")
    if table is None:
        return _missing("the toys stage did not run")
    infinite = table[np.isinf(table["gamma"])]
    value = float(np.nanmax(table[["sum_relative_error", "ratio_relative_error"]].to_numpy()))
    return {"value": value, "detail": {
        "max_sum_relative_error": float(table["sum_relative_error"].max()),
        "max_ratio_relative_error": float(table["ratio_relative_error"].max()),
        "gamma_inf_low_max_abs": float(infinite["low_max_abs"].max()) if len(infinite) else None,
        "gammas": sorted(set(table["gamma"].tolist())), "cases": int(len(table)),
        "meaning": "value: largest relative error of Var(S_H')+Var(S_L') = M+N and "
                   "Var(S_H')/Var(S_L') = γ² over random gradients (float64)"}}


def c3(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings) -> dict:
    table = _table(tables, "e6_q_sweep")
    if table is None:
        return _missing("the q_sweep stage did not run")
    full = table[np.isclose(table["q"], 1.0)]
    if full.empty:
        return _missing("the q sweep has no q = 1.0")
    return {"value": float(full["max_relative_difference_no_shapiro"].max()), "detail": {
        "with_shapiro_filter": full.groupby("model")["max_relative_difference"].max().to_dict(),
        "min_spearman_at_q1_with_filter": full.groupby("model")["spearman"].min().to_dict(),
        "images": full.groupby("model").size().to_dict(),
        "meaning": "value: max over images of max|PG(q=1) − Grad| / max|Grad| (raw maps), "
                   "Shapiro filter off; with the authors' filter q = 1 still drops the channels "
                   "the filter rejects (with_shapiro_filter)"}}


def c4(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings) -> dict:
    pairs = _table(tables, "e2_pairs")
    if pairs is None:
        return _missing("the vc stage did not run")
    model = settings.sequential_model
    chosen = pairs[(pairs["model"] == model) & (pairs["hooks"] == "default")]
    if chosen.empty:
        return _missing(f"the vc stage has no default-hook rows for {model}")
    grouped = pairs.groupby(["model", "hooks"])
    return {"value": float(chosen["pearson"].min()), "detail": {
        "model": model, "images": int(len(chosen)),
        "max_relative_residual": float(chosen["relative_residual"].max()),
        "min_best_scale": float(chosen["best_scale"].min()),
        "min_pearson_by_model_hooks": {f"{m} {h}": float(v) for (m, h), v
                                       in grouped["pearson"].min().items()},
        "meaning": "value: smallest per-image Pearson r between ParchGrad maps with and "
                   "without VC on the sequential model (authors: VGG16-BN, mu_in_w 0.959 vs 0.959)"}}


def _bbox_means(table: pd.DataFrame, model: str, hooks: str, q: float) -> dict | None:
    chosen = table[(table["model"] == model) & (table["hooks"] == hooks)
                   & np.isclose(table["q"].astype(float), q)]
    if chosen.empty:
        return None
    means = chosen.groupby(["pairing", "vc"])[["mu_in", "mu_in_w"]].mean()
    out = {}
    for (pairing, vc), row in means.iterrows():
        label = "vc" if str(vc) in ("True", "true", "1", "1.0") else "no_vc"
        out.setdefault(pairing, {})[label] = {"mu_in": float(row["mu_in"]),
                                              "mu_in_w": float(row["mu_in_w"])}
    for values in out.values():
        if "vc" in values and "no_vc" in values:
            values["mu_in_w_difference"] = values["vc"]["mu_in_w"] - values["no_vc"]["mu_in_w"]
    return out


def _bbox_claim(tables: Mapping[str, pd.DataFrame], settings: Mapping, model_key: str,
                value_key: str) -> dict:
    table = _table(tables, "e4_bbox")
    if table is None:
        return _missing(OFFLINE_BOXES)
    boxes = settings.bbox
    model = getattr(boxes, model_key)
    means = _bbox_means(table, model, boxes.hooks, float(boxes.q))
    if not means or "authors" not in means:
        return _missing(f"no box-energy rows for {model} at {boxes.hooks}, q = {boxes.q} "
                        "with the authors' pairing")
    authors = means["authors"]
    value = authors["vc"]["mu_in_w"] if value_key == "vc" else authors.get("mu_in_w_difference")
    detail = {"model": model, "hooks": boxes.hooks, "q": boxes.q, "by_pairing": means}
    if "correct" in means:
        detail["correct_difference"] = means["correct"].get("mu_in_w_difference")
    return {"value": value, "detail": detail}


def c5(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings) -> dict:
    return _bbox_claim(tables, settings, "resnet", "vc")


def c6(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings) -> dict:
    return _bbox_claim(tables, settings, "effnet", "difference")


def c7(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings, seed: int) -> dict:
    table = _table(tables, "e2_artifacts")
    if table is None:
        return _missing("the vc stage did not run")
    model, hooks = settings.skip_model, settings.skip_hooks
    chosen = table[(table["model"] == model) & (table["hooks"] == hooks)]
    if chosen.empty:
        return _missing(f"the vc stage has no rows for {model} with hooks {hooks}")
    q = float(chosen["q"].iloc[0])
    chosen = chosen[np.isclose(chosen["q"], q)]
    scores = chosen.melt(id_vars=["image", "variant"], value_vars=list(ARTIFACT_MEASURES),
                         var_name="metric")
    compared = stats.compare_to_reference(scores, "vc", ARTIFACT_MEASURES, by=("metric",),
                                          method="variant", seed=seed,
                                          n_resamples=settings.bootstrap_resamples)
    wide = chosen.pivot_table(index="image", columns="variant", values=list(ARTIFACT_MEASURES))
    detail = {"model": model, "hooks": hooks, "q": q, "images": int(len(wide))}
    for measure, row in compared.set_index("metric").iterrows():
        detail[measure] = {"zero_pruning_mean": float(np.nanmean(wide[measure]["zero_pruning"])),
                           "vc_mean": float(np.nanmean(wide[measure]["vc"])),
                           "mean_difference": float(row["difference"]),
                           "ci": [float(row["ci_low"]), float(row["ci_high"])],
                           "p_value": float(row["p_value"])}
    return {"value": detail["hf_energy"]["mean_difference"], "detail": {
        **detail, "meaning": "value: mean over images of high-frequency energy (zero pruning) "
                             "− (VC); > 0 means zero pruning has more high-frequency artifacts"}}


def c8(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings) -> dict:
    paired = _table(tables, "e5_paired")
    if paired is None:
        return _missing("the faithfulness stage did not run")
    model, q = settings.faithfulness_model, float(settings.faithfulness_q)
    chosen = paired[(paired["model"] == model) & (paired["base"] == "gradient")
                    & np.isclose(paired["q"], q)].set_index("metric")
    if chosen.empty:
        return _missing(f"no paired faithfulness rows for {model}, Gradient, q = {q}")
    detail: dict[str, Any] = {"model": model, "base": "gradient", "q": q,
                              "images": int(chosen["n_pairs"].iloc[0])}
    for metric, row in chosen.iterrows():
        detail[f"{metric}_difference"] = float(row["mean_difference"])
        detail[f"{metric}_ci"] = [float(row["ci_low"]), float(row["ci_high"])]
        detail[f"{metric}_p_value"] = float(row["p_value"])
    detail["favours_parchgrad"] = {
        f"{r.model} {r.base} q={r.q:g} {r.metric}": bool(r.favours_parchgrad)
        for r in paired.itertuples()}
    detail["meaning"] = ("value: mean per-image MoRF AOPC of ParchGrad(Gradient) − Gradient "
                         "(> 0: more faithful); see lerf_aopc_difference (< 0) and "
                         "gini_difference (> 0: sparser)")
    return {"value": detail.get("morf_aopc_difference"), "detail": detail}


def c9(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings) -> dict:
    summary = _table(tables, "e6_q_sweep_summary")
    if summary is None:
        return _missing("the q_sweep stage did not run")
    spearman = summary[summary["metric"] == "spearman"]
    monotone = {m: bool(g["monotone"].all()) for m, g in spearman.groupby("model")}
    ssim = summary[summary["metric"] == "ssim"]
    return {"value": all(monotone.values()), "detail": {
        "monotone_spearman": monotone,
        "monotone_ssim": {m: bool(g["monotone"].all()) for m, g in ssim.groupby("model")},
        "mean_spearman": {m: {f"{q:g}": float(v) for q, v in zip(g["q"], g["mean"])}
                          for m, g in spearman.groupby("model")},
        "models": sorted(monotone),
        "meaning": "value: true when the mean Spearman to the Gradient map falls at every step "
                   "of decreasing q for every model"}}


def c10(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings) -> dict:
    costs = _table(tables, "e3_costs")
    if costs is None:
        return _missing("the costs stage did not run")
    model = settings.cost_model
    chosen = costs[(costs["model"] == model) & costs["provided"].astype(bool)]
    chosen = chosen.set_index("engine_method")
    if "parchgrad" not in chosen.index or "gradient" not in chosen.index:
        return _missing(f"no ParchGrad / Gradient timings for {model}")
    seconds = chosen["seconds_per_map"]
    detail = {"model": model,
              "passes": {m: [int(r.forward_backward), int(r.forward)] for m, r in chosen.iterrows()},
              "seconds_per_map": seconds.to_dict(),
              "time_ratio_parchgrad_to_gradient": float(seconds["parchgrad"] / seconds["gradient"]),
              "load_average_1min": float(chosen["load_average_1min"].max()),
              "meaning": "value: forward+backward passes of ParchGrad per map"}
    if "smoothgrad" in seconds:
        detail["time_ratio_smoothgrad_to_gradient"] = float(seconds["smoothgrad"] / seconds["gradient"])
        detail["smoothgrad_passes"] = int(chosen.loc["smoothgrad", "forward_backward"])
    return {"value": int(chosen.loc["parchgrad", "forward_backward"]), "detail": detail}


def c11(statistics: Mapping[str, dict], settings: ClaimsSettings) -> dict:
    model = settings.shapiro_model
    if model not in statistics:
        return _missing(f"no statistics summary for {model}")
    by_model = {name: s.get("shapiro_below_0.05") for name, s in statistics.items()}
    chosen = by_model[model]
    if not chosen:
        return _missing(f"the statistics of {model} carry no Shapiro p-values")
    return {"value": float(chosen["fraction"]), "detail": {
        "model": model, "by_model": by_model,
        "n_images": {name: s.get("n_images") for name, s in statistics.items()},
        "meaning": "value: fraction of channels whose GAP has Shapiro p < 0.05 (kept by the "
                   "authors' filter)"}}


def c12(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings) -> dict:
    selection, maps = _table(tables, "s1_bug_selection"), _table(tables, "s1_bug_maps")
    if selection is None:
        return _missing("the statistics_checks stage did not run or had no class-wise model")
    model = settings.bug_model
    chosen = selection[selection["model"] == model]
    earlier = chosen[~chosen["is_last_conv"].astype(bool)]
    if earlier.empty:
        return _missing(f"{model} has no hooked conv before the last one")
    detail = {"model": model,
              "jaccard_by_layer_q": {f"{r.layer} q={r.q:g}": float(r.jaccard_mean)
                                     for r in chosen.itertuples()},
              "bug_reproduced_last_layer_copy":
                  bool(chosen["bug_is_last_layer_copy"].astype(bool).all()),
              "last_conv_jaccard": float(chosen.loc[chosen["is_last_conv"].astype(bool),
                                                    "jaccard_mean"].min())
              if chosen["is_last_conv"].astype(bool).any() else None}
    if maps is not None:
        own = maps[maps["model"] == model]
        detail["map_spearman_mean"] = {f"q={q:g}": float(g["spearman"].mean())
                                       for q, g in own.groupby("q")}
        detail["map_spearman_min"] = float(own["spearman"].min())
    detail["meaning"] = ("value: mean Jaccard index of the H sets of corrected vs bug-compatible "
                         "statistics over hooked convs before the last (1 = bug changes nothing)")
    return {"value": float(earlier["jaccard_mean"].mean()), "detail": detail}


def c13(tables: Mapping[str, pd.DataFrame], settings: ClaimsSettings) -> dict:
    table = _table(tables, "e7_checkerboard")
    if table is None:
        return _missing("the toys stage did not run")
    stride1 = table[table["stride"] == 1]
    return {"value": float(table["relative_deviation"].max()), "detail": {
        "max_abs_grad_stride1": {f"{k:g}": float(v) for k, v in
                                 zip(stride1["k"], stride1["max_abs_grad"])},
        "strides": sorted(set(table["stride"].tolist())),
        "meaning": "value: largest max|grad_k/k − grad_1| / max|grad_1| (0 = exactly linear); "
                   "absolute values depend on the random initialisation"}}


def claim_values(tables: Mapping[str, pd.DataFrame], statistics: Mapping[str, dict],
                 settings: ClaimsSettings, seed: int) -> dict:
    """Every claim value, JSON-safe; ``seed`` draws C7's bootstrap resamples."""
    table_claims = {"C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5, "C6": c6, "C8": c8,
                    "C9": c9, "C10": c10, "C12": c12, "C13": c13}
    values = {cid: fn(tables, settings) for cid, fn in table_claims.items()}
    values["C7"] = c7(tables, settings, seed)
    values["C11"] = c11(statistics, settings)
    return json_safe({cid: values[cid] for cid in CLAIM_IDS}, infinity_as_string=True)


def run(ctx) -> None:
    """C1–C13 values from the tables into one JSON (``metrics/parchgrad/claims.json``)."""
    tables = read_results(ctx.input(name) for name in RESULTS)
    statistics = read_statistics_summaries(ctx.input("statistics_metrics"))
    write_json(ctx.output("out"), claim_values(tables, statistics,
                                               ctx.settings("parchgrad.claims"),
                                               ctx.settings("seed")))
