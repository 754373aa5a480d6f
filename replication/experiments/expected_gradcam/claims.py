"""Claim values C1–C9 (paper_notes/expected_gradcam.md §4) derived from the stage tables.

Each claim gets ``{"value": number or null, "n": …, "detail": {…}}`` (plus ``reason`` when
null), a number that claims/expected_gradcam.yaml judges with one operator. A claim is judged on
the models in ``claims.models`` (the ImageNet models: the paper's domain); when there are
several, ``value`` is the least favourable of them, so the claim must hold on every model. The
other models appear in ``detail``. ``claims.method`` names the configured method that stands
for Expected Grad-CAM; the other configured variants appear in the detail. Paired differences
are ``stats.compare_to_reference`` with the bootstrap settings of params.yaml. Every threshold is
ours [I]: the paper's numbers are unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from replication.experiments.expected_gradcam.baselines import mean_pairwise
from replication.experiments.expected_gradcam.comparison import SCORE_COLUMNS
from replication.experiments.expected_gradcam.methods import GRADIENT_CAMS
from replication.experiments.expected_gradcam.saturation import (SATURATED_AT,
                                                                 channel_insertion_auc,
                                                                 saturation_groups)
from replication.experiments.expected_gradcam.settings import Bootstrap, Claims
from replication.experiments.expected_gradcam.special_cases import REDUCTION_CASES
from replication.fileio import json_safe, read_table, write_json
from replication.metrics import stats

EGC, GC, IGC = "expected_gradcam", "gradcam", "integrated_gradcam"
CONSISTENCY = "mean_spearman"  # C6's per-image value: higher is less baseline-sensitive


@dataclass(frozen=True)
class Pairing:
    """How claims pair methods: the bootstrap settings, the seed and each metric's direction
    (the comparison summary's, from the metric registry)."""

    bootstrap: Bootstrap
    seed: int
    directions: Mapping[str, bool]


def _models(table: pd.DataFrame, wanted: Sequence[str]) -> list[str]:
    """The claim models present in ``table``; every model present when none is named."""
    present = list(dict.fromkeys(table["model"])) if len(table) else []
    return [m for m in wanted if m in present] if wanted else present


def _paired(scores: pd.DataFrame, model: str, metric: str, a: str, b: str,
            pairing: Pairing) -> dict | None:
    """Paired comparison a − b of ``metric`` on the images both were scored on."""
    rows = scores[(scores["model"] == model) & (scores["metric"] == metric)
                  & scores["method"].isin([a, b])]
    found = stats.compare_to_reference(rows, b, pairing.directions,
                                       n_resamples=pairing.bootstrap.n_resamples,
                                       confidence=pairing.bootstrap.confidence, seed=pairing.seed)
    found = found[(found["method"] == a) & (found["n_pairs"] > 0)]
    if found.empty:
        return None
    pair = found.iloc[0]
    return {"difference": pair["difference"], "ci_low": pair["ci_low"],
            "ci_high": pair["ci_high"], "p_value": pair["p_value"], "n": int(pair["n_pairs"]),
            "a": a, "b": b}


def _worst(per_model: Mapping[str, dict | None], key: str, models: Sequence[str],
           worst: Callable[[Sequence[float]], float]) -> tuple[float | None, dict | None]:
    """The least favourable value over ``models`` and the entry it came from."""
    entries = [(per_model[m][key], per_model[m]) for m in models
               if per_model.get(m) is not None and per_model[m].get(key) is not None
               and not (isinstance(per_model[m][key], float) and math.isnan(per_model[m][key]))]
    if not entries:
        return None, None
    value = worst([v for v, _ in entries])
    return value, next(e for v, e in entries if v == value)


def _claim(value: Any, entry: Mapping | None, detail: Any, reason: str = "",
           keys: Sequence[str] = ("ci_low", "ci_high", "p_value", "n")) -> dict:
    out: dict[str, Any] = {"value": None if value is None else float(value)}
    for key in keys:
        out[key] = None if entry is None else entry.get(key)
    out["detail"] = detail
    if value is None:
        out["reason"] = reason or ("none of the claim models (expected_gradcam.claims.models) "
                                   "has data for this claim in this run")
    return out


def c1_saturation(alpha_star: pd.DataFrame, topk: pd.DataFrame, models: Sequence[str]) -> dict:
    """C1: median α* (black baseline) per model; value = the largest over the claim models
    (judged ≤ 0.7). Detail: the share of images with α* ≤ 0.7, the data-baseline median, and the
    top-k channel AUC difference Expected Grad-CAM − Grad-CAM in the strong-saturation half
    versus the rest (our reading of the appendix's top-k insertion)."""
    if alpha_star.empty:
        return _claim(None, None, {}, "the saturation stage did not run")
    per_model: dict[str, dict] = {}
    groups = saturation_groups(alpha_star)
    aucs = channel_insertion_auc(topk) if len(topk) else None
    for model in dict.fromkeys(alpha_star["model"]):
        rows = alpha_star[alpha_star["model"] == model]
        black = rows[rows["baseline"] == "black"]["alpha_star"].dropna()
        data = rows[rows["baseline"] == "data"]["alpha_star"].dropna()
        entry = {"median_alpha_star": float(black.median()) if len(black) else None,
                 "share_at_most_0.7": float((black <= SATURATED_AT).mean()) if len(black) else None,
                 "median_alpha_star_data": float(data.median()) if len(data) else None,
                 "n": int(black.size)}
        if aucs is not None:
            merged = aucs[aucs["model"] == model].merge(groups, on=["model", "image"])
            wide = merged.pivot(index=["image", "group"], columns="method", values="auc")
            for method in [m for m in wide.columns if m != GC and GC in wide]:
                diff = (wide[method] - wide[GC]).groupby(level="group").mean()
                entry[f"topk_auc_difference_{method}_minus_gradcam"] = diff.to_dict()
        per_model[model] = entry
    value, entry = _worst(per_model, "median_alpha_star", _models(alpha_star, models), max)
    return _claim(value, entry, per_model, keys=("n",))


def _variants(scores: pd.DataFrame, model: str, metric: str, egc: str, reference: str,
              pairing: Pairing) -> dict:
    """The same paired difference for the other configured Expected Grad-CAMs (detail)."""
    others = [m for m in dict.fromkeys(scores[scores["model"] == model]["method"])
              if m.startswith("expected_gradcam") and m not in (egc, "expected_gradcam_pp")]
    return {m: _paired(scores, model, metric, m, reference, pairing) for m in others}


def c2_faithfulness(scores: pd.DataFrame, models: Sequence[str], pairing: Pairing,
                    egc: str = EGC) -> dict:
    """C2: mean paired insertion difference Expected Grad-CAM − Grad-CAM (judged > 0); value =
    the smallest over the claim models. Detail: deletion (lower is better) and the other
    gradient CAMs' insertion differences for the ranking."""
    per_model = {}
    for model in dict.fromkeys(scores["model"]):
        entry = _paired(scores, model, "insertion", egc, GC, pairing)
        if entry is None:
            continue
        entry["deletion"] = _paired(scores, model, "deletion", egc, GC, pairing)
        entry["other_variants"] = _variants(scores, model, "insertion", egc, GC, pairing)
        means = scores[(scores["model"] == model) & (scores["metric"] == "insertion")
                       ].groupby("method")["value"].mean().sort_values(ascending=False)
        entry["insertion_ranking"] = list(means.index)
        per_model[model] = entry
    value, entry = _worst(per_model, "difference", _models(scores, models), min)
    return _claim(value, entry, per_model)


def c3_infidelity(scores: pd.DataFrame, models: Sequence[str], pairing: Pairing,
                  egc: str = EGC, metric: str = "infidelity") -> dict:
    """C3: rank of Expected Grad-CAM's mean infidelity among the gradient CAMs (1 = lowest) on
    the images every one of them was scored on; value = the worst rank over the claim models
    (judged ≤ 1). Detail: the means and the paired differences with Grad-CAM and Integrated
    Grad-CAM."""
    per_model = {}
    ranked = [m for m in GRADIENT_CAMS if m != EGC] + [egc]
    for model in dict.fromkeys(scores["model"]):
        rows = scores[(scores["model"] == model) & (scores["metric"] == metric)
                      & scores["method"].isin(ranked)]
        table = rows.pivot(index="image", columns="method", values="value").dropna()
        if egc not in table or table.empty:
            continue
        means = table.mean().sort_values()
        per_model[model] = {"rank": int(list(means.index).index(egc) + 1),
                            "of": int(len(means)), "means": means.to_dict(),
                            "n": int(len(table)),
                            "vs_gradcam": _paired(scores, model, metric, egc, GC, pairing),
                            "vs_integrated_gradcam": _paired(scores, model, metric, egc, IGC, pairing),
                            "other_variants": _variants(scores, model, metric, egc, GC, pairing)}
    value, entry = _worst(per_model, "rank", _models(scores, models), max)
    return _claim(value, entry, per_model, keys=("n",))


def c4_robustness(scores: pd.DataFrame, models: Sequence[str], pairing: Pairing,
                  egc: str = EGC) -> dict:
    """C4: max-sensitivity differences Expected Grad-CAM − Grad-CAM and − Integrated Grad-CAM;
    value = the largest of both over the claim models (judged < 0: lower than both)."""
    per_model = {}
    for model in dict.fromkeys(scores["model"]):
        pairs = {other: _paired(scores, model, "max_sensitivity", egc, other, pairing)
                 for other in (GC, IGC)}
        pairs = {k: v for k, v in pairs.items() if v is not None}
        if not pairs:
            continue
        worst = max(pairs.values(), key=lambda e: e["difference"])
        per_model[model] = {**worst, "comparisons": pairs}
    value, entry = _worst(per_model, "difference", _models(scores, models), max)
    return _claim(value, entry, per_model)


def c5_complexity(sigma_sweep: pd.DataFrame, models: Sequence[str], egc: str = EGC) -> dict:
    """C5: Spearman |ρ| between σ and the mean complexity over the σ sweep; value = the smallest
    over the claim models (judged ≥ 0.9). Detail: ρ with its sign and the per-σ means of every
    swept metric."""
    if sigma_sweep.empty:
        return _claim(None, None, {}, "the smoothing stage did not run")
    sigma_sweep = sigma_sweep[sigma_sweep["method"] == egc]
    per_model = {}
    for model in dict.fromkeys(sigma_sweep["model"]):
        rows = sigma_sweep[sigma_sweep["model"] == model]
        means = rows.groupby(["metric", "sigma"])["value"].mean()
        if "complexity" not in means.index.get_level_values(0):
            continue
        complexity = means.loc["complexity"]
        if len(complexity) < 3:
            rho = math.nan
        elif np.ptp(complexity.to_numpy()) <= 1e-9 * max(1.0, abs(complexity.mean())):
            rho = 0.0  # σ leaves the complexity unchanged: no trend at all (ρ is undefined)
        else:
            rho = float(scipy_stats.spearmanr(complexity.index, complexity.to_numpy()).statistic)
        per_model[model] = {"abs_rho": abs(rho), "rho": rho, "n": int(len(complexity)),
                            "n_images": int(rows[rows["metric"] == "complexity"]["image"].nunique()),
                            "means": {m: means.loc[m].to_dict()
                                      for m in means.index.get_level_values(0).unique()}}
    value, entry = _worst(per_model, "abs_rho", _models(sigma_sweep, models), min)
    return _claim(value, entry, per_model, keys=("rho", "n"))


def c6_baseline_sensitivity(pairs: pd.DataFrame, models: Sequence[str], pairing: Pairing,
                            egc: str = EGC) -> dict:
    """C6: per image, the mean pairwise Spearman over configurations; paired difference
    Expected Grad-CAM − Integrated Grad-CAM; value = the smallest over the claim models (judged
    > 0: Expected Grad-CAM's maps depend less on the baseline choice)."""
    if pairs.empty:
        return _claim(None, None, {}, "the baseline stage did not run")
    means = mean_pairwise(pairs).rename(columns={"mean_spearman": "value"})
    means["metric"] = CONSISTENCY
    pairing = Pairing(pairing.bootstrap, pairing.seed, {**pairing.directions, CONSISTENCY: True})
    per_model = {}
    for model in dict.fromkeys(means["model"]):
        entry = _paired(means, model, CONSISTENCY, egc, IGC, pairing)
        if entry is None:
            continue
        entry["means"] = means[means["model"] == model].groupby("method")["value"].mean().to_dict()
        per_model[model] = entry
    value, entry = _worst(per_model, "difference", _models(means, models), min)
    return _claim(value, entry, per_model)


def c8_substitute(scores: pd.DataFrame, models: Sequence[str], pairing: Pairing) -> dict:
    """C8 (optional): insertion difference Expected Grad-CAM++ (ours) − Grad-CAM++; value = the
    smallest over the claim models (judged > 0). Detail: every metric's paired difference."""
    per_model = {}
    for model in dict.fromkeys(scores["model"]):
        entry = _paired(scores, model, "insertion", "expected_gradcam_pp", "gradcam_pp", pairing)
        if entry is None:
            continue
        metrics = scores[scores["model"] == model]["metric"].unique()
        entry["all_metrics"] = {m: _paired(scores, model, m, "expected_gradcam_pp",
                                           "gradcam_pp", pairing) for m in metrics}
        per_model[model] = entry
    value, entry = _worst(per_model, "difference", _models(scores, models), min)
    missing = "expected_gradcam_pp" not in set(scores["method"])
    return _claim(value, entry, per_model,
                  reason="Expected Grad-CAM++ was not in expected_gradcam.comparison.methods"
                  if missing else "")


def c9_special_cases(special: pd.DataFrame) -> dict:
    """C9: the largest relative difference max|a − b| / max|b| over the exact reductions
    (Grad-CAM, Integrated Grad-CAM, Grad-CAM++), every model and image (judged < 1e-4). Detail:
    per model and case, and the layer-EG completeness gaps (approximate, reported only)."""
    if special.empty:
        return _claim(None, None, {}, "the special-cases stage did not run")
    exact = special[special["case"].isin(REDUCTION_CASES)]
    detail = {model: rows.groupby("case")["relative"].agg(["max", "median", "size"])
              .rename(columns={"size": "n"}).to_dict(orient="index")
              for model, rows in special.groupby("model", sort=False)}
    value = float(exact["relative"].max()) if len(exact) else None
    return _claim(value, {"n": int(len(exact))}, detail, keys=("n",))


def claim_values(tables: Mapping[str, pd.DataFrame], claims: Claims, pairing: Pairing) -> dict:
    """{"C1": {"value": …, "n": …, "detail": …}, …, "C9": …} from the stage tables (``scores``,
    ``alpha_star``, ``topk``, ``sigma_sweep``, ``pairs``, ``special_cases``; a missing or empty
    table gives null claims)."""
    empty = pd.DataFrame()
    scores = tables.get("scores", empty)
    scores = scores if len(scores) else pd.DataFrame(columns=SCORE_COLUMNS)
    special = tables.get("special_cases", empty)
    models, egc = list(claims.models), claims.method
    same = equals_gradcam(special, egc)
    values = {
        "C1": c1_saturation(tables.get("alpha_star", empty), tables.get("topk", empty), models),
        "C2": c2_faithfulness(scores, models, pairing, egc),
        "C3": c3_infidelity(scores, models, pairing, egc),
        "C4": c4_robustness(scores, models, pairing, egc),
        "C5": c5_complexity(tables.get("sigma_sweep", empty), models, egc),
        "C6": c6_baseline_sensitivity(tables.get("pairs", empty), models, pairing, egc),
        "C7": _claim(None, None, {}, "localisation needs ILSVRC2012 validation bounding boxes, "
                     "which no offline source provides; not run"),
        # Expected Grad-CAM++ equals Grad-CAM++ where the CAM layer feeds pooling and a linear
        # head (Lite0), so C8 may be judged on other models: claims.substitute_models.
        "C8": c8_substitute(scores, list(claims.substitute_models or models), pairing),
        "C9": c9_special_cases(special),
        "claim_models": models,
        "claim_method": egc,
        "claim_method_equals_gradcam": same,
    }
    void = [m for m in _models(scores, models) if same.get(m)]
    if void:
        for key in ("C2", "C3", "C4", "C5", "C6"):
            values[key]["value"] = None
            values[key]["reason"] = (
                f"{egc} coincides with Grad-CAM on {', '.join(void)} (special case "
                f"'configured:{egc}' ≈ 0: the target layer is followed by pooling and a linear "
                "head, so ∂y/∂A is the same at every input); the comparison is void. Choose "
                "another variant in expected_gradcam.claims.method")
    return values


def equals_gradcam(special: pd.DataFrame, method: str, tolerance: float = 1e-6) -> dict:
    """Per model: does the configured ``method`` give Grad-CAM's maps (the special-cases
    diagnostic ``configured:<method>``, largest relative difference ≤ ``tolerance``)?"""
    if special.empty:
        return {}
    rows = special[special["case"] == f"configured:{method}"]
    return {model: bool(g["relative"].max() <= tolerance)
            for model, g in rows.groupby("model", sort=False)}


def directions_of(summary: pd.DataFrame) -> dict[str, bool]:
    """Each metric's direction as the comparison summary states it (the metric registry's)."""
    if summary.empty:
        return {}
    return {str(m): bool(h) for m, h in zip(summary["metric"], summary["higher_is_better"])}


def run(ctx) -> None:
    """The egc_claims stage: metrics/expected_gradcam/claims.json from the tables."""
    tables = {name: read_table(ctx.input(name), missing="empty") for name in ctx.stage.deps}
    pairing = Pairing(ctx.settings("expected_gradcam.bootstrap"), ctx.settings("seed"),
                      directions_of(tables.pop("summary")))
    values = claim_values(tables, ctx.settings("expected_gradcam.claims"), pairing)
    write_json(ctx.output("claims"), json_safe(values))
