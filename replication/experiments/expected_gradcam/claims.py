"""Claim values C1–C9 (paper_notes/expected_gradcam.md §4) derived from the stage tables.

Each claim gets ``{"value": number or null, "value_ci": …, "n": …, "detail": {…}}`` (plus
``reason`` when null), a number that claims/expected_gradcam.yaml judges with one operator and
its 95% interval (``replication.claims``' verdict rule). A claim is judged on the models in
``claims.models`` (the ImageNet models: the paper's domain); when there are several, ``value``
is the least favourable of them, so the claim must hold on every model. The interval bootstraps
that whole statistic (the least favourable of the models' means, ranks, trends) over the images
every claim model was scored on (the models explain the same seeded images), with the bootstrap
settings of params.yaml. Each model of ``claims.architectures`` is also judged alone, in
``per_model`` (the report's per-architecture columns); every model is in ``detail``, with the
paired tests (``stats.compare_to_reference``). ``claims.method`` names the configured method
that stands for Expected Grad-CAM; the other configured variants appear in the detail. C9 is an
identity of our reconstruction: exact. Every threshold is ours [I]: the paper's numbers are
unknown.
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
from replication.experiments.expected_gradcam.localisation import ENERGY
from replication.experiments.expected_gradcam.methods import GRADIENT_CAMS
from replication.experiments.expected_gradcam.saturation import (SATURATED_AT,
                                                                 channel_insertion_auc,
                                                                 saturation_groups)
from replication.experiments.expected_gradcam.settings import Bootstrap, Claims
from replication.experiments.expected_gradcam.special_cases import REDUCTION_CASES
from replication.fileio import json_safe, read_json, read_table, write_json
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


@dataclass(frozen=True)
class PerImage:
    """One model's part of a claim's statistic: its per-image values (a frame indexed by image,
    one column per quantity the statistic combines, in the order ``statistic`` expects) and the
    statistic of those rows (an (n, columns) array)."""

    frame: pd.DataFrame
    statistic: Callable[[np.ndarray], float]


def _bootstrapped(rows: np.ndarray, statistic: Callable[[np.ndarray], float],
                  pairing: Pairing) -> stats.Interval:
    return stats.bootstrap_statistic(rows, statistic, unit="images",
                                     n_resamples=pairing.bootstrap.n_resamples,
                                     confidence=pairing.bootstrap.confidence, seed=pairing.seed)


def _judged(parts: Mapping[str, PerImage], models: Sequence[str], architectures: Sequence[str],
            worst: Callable[[Sequence[float]], float], pairing: Pairing) -> dict:
    """The claim's value and its 95% interval: the least favourable (``worst``) of the claim
    models' statistics on the images every one of them was scored on, the whole of it
    bootstrapped over those images; and the same per model for ``architectures`` (each on its
    own images; a reason where it has none), in ``per_model`` when there are several."""
    present = [m for m in models if m in parts]
    out: dict[str, Any] = {"value": None, "value_ci": None, "n": None}
    if present:
        joint = pd.concat([parts[m].frame for m in present], axis=1, keys=present,
                          join="inner").dropna()
        edges = np.cumsum([0] + [parts[m].frame.shape[1] for m in present])

        def least_favourable(rows: np.ndarray) -> float:
            return worst([parts[m].statistic(rows[:, a:b])
                          for m, a, b in zip(present, edges[:-1], edges[1:])])

        if len(joint):
            interval = _bootstrapped(joint.to_numpy(dtype=np.float64), least_favourable, pairing)
            out.update(value=interval.value, value_ci=interval.as_json(), n=interval.n)
    if len(architectures) > 1 and any(m in parts for m in architectures):
        out["per_model"] = {model: _alone(parts.get(model), model, pairing)
                            for model in architectures}
    return out


def _alone(part: PerImage | None, model: str, pairing: Pairing) -> dict:
    """One architecture's value and interval (its own images), or why there is none."""
    rows = (part.frame.dropna().to_numpy(dtype=np.float64) if part is not None
            else np.zeros((0, 0)))
    if not len(rows):
        return {"value": None, "reason": f"not measured on {model} in this run (its image count "
                                         "for this claim's experiment is 0)"}
    interval = _bootstrapped(rows, part.statistic, pairing)
    return {"value": interval.value, "value_ci": interval.as_json(), "n": interval.n}


def _mean_difference(rows: np.ndarray) -> float:
    """Mean over images of column 0 − column 1 (a paired difference)."""
    return float(np.mean(rows[:, 0] - rows[:, 1]))


def _wide(scores: pd.DataFrame, model: str, metric: str, methods: Sequence[str]) -> pd.DataFrame:
    """Per image, ``metric`` of each method (columns in the order of ``methods``, those
    present); images with a missing value dropped."""
    rows = scores[(scores["model"] == model) & (scores["metric"] == metric)
                  & scores["method"].isin(methods)]
    table = rows.pivot(index="image", columns="method", values="value")
    return table[[m for m in methods if m in table]].dropna()


def _paired_parts(scores: pd.DataFrame, metric: str, a: str, b: str) -> dict[str, PerImage]:
    """Per model with both methods: the per-image (a, b) values of ``metric``."""
    parts = {}
    for model in dict.fromkeys(scores["model"]):
        frame = _wide(scores, model, metric, [a, b])
        if frame.shape[1] == 2 and len(frame):
            parts[model] = PerImage(frame, _mean_difference)
    return parts


def _claim(judged: Mapping[str, Any], entry: Mapping | None, detail: Any, reason: str = "",
           keys: Sequence[str] = ("p_value",)) -> dict:
    """A claim's JSON: value, its interval and n, the worst model's ``keys``, detail."""
    out: dict[str, Any] = {"value": judged.get("value"), "value_ci": judged.get("value_ci"),
                           "n": judged.get("n")}
    for key in keys:
        out[key] = None if entry is None else entry.get(key)
    if "per_model" in judged:
        out["per_model"] = judged["per_model"]
    out["detail"] = detail
    if out["value"] is None:
        out["reason"] = reason or ("none of the claim models (expected_gradcam.claims.models) "
                                   "has data for this claim in this run")
    return out


def _not_run(reason: str) -> dict:
    return _claim({}, None, {}, reason)


def c1_saturation(alpha_star: pd.DataFrame, topk: pd.DataFrame, claims: Claims,
                  pairing: Pairing) -> dict:
    """C1: median α* (black baseline) per model; value = the largest over the claim models
    (judged ≤ 0.7). Detail: the share of images with α* ≤ 0.7, the data-baseline median, and the
    top-k channel AUC difference Expected Grad-CAM − Grad-CAM in the strong-saturation half
    versus the rest (our reading of the appendix's top-k insertion)."""
    if alpha_star.empty:
        return _not_run("the saturation stage did not run")
    detail: dict[str, dict] = {}
    parts = {}
    groups = saturation_groups(alpha_star)
    aucs = channel_insertion_auc(topk) if len(topk) else None
    for model in dict.fromkeys(alpha_star["model"]):
        rows = alpha_star[alpha_star["model"] == model]
        black = rows[rows["baseline"] == "black"].set_index("image")[["alpha_star"]].dropna()
        data = rows[rows["baseline"] == "data"]["alpha_star"].dropna()
        values = black["alpha_star"]
        entry = {"median_alpha_star": float(values.median()) if len(values) else None,
                 "share_at_most_0.7": float((values <= SATURATED_AT).mean()) if len(values)
                 else None,
                 "median_alpha_star_data": float(data.median()) if len(data) else None,
                 "n": int(values.size)}
        if aucs is not None:
            merged = aucs[aucs["model"] == model].merge(groups, on=["model", "image"])
            wide = merged.pivot(index=["image", "group"], columns="method", values="auc")
            for method in [m for m in wide.columns if m != GC and GC in wide]:
                diff = (wide[method] - wide[GC]).groupby(level="group").mean()
                entry[f"topk_auc_difference_{method}_minus_gradcam"] = diff.to_dict()
        detail[model] = entry
        if len(black):
            parts[model] = PerImage(black, lambda r: float(np.median(r[:, 0])))
    judged = _judged(parts, _models(alpha_star, claims.models), claims.architectures, max,
                     pairing)
    return _claim(judged, None, detail, keys=())


def _variants(scores: pd.DataFrame, model: str, metric: str, egc: str, reference: str,
              pairing: Pairing) -> dict:
    """The same paired difference for the other configured Expected Grad-CAMs (detail)."""
    others = [m for m in dict.fromkeys(scores[scores["model"] == model]["method"])
              if m.startswith("expected_gradcam") and m not in (egc, "expected_gradcam_pp")]
    return {m: _paired(scores, model, metric, m, reference, pairing) for m in others}


def _worst_entry(detail: Mapping[str, dict | None], key: str, models: Sequence[str],
                 worst: Callable[[Sequence[float]], float]) -> dict | None:
    """The detail entry of the least favourable claim model (for its p-value)."""
    return _worst(detail, key, models, worst)[1]


def c2_faithfulness(scores: pd.DataFrame, claims: Claims, pairing: Pairing,
                    egc: str = EGC) -> dict:
    """C2: mean paired insertion difference Expected Grad-CAM − Grad-CAM (judged > 0); value =
    the smallest over the claim models. Detail: deletion (lower is better) and the other
    gradient CAMs' insertion differences for the ranking."""
    detail = {}
    for model in dict.fromkeys(scores["model"]):
        entry = _paired(scores, model, "insertion", egc, GC, pairing)
        if entry is None:
            continue
        entry["deletion"] = _paired(scores, model, "deletion", egc, GC, pairing)
        entry["other_variants"] = _variants(scores, model, "insertion", egc, GC, pairing)
        means = scores[(scores["model"] == model) & (scores["metric"] == "insertion")
                       ].groupby("method")["value"].mean().sort_values(ascending=False)
        entry["insertion_ranking"] = list(means.index)
        detail[model] = entry
    models = _models(scores, claims.models)
    judged = _judged(_paired_parts(scores, "insertion", egc, GC), models, claims.architectures,
                     min, pairing)
    return _claim(judged, _worst_entry(detail, "difference", models, min), detail)


def _rank_first(rows: np.ndarray) -> float:
    """1 + the methods whose mean is below column 0's (the rank of column 0, 1 = lowest)."""
    means = rows.mean(0)
    return float(1 + np.sum(means[1:] < means[0]))


def c3_infidelity(scores: pd.DataFrame, claims: Claims, pairing: Pairing,
                  egc: str = EGC, metric: str = "infidelity") -> dict:
    """C3: rank of Expected Grad-CAM's mean infidelity among the gradient CAMs (1 = lowest) on
    the images every one of them was scored on; value = the worst rank over the claim models
    (judged ≤ 1). Detail: the means and the paired differences with Grad-CAM and Integrated
    Grad-CAM."""
    detail, parts = {}, {}
    ranked = [egc] + [m for m in GRADIENT_CAMS if m != EGC]
    for model in dict.fromkeys(scores["model"]):
        table = _wide(scores, model, metric, ranked)
        if egc not in table or table.empty:
            continue
        parts[model] = PerImage(table, _rank_first)
        means = table.mean().sort_values()
        detail[model] = {"rank": int(_rank_first(table.to_numpy())), "of": int(table.shape[1]),
                         "means": means.to_dict(), "n": int(len(table)),
                         "vs_gradcam": _paired(scores, model, metric, egc, GC, pairing),
                         "vs_integrated_gradcam": _paired(scores, model, metric, egc, IGC,
                                                          pairing),
                         "other_variants": _variants(scores, model, metric, egc, GC, pairing)}
    judged = _judged(parts, _models(scores, claims.models), claims.architectures, max, pairing)
    return _claim(judged, None, detail, keys=())


def _largest_difference(rows: np.ndarray) -> float:
    """The largest mean paired difference column 0 − column j over the other columns."""
    return float(max(np.mean(rows[:, 0] - rows[:, j]) for j in range(1, rows.shape[1])))


def c4_robustness(scores: pd.DataFrame, claims: Claims, pairing: Pairing,
                  egc: str = EGC) -> dict:
    """C4: max-sensitivity differences Expected Grad-CAM − Grad-CAM and − Integrated Grad-CAM
    on the images all three were scored on; value = the largest of both over the claim models
    (judged < 0: lower than both)."""
    detail, parts = {}, {}
    for model in dict.fromkeys(scores["model"]):
        pairs = {other: _paired(scores, model, "max_sensitivity", egc, other, pairing)
                 for other in (GC, IGC)}
        pairs = {k: v for k, v in pairs.items() if v is not None}
        if not pairs:
            continue
        worst = max(pairs.values(), key=lambda e: e["difference"])
        detail[model] = {**worst, "comparisons": pairs}
        parts[model] = PerImage(_wide(scores, model, "max_sensitivity", [egc, GC, IGC]),
                                _largest_difference)
    models = _models(scores, claims.models)
    judged = _judged(parts, models, claims.architectures, max, pairing)
    return _claim(judged, _worst_entry(detail, "difference", models, max), detail)


def complexity_trend(sigmas: Sequence[float]) -> Callable[[np.ndarray], float]:
    """|Spearman ρ| between ``sigmas`` and the per-σ means of the rows' columns (one per σ);
    0 when σ leaves the mean complexity unchanged (ρ undefined), NaN below three σ."""
    sigmas = np.asarray(sigmas, dtype=np.float64)

    def statistic(rows: np.ndarray) -> float:
        means = rows.mean(0)
        if len(means) < 3:
            return math.nan
        if np.ptp(means) <= 1e-9 * max(1.0, abs(means.mean())):
            return 0.0
        return abs(float(scipy_stats.spearmanr(sigmas, means).statistic))

    return statistic


def c5_complexity(sigma_sweep: pd.DataFrame, claims: Claims, pairing: Pairing,
                  egc: str = EGC) -> dict:
    """C5: Spearman |ρ| between σ and the mean complexity over the σ sweep; value = the smallest
    over the claim models (judged ≥ 0.9). Detail: ρ with its sign and the per-σ means of every
    swept metric."""
    if sigma_sweep.empty:
        return _not_run("the smoothing stage did not run")
    sigma_sweep = sigma_sweep[sigma_sweep["method"] == egc]
    detail, parts = {}, {}
    for model in dict.fromkeys(sigma_sweep["model"]):
        rows = sigma_sweep[sigma_sweep["model"] == model]
        means = rows.groupby(["metric", "sigma"])["value"].mean()
        if "complexity" not in means.index.get_level_values(0):
            continue
        table = (rows[rows["metric"] == "complexity"]
                 .pivot(index="image", columns="sigma", values="value").dropna())
        complexity = table.mean()
        rho = (math.nan if len(complexity) < 3 else
               0.0 if complexity_trend(table.columns)(table.to_numpy()) == 0.0 else
               float(scipy_stats.spearmanr(complexity.index, complexity.to_numpy()).statistic))
        detail[model] = {"abs_rho": abs(rho), "rho": rho, "n": int(len(complexity)),
                         "n_images": int(len(table)),
                         "means": {m: means.loc[m].to_dict()
                                   for m in means.index.get_level_values(0).unique()}}
        parts[model] = PerImage(table, complexity_trend(table.columns))
    models = _models(sigma_sweep, claims.models)
    judged = _judged(parts, models, claims.architectures, min, pairing)
    out = _claim(judged, _worst_entry(detail, "abs_rho", models, min), detail, keys=("rho",))
    out["n_sigmas"] = None if judged["value"] is None else len(parts[models[0]].frame.columns)
    return out


def c6_baseline_sensitivity(pairs: pd.DataFrame, claims: Claims, pairing: Pairing,
                            egc: str = EGC) -> dict:
    """C6: per image, the mean pairwise Spearman over configurations; paired difference
    Expected Grad-CAM − Integrated Grad-CAM; value = the smallest over the claim models (judged
    > 0: Expected Grad-CAM's maps depend less on the baseline choice)."""
    if pairs.empty:
        return _not_run("the baseline stage did not run")
    means = mean_pairwise(pairs).rename(columns={"mean_spearman": "value"})
    means["metric"] = CONSISTENCY
    pairing = Pairing(pairing.bootstrap, pairing.seed, {**pairing.directions, CONSISTENCY: True})
    detail = {}
    for model in dict.fromkeys(means["model"]):
        entry = _paired(means, model, CONSISTENCY, egc, IGC, pairing)
        if entry is None:
            continue
        entry["means"] = means[means["model"] == model].groupby("method")["value"].mean().to_dict()
        detail[model] = entry
    models = _models(means, claims.models)
    judged = _judged(_paired_parts(means, CONSISTENCY, egc, IGC), models, claims.architectures,
                     min, pairing)
    return _claim(judged, _worst_entry(detail, "difference", models, min), detail)


def c7_localisation(table: pd.DataFrame, claims: Claims, pairing: Pairing, reason: str,
                    egc: str = EGC) -> dict:
    """C7: mean paired difference of the energy in the boxes, Expected Grad-CAM − Grad-CAM
    (judged > 0); value = the smallest over the claim models. Detail: every scored method's
    mean energy and pointing-game hit rate."""
    if table.empty:
        return _not_run(reason or "the localisation stage scored no image")
    energy = table[table["metric"] == ENERGY]
    pairing = Pairing(pairing.bootstrap, pairing.seed, {**pairing.directions, ENERGY: True})
    detail = {}
    for model in dict.fromkeys(energy["model"]):
        entry = _paired(energy, model, ENERGY, egc, GC, pairing) or {}
        entry["means"] = (table[table["model"] == model].groupby(["metric", "method"])["value"]
                          .mean().unstack().to_dict(orient="index"))
        detail[model] = entry
    models = _models(energy, claims.models)
    judged = _judged(_paired_parts(energy, ENERGY, egc, GC), models, claims.architectures, min,
                     pairing)
    return _claim(judged, _worst_entry(detail, "difference", models, min), detail)


def c8_substitute(scores: pd.DataFrame, claims: Claims, pairing: Pairing) -> dict:
    """C8 (optional): insertion difference Expected Grad-CAM++ (ours) − Grad-CAM++; value = the
    smallest over ``claims.substitute_models`` (the claim models when none are named). Detail:
    every metric's paired difference."""
    detail = {}
    for model in dict.fromkeys(scores["model"]):
        entry = _paired(scores, model, "insertion", "expected_gradcam_pp", "gradcam_pp", pairing)
        if entry is None:
            continue
        metrics = scores[scores["model"] == model]["metric"].unique()
        entry["all_metrics"] = {m: _paired(scores, model, m, "expected_gradcam_pp",
                                           "gradcam_pp", pairing) for m in metrics}
        detail[model] = entry
    wanted = list(claims.substitute_models or claims.models)
    models = _models(scores, wanted)
    judged = _judged(_paired_parts(scores, "insertion", "expected_gradcam_pp", "gradcam_pp"),
                     models, wanted, min, pairing)
    missing = "expected_gradcam_pp" not in set(scores["method"])
    return _claim(judged, _worst_entry(detail, "difference", models, min), detail,
                  reason="Expected Grad-CAM++ was not in expected_gradcam.comparison.methods"
                  if missing else "")


def c9_special_cases(special: pd.DataFrame) -> dict:
    """C9: the largest relative difference max|a − b| / max|b| over the exact reductions
    (Grad-CAM, Integrated Grad-CAM, Grad-CAM++), every model and image (judged < 1e-4): an
    identity of our reconstruction, so exact (no interval). Detail: per model and case, and the
    layer-EG completeness gaps (approximate, reported only)."""
    if special.empty:
        return _not_run("the special-cases stage did not run")
    exact = special[special["case"].isin(REDUCTION_CASES)]
    detail = {model: rows.groupby("case")["relative"].agg(["max", "median", "size"])
              .rename(columns={"size": "n"}).to_dict(orient="index")
              for model, rows in special.groupby("model", sort=False)}
    value = float(exact["relative"].max()) if len(exact) else None
    judged = {"value": value, "n": int(len(exact)),
              "value_ci": None if value is None else stats.exact(value).as_json()}
    return _claim(judged, None, detail, keys=())


def claim_values(tables: Mapping[str, pd.DataFrame], claims: Claims, pairing: Pairing,
                 localisation_reason: str = "") -> dict:
    """{"C1": {"value": …, "value_ci": …, "n": …, "detail": …}, …, "C9": …} from the stage
    tables (``scores``, ``alpha_star``, ``topk``, ``sigma_sweep``, ``pairs``, ``localisation``,
    ``special_cases``; a missing or empty table gives null claims, with
    ``localisation_reason`` for C7)."""
    empty = pd.DataFrame()
    scores = tables.get("scores", empty)
    scores = scores if len(scores) else pd.DataFrame(columns=SCORE_COLUMNS)
    special = tables.get("special_cases", empty)
    egc = claims.method
    same = equals_gradcam(special, egc)
    values = {
        "C1": c1_saturation(tables.get("alpha_star", empty), tables.get("topk", empty), claims,
                            pairing),
        "C2": c2_faithfulness(scores, claims, pairing, egc),
        "C3": c3_infidelity(scores, claims, pairing, egc),
        "C4": c4_robustness(scores, claims, pairing, egc),
        "C5": c5_complexity(tables.get("sigma_sweep", empty), claims, pairing, egc),
        "C6": c6_baseline_sensitivity(tables.get("pairs", empty), claims, pairing, egc),
        "C7": c7_localisation(tables.get("localisation", empty), claims, pairing,
                              localisation_reason, egc),
        # Expected Grad-CAM++ equals Grad-CAM++ where the CAM layer feeds pooling and a linear
        # head (Lite0), so C8 may be judged on other models: claims.substitute_models.
        "C8": c8_substitute(scores, claims, pairing),
        "C9": c9_special_cases(special),
        "claim_models": list(claims.models),
        "claim_method": egc,
        "claim_method_equals_gradcam": same,
    }
    void_claims(values, egc, same, list(claims.models))
    return values


VOIDABLE = ("C2", "C3", "C4", "C5", "C6", "C7")


def void_claims(values: dict, egc: str, same: Mapping[str, bool], models: Sequence[str]) -> None:
    """Where the claim method coincides with Grad-CAM the comparisons C2–C7 are void: on a
    claim model, the claim's value; on an architecture, its per-model entry."""
    def reason(void: Sequence[str]) -> str:
        return (f"{egc} coincides with Grad-CAM on {', '.join(void)} (special case "
                f"'configured:{egc}' ≈ 0: the target layer is followed by pooling and a linear "
                "head, so ∂y/∂A is the same at every input); the comparison is void. Choose "
                "another variant in expected_gradcam.claims.method")

    for key in VOIDABLE:
        claim = values[key]
        for model, entry in claim.get("per_model", {}).items():
            if same.get(model):
                claim["per_model"][model] = {"value": None, "reason": reason([model])}
        void = [m for m in models if same.get(m) and m in claim.get("detail", {})]
        if void:
            claim.update(value=None, value_ci=None, reason=reason(void))


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
    tables = {name: read_table(ctx.input(name), missing="empty") for name in ctx.stage.deps
              if ctx.input(name).suffix == ".csv"}
    pairing = Pairing(ctx.settings("expected_gradcam.bootstrap"), ctx.settings("seed"),
                      directions_of(tables.pop("summary")))
    localisation = read_json(ctx.input("localisation_metrics"), missing="empty")
    values = claim_values(tables, ctx.settings("expected_gradcam.claims"), pairing,
                          localisation.get("reason", ""))
    write_json(ctx.output("claims"), json_safe(values))
