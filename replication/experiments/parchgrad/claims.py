"""ParchGrad claim values (notes §4), derived from the stage tables only (``parchgrad_claims``).

``claim_values`` returns one entry per claim of ``claims/parchgrad.yaml`` (``C1``, ``C1b``, …):
``{"value": …, "value_ci": …, "detail": {…}}``. ``value`` is what the claim's check judges,
``value_ci`` its 95% interval (``stats.Interval``): a bootstrap over the explained images of the
whole statistic the claim judges (a mean, a paired mean difference, the smallest step of a
curve), seeded, ``parchgrad.claims.bootstrap_resamples`` resamples; or ``exact`` for the
deterministic ones (seeded toys, identities, pass counts, statistics of a whole set). A claim
measured on the ImageNet architectures (``parchgrad.claims.architectures``) has ``per_model``
beside its value, each architecture's value and interval; ``value`` stays the claim's model
(``parchgrad.claims.*_model``). A claim whose inputs were not produced (the boxes of C5/C6
offline, the authors' bug without class-wise statistics) gets ``value: null`` and a ``reason``;
an ImageNet claim whose run fell back to the 1000-image sample (no ILSVRC2012 archives) says so
in a ``note``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from replication.data import imagenet
from replication.experiments.parchgrad.loading import read_results, read_statistics_summaries
from replication.experiments.parchgrad.settings import ClaimsSettings
from replication.experiments.parchgrad.vc import ARTIFACT_MEASURES
from replication.fileio import json_safe, write_json
from replication.metrics import stats

CLAIM_IDS = ("C1", "C1b", "C1c", "C2", "C3", "C4", "C5", "C5b", "C6", "C7", "C8a", "C8b", "C8c",
             "C9", "C10", "C10b", "C11", "C12", "C13")
OFFLINE_BOXES = ("needs ILSVRC2012 validation images, ILSVRC2012_bbox_val_v3.tgz and the paper "
                 "profile's ImageNet models (ResNet-18, VGG16-BN, EfficientNet-B0); not "
                 "available offline")
# The result folders (stage inputs) the claims are read from.
RESULTS = ("toys", "vc", "q_sweep", "faithfulness", "costs", "statistics_checks", "bbox")
FAITHFULNESS = {"C8a": "morf_aopc", "C8b": "lerf_aopc", "C8c": "gini"}


@dataclass
class Inputs:
    """What the claims are computed from: the tables by stem, the statistics summaries by
    model, the claims settings, the bootstrap seed, and per model what the run used instead of
    ILSVRC2012 validation (``notes``: empty when it did not fall back)."""

    tables: Mapping[str, pd.DataFrame]
    statistics: Mapping[str, dict]
    settings: ClaimsSettings
    seed: int = 0
    notes: Mapping[str, str] = field(default_factory=dict)

    def table(self, name: str) -> pd.DataFrame | None:
        frame = self.tables.get(name)
        return frame if frame is not None and not frame.empty else None

    def mean(self, values, unit: str = "images") -> stats.Interval:
        """The mean over units (NaN dropped) with its bootstrap interval."""
        return self.interval(np.asarray(values, dtype=np.float64)[:, None], _first_mean, unit)

    def interval(self, rows: np.ndarray, statistic: Callable, unit: str = "images"
                 ) -> stats.Interval:
        rows = rows[~np.isnan(rows).any(axis=1)]
        return stats.bootstrap_statistic(rows, statistic, unit=unit, seed=self.seed,
                                         n_resamples=self.settings.bootstrap_resamples)


def _first_mean(rows: np.ndarray) -> float:
    return float(rows[:, 0].mean())


def _missing(reason: str) -> dict:
    return {"value": None, "detail": {}, "reason": reason}


def _measured(interval: stats.Interval, detail: dict, **extra) -> dict:
    return {"value": interval.value, "value_ci": interval.as_json(), "detail": detail, **extra}


def _exact(value: Any, detail: dict, **extra) -> dict:
    return {"value": value, "value_ci": stats.exact(float(value)).as_json(), "detail": detail,
            **extra}


def _per_model(inputs: Inputs, measure: Callable[[str], stats.Interval | None]) -> dict:
    """``{model: {value, value_ci}}`` over the architectures the claims name (those measured)."""
    found = {}
    for model in inputs.settings.architectures:
        interval = measure(model)
        if interval is not None:
            found[model] = {"value": interval.value, "value_ci": interval.as_json()}
    return found


def _with_notes(node: dict, inputs: Inputs, models: Sequence[str]) -> dict:
    """The claim with the fallback notes of the models it was measured on, if any."""
    notes = list(dict.fromkeys(inputs.notes[m] for m in models if inputs.notes.get(m)))
    if notes:
        node["note"] = "; ".join(notes)
    return node


# --------------------------------------------------------------------------- toys (exact)

def c1(inputs: Inputs) -> dict[str, dict]:
    sums, summary = inputs.table("e1_toy_sums"), inputs.table("e1_toy_summary")
    if sums is None or summary is None:
        return dict.fromkeys(("C1", "C1b", "C1c"), _missing("the toys stage did not run"))
    authors = sums[sums["reading"] == "code_uniform"].set_index("group")
    if authors.empty:
        return dict.fromkeys(("C1", "C1b", "C1c"), _missing(
            "the toy tables lack the authors' code_uniform reading"))
    total = authors.loc["total"]
    by_reading = summary.set_index("reading")
    detail = {
        "seed": int(total["seed"]),
        "sum_h": [float(authors.loc["H", "dim1"]), float(authors.loc["H", "dim2"])],
        "sum_l": [float(authors.loc["L", "dim1"]), float(authors.loc["L", "dim2"])],
        "sum_total": [float(total["dim1"]), float(total["dim2"])],
        "fraction_l_dominated": by_reading["fraction_l_dominated"].to_dict(),
        "fraction_within_1deg_of_diagonal":
            by_reading["fraction_total_within_1deg_of_diagonal"].to_dict(),
        "seeds": int(by_reading["seeds"].iloc[0]),
        "meaning": "C1: angle (degrees) between Σ_total of the authors' seed and (1, 1); C1b: "
                   "Σ_total dimension 1; C1c: fraction of seeds whose L group pulls Σ_total "
                   "more than 45° from Σ_H (the authors' uniform draws); seeded toys: exact"}
    return {"C1": _exact(abs(float(total["direction_deg"]) - 45.0), detail),
            "C1b": _exact(float(total["dim1"]), {}),
            "C1c": _exact(float(by_reading.loc["code_uniform", "fraction_l_dominated"]), {})}


def c2(inputs: Inputs) -> dict:
    table = inputs.table("c2_variance_identity")
    if table is None:
        return _missing("the toys stage did not run")
    infinite = table[np.isinf(table["gamma"])]
    value = float(np.nanmax(table[["sum_relative_error", "ratio_relative_error"]].to_numpy()))
    return _exact(value, {
        "max_sum_relative_error": float(table["sum_relative_error"].max()),
        "max_ratio_relative_error": float(table["ratio_relative_error"].max()),
        "gamma_inf_low_max_abs": float(infinite["low_max_abs"].max()) if len(infinite) else None,
        "gammas": sorted(set(table["gamma"].tolist())), "cases": int(len(table)),
        "meaning": "value: largest relative error of Var(S_H')+Var(S_L') = M+N and "
                   "Var(S_H')/Var(S_L') = γ² over seeded random gradients (float64): exact"})


def c13(inputs: Inputs) -> dict:
    table = inputs.table("e7_checkerboard")
    if table is None:
        return _missing("the toys stage did not run")
    stride1 = table[table["stride"] == 1]
    return _exact(float(table["relative_deviation"].max()), {
        "max_abs_grad_stride1": {f"{k:g}": float(v) for k, v in
                                 zip(stride1["k"], stride1["max_abs_grad"])},
        "strides": sorted(set(table["stride"].tolist())),
        "meaning": "value: largest max|grad_k/k − grad_1| / max|grad_1| (0 = exactly linear); "
                   "absolute values depend on the seeded initialisation: exact"})


# --------------------------------------------------------------------------- identities (exact)

def c3(inputs: Inputs) -> dict:
    table = inputs.table("e6_q_sweep")
    if table is None:
        return _missing("the q_sweep stage did not run")
    full = table[np.isclose(table["q"], 1.0)]
    if full.empty:
        return _missing("the q sweep has no q = 1.0")
    by_model = full.groupby("model")["max_relative_difference_no_shapiro"].max()
    per_model = _per_model(inputs, lambda m: stats.exact(float(by_model[m]))
                           if m in by_model else None)
    node = _exact(float(by_model.max()), {
        "with_shapiro_filter": full.groupby("model")["max_relative_difference"].max().to_dict(),
        "min_spearman_at_q1_with_filter": full.groupby("model")["spearman"].min().to_dict(),
        "images": full.groupby("model").size().to_dict(),
        "meaning": "value: max over images and models of max|PG(q=1) − Grad| / max|Grad| (raw "
                   "maps), Shapiro filter off (an identity: exact); with the authors' filter "
                   "q = 1 still drops the channels the filter rejects (with_shapiro_filter)"})
    if per_model:
        node["per_model"] = per_model
    return _with_notes(node, inputs, list(by_model.index))


def c4(inputs: Inputs) -> dict:
    pairs = inputs.table("e2_pairs")
    if pairs is None:
        return _missing("the vc stage did not run")
    model = inputs.settings.sequential_model
    chosen = pairs[(pairs["model"] == model) & (pairs["hooks"] == "default")]
    if chosen.empty:
        return _missing(f"the vc stage has no default-hook rows for {model}")
    grouped = pairs.groupby(["model", "hooks"])
    return _with_notes(_exact(float(chosen["pearson"].min()), {
        "model": model, "images": int(len(chosen)),
        "max_relative_residual": float(chosen["relative_residual"].max()),
        "min_best_scale": float(chosen["best_scale"].min()),
        "min_pearson_by_model_hooks": {f"{m} {h}": float(v) for (m, h), v
                                       in grouped["pearson"].min().items()},
        "meaning": "value: smallest per-image Pearson r between ParchGrad maps with and "
                   "without VC on the sequential model (an identity on every image: exact; "
                   "authors: VGG16-BN, mu_in_w 0.959 vs 0.959)"}), inputs, [model])


# --------------------------------------------------------------------------- box energy

def _bbox_rows(table: pd.DataFrame, model: str, hooks: str, q: float, pairing: str
               ) -> pd.DataFrame:
    """Per image: mu_in_w with VC (``vc``) and without (``no_vc``)."""
    chosen = table[(table["model"] == model) & (table["hooks"] == hooks)
                   & np.isclose(table["q"].astype(float), q) & (table["pairing"] == pairing)]
    vc = chosen["vc"].astype(str).isin(("True", "true", "1", "1.0"))
    return chosen.assign(vc=np.where(vc, "vc", "no_vc")).pivot_table(
        index="image", columns="vc", values="mu_in_w")


def _bbox_means(table: pd.DataFrame, model: str, hooks: str, q: float) -> dict:
    out = {}
    for pairing in dict.fromkeys(table["pairing"]):
        wide = _bbox_rows(table, model, hooks, q, pairing)
        out[pairing] = {k: float(wide[k].mean()) for k in ("vc", "no_vc") if k in wide}
    return out


def c5_c6(inputs: Inputs) -> dict[str, dict]:
    table = inputs.table("e4_bbox")
    if table is None:
        return dict.fromkeys(("C5", "C5b", "C6"), _missing(OFFLINE_BOXES))
    boxes = inputs.settings.bbox
    q, found = float(boxes.q), {}
    for cid, model, pairing, of in (("C5", boxes.resnet, "authors", "vc"),
                                    ("C5b", boxes.resnet, "correct", "difference"),
                                    ("C6", boxes.effnet, "authors", "difference")):
        wide = _bbox_rows(table, model, boxes.hooks, q, pairing)
        if wide.empty or not {"vc", "no_vc"} <= set(wide):
            found[cid] = _missing(f"no box-energy rows for {model} at {boxes.hooks}, q = {q:g} "
                                  f"with the {pairing} pairing")
            continue
        values = wide["vc"] if of == "vc" else wide["vc"] - wide["no_vc"]
        found[cid] = _with_notes(_measured(inputs.mean(values.to_numpy()), {
            "model": model, "hooks": boxes.hooks, "q": q, "pairing": pairing,
            "by_pairing": _bbox_means(table, model, boxes.hooks, q),
            "meaning": "mean over images of mu_in_w with VC" if of == "vc" else
                       "mean over images of mu_in_w(VC) − mu_in_w(no VC)"}), inputs, [model])
    return found


# --------------------------------------------------------------------------- paired differences

def _artifact_differences(table: pd.DataFrame, model: str, hooks: str) -> pd.DataFrame | None:
    """Per image, zero pruning − VC of each artifact measure (the first q of these hooks)."""
    chosen = table[(table["model"] == model) & (table["hooks"] == hooks)]
    if chosen.empty:
        return None
    chosen = chosen[np.isclose(chosen["q"], float(chosen["q"].iloc[0]))]
    wide = chosen.pivot_table(index="image", columns="variant", values=list(ARTIFACT_MEASURES))
    return pd.DataFrame({m: wide[m]["zero_pruning"] - wide[m]["vc"] for m in ARTIFACT_MEASURES})


def c7(inputs: Inputs) -> dict:
    table = inputs.table("e2_artifacts")
    if table is None:
        return _missing("the vc stage did not run")
    model, hooks = inputs.settings.skip_model, inputs.settings.skip_hooks
    differences = _artifact_differences(table, model, hooks)
    if differences is None:
        return _missing(f"the vc stage has no rows for {model} with hooks {hooks}")
    chosen = table[(table["model"] == model) & (table["hooks"] == hooks)]
    detail: dict[str, Any] = {"model": model, "hooks": hooks, "q": float(chosen["q"].iloc[0]),
                              "images": int(len(differences))}
    for measure in ARTIFACT_MEASURES:
        interval = inputs.mean(differences[measure].to_numpy())
        detail[measure] = {"mean_difference": interval.value, "ci": [interval.low, interval.high]}
    detail["meaning"] = ("value: mean over images of high-frequency energy (zero pruning) − "
                         "(VC); > 0 means zero pruning has more high-frequency artifacts")

    def measure(m: str) -> stats.Interval | None:
        found = _artifact_differences(table, m, hooks)
        return None if found is None else inputs.mean(found["hf_energy"].to_numpy())

    node = _measured(inputs.mean(differences["hf_energy"].to_numpy()), detail,
                     per_model=_per_model(inputs, measure))
    return _with_notes(node, inputs, [model, *node["per_model"]])


def _faithfulness_differences(per_image: pd.DataFrame, model: str, q: float) -> pd.DataFrame:
    """Per image, ParchGrad(Gradient, q) − Gradient of each E5 measure."""
    own = per_image[(per_image["model"] == model) & (per_image["base"] == "gradient")]
    base = own[own["q"].isna()].set_index("image")
    parchgrad = own[np.isclose(own["q"].astype(float), q)].set_index("image")
    shared = [i for i in base.index if i in parchgrad.index]
    return parchgrad.loc[shared, list(FAITHFULNESS.values())] - base.loc[
        shared, list(FAITHFULNESS.values())]


def c8(inputs: Inputs) -> dict[str, dict]:
    per_image, paired = inputs.table("e5_per_image"), inputs.table("e5_paired")
    if per_image is None:
        return dict.fromkeys(FAITHFULNESS, _missing("the faithfulness stage did not run"))
    model, q = inputs.settings.faithfulness_model, float(inputs.settings.faithfulness_q)
    differences = _faithfulness_differences(per_image, model, q)
    if differences.empty:
        return dict.fromkeys(FAITHFULNESS, _missing(
            f"no faithfulness rows for {model}, Gradient, q = {q:g}"))
    found = {}
    for cid, metric in FAITHFULNESS.items():
        def measure(m: str, metric: str = metric) -> stats.Interval | None:
            own = _faithfulness_differences(per_image, m, q)
            return None if own.empty else inputs.mean(own[metric].to_numpy())

        detail: dict[str, Any] = {"model": model, "base": "gradient", "q": q,
                                  "metric": metric, "images": int(len(differences))}
        if paired is not None and cid == "C8a":
            detail["favours_parchgrad"] = {
                f"{r.model} {r.base} q={r.q:g} {r.metric}": bool(r.favours_parchgrad)
                for r in paired.itertuples()}
        detail["meaning"] = (f"value: mean per-image {metric} of ParchGrad(Gradient, q={q:g}) − "
                             "Gradient (MoRF AOPC > 0 and LeRF AOPC < 0: more faithful; Gini > "
                             "0: sparser)")
        node = _measured(inputs.mean(differences[metric].to_numpy()), detail,
                         per_model=_per_model(inputs, measure))
        found[cid] = _with_notes(node, inputs, [model, *node["per_model"]])
    return found


# --------------------------------------------------------------------------- the q sweep (C9)

def _smallest_step(rows: np.ndarray) -> float:
    """The smallest fall of the mean between neighbouring q (columns: q decreasing)."""
    return float(np.min(-np.diff(rows.mean(axis=0))))


def _step_interval(inputs: Inputs, table: pd.DataFrame, model: str) -> stats.Interval:
    wide = table[table["model"] == model].pivot_table(index="image", columns="q",
                                                      values="spearman")
    wide = wide[sorted(wide.columns, reverse=True)]
    return inputs.interval(wide.to_numpy(), _smallest_step)


def least_favourable(intervals: Mapping[str, stats.Interval]) -> stats.Interval:
    """The smallest of several models' values, with the interval [smallest lower bound,
    smallest upper bound]: it lies above a bound only when every model's interval does, and
    below it as soon as one model's does (the claim must hold for every model)."""
    chosen = min(intervals.values(), key=lambda i: i.value)
    lows = [i.low for i in intervals.values()]
    highs = [i.high for i in intervals.values()]
    bounded = all(x is not None and np.isfinite(x) for x in lows + highs)
    return stats.Interval(chosen.value, min(lows) if bounded else None,
                          min(highs) if bounded else None,
                          min(i.n for i in intervals.values()), "bootstrap",
                          "images (least favourable model)")


def c9(inputs: Inputs) -> dict:
    table, summary = inputs.table("e6_q_sweep"), inputs.table("e6_q_sweep_summary")
    if table is None or summary is None:
        return _missing("the q_sweep stage did not run")
    present = list(dict.fromkeys(table["model"]))
    models = [m for m in inputs.settings.sweep_models if m in present]
    if not models:
        return _missing(f"the q sweep ran none of {list(inputs.settings.sweep_models)}")
    intervals = {m: _step_interval(inputs, table, m) for m in present}
    spearman, ssim = (summary[summary["metric"] == k] for k in ("spearman", "ssim"))
    detail = {
        "smallest_step_by_model": {m: i.value for m, i in intervals.items()},
        "monotone_spearman": {m: bool(g["monotone"].all()) for m, g in spearman.groupby("model")},
        "monotone_ssim": {m: bool(g["monotone"].all()) for m, g in ssim.groupby("model")},
        "mean_spearman": {m: {f"{q:g}": float(v) for q, v in zip(g["q"], g["mean"])}
                          for m, g in spearman.groupby("model")},
        "models": models,
        "meaning": "value: the smallest fall of the mean Spearman to the Gradient map between "
                   "neighbouring q (decreasing q), over the claim's models (sweep_models); ≥ 0: "
                   "monotone. Interval: the least favourable model's bound on each side"}
    node = _measured(least_favourable({m: intervals[m] for m in models}), detail,
                     per_model=_per_model(inputs, lambda m: intervals.get(m)))
    return _with_notes(node, inputs, present)


# --------------------------------------------------------------------------- costs (C10)

def c10(inputs: Inputs) -> dict[str, dict]:
    costs, pairs = inputs.table("e3_costs"), inputs.table("e3_paired_timings")
    if costs is None or pairs is None:
        return dict.fromkeys(("C10", "C10b"), _missing("the costs stage did not run"))
    model = inputs.settings.cost_model
    provided = costs[costs["provided"].astype(bool)]

    def passes(m: str) -> int | None:
        own = provided[(provided["model"] == m) & (provided["engine_method"] == "parchgrad")]
        return None if own.empty else int(own["forward_backward"].iloc[0])

    def ratio(m: str) -> stats.Interval | None:
        own = pairs[pairs["model"] == m]
        if own.empty:
            return None
        return inputs.interval(own[["gradient_seconds", "parchgrad_seconds"]].to_numpy(),
                               _median_ratio, unit="timing repeats")

    if passes(model) is None or ratio(model) is None:
        return dict.fromkeys(("C10", "C10b"), _missing(f"no ParchGrad / Gradient timings for "
                                                       f"{model}"))
    chosen = provided[provided["model"] == model].set_index("engine_method")
    seconds = chosen["seconds_per_map"]
    detail = {"model": model,
              "passes": {m: [int(r.forward_backward), int(r.forward)] for m, r in chosen.iterrows()},
              "seconds_per_map": seconds.to_dict(),
              "fastest_time_ratio": float(seconds["parchgrad"] / seconds["gradient"]),
              "load_average_1min": float(chosen["load_average_1min"].max()),
              "meaning": "C10: forward+backward passes of ParchGrad per map (exact); C10b: "
                         "median over alternating timings of ParchGrad / Gradient seconds per "
                         "map, interval over the timing repeats"}
    if "smoothgrad" in seconds and np.isfinite(seconds["smoothgrad"]):
        detail["time_ratio_smoothgrad_to_gradient"] = float(seconds["smoothgrad"]
                                                            / seconds["gradient"])
    per_passes = _per_model(inputs, lambda m: None if passes(m) is None
                            else stats.exact(passes(m)))
    nodes = {"C10": _exact(passes(model), detail, per_model=per_passes),
             "C10b": _measured(ratio(model), {"repeats": int((pairs["model"] == model).sum())},
                               per_model=_per_model(inputs, ratio))}
    return {cid: _with_notes(node, inputs, [model]) for cid, node in nodes.items()}


def _median_ratio(rows: np.ndarray) -> float:
    return float(np.median(rows[:, 1] / rows[:, 0]))


# --------------------------------------------------------------------------- statistics

def c11(inputs: Inputs) -> dict:
    model, statistics = inputs.settings.shapiro_model, inputs.statistics
    if model not in statistics:
        return _missing(f"no statistics summary for {model}")
    by_model = {name: s.get("shapiro_below_0.05") for name, s in statistics.items()}
    if not by_model[model]:
        return _missing(f"the statistics of {model} carry no Shapiro p-values")
    node = _exact(float(by_model[model]["fraction"]), {
        "model": model, "by_model": by_model,
        "n_images": {name: s.get("n_images") for name, s in statistics.items()},
        "meaning": "value: fraction of channels whose GAP has Shapiro p < 0.05 (kept by the "
                   "authors' filter), over the whole statistics set: the filter's decisions on "
                   "the set it runs on, exact"})
    subsets = {name: s["subset_note"] for name, s in statistics.items() if s.get("subset_note")}
    node["detail"]["subsets"] = subsets  # fewer images: less power, not the claim's set

    def fraction(m: str) -> stats.Interval | None:
        return None if not by_model.get(m) or m in subsets else stats.exact(
            by_model[m]["fraction"])

    node["per_model"] = _per_model(inputs, fraction)
    return _with_notes(node, inputs, [model, *node["per_model"]])


def c12(inputs: Inputs) -> dict:
    selection, maps = inputs.table("s1_bug_selection"), inputs.table("s1_bug_maps")
    status = inputs.table("s1_bug_status")
    model = inputs.settings.bug_model
    skipped = (status[(status["model"] == model) & (status["status"] != "run")]
               if status is not None else pd.DataFrame())
    if not skipped.empty:
        return _with_notes(_missing(str(skipped["reason"].iloc[0])), inputs, [model])
    if selection is None:
        return _missing("the statistics_checks stage did not run or had no class-wise model")
    chosen = selection[selection["model"] == model]
    earlier = chosen[~chosen["is_last_conv"].astype(bool)]
    if earlier.empty:
        return _missing(f"{model} has no hooked conv before the last one")
    last = chosen["is_last_conv"].astype(bool)
    detail = {"model": model,
              "jaccard_by_layer_q": {f"{r.layer} q={r.q:g}": float(r.jaccard_mean)
                                     for r in chosen.itertuples()},
              "bug_reproduced_last_layer_copy":
                  bool(chosen["bug_is_last_layer_copy"].astype(bool).all()),
              "last_conv_jaccard": float(chosen.loc[last, "jaccard_mean"].min())
              if last.any() else None}
    if maps is not None:
        own = maps[maps["model"] == model]
        detail["map_spearman_mean"] = {f"q={q:g}": float(g["spearman"].mean())
                                       for q, g in own.groupby("q")}
        detail["map_spearman_min"] = float(own["spearman"].min())
    detail["meaning"] = ("value: mean Jaccard index of the H sets of corrected vs bug-compatible "
                         "statistics over hooked convs before the last, over every class (a "
                         "function of the statistics set: exact; 1 = the bug changes nothing)")
    return _exact(float(earlier["jaccard_mean"].mean()), detail)


# --------------------------------------------------------------------------- all of them

def claim_values(inputs: Inputs) -> dict:
    """Every claim value, JSON-safe, in ``CLAIM_IDS`` order."""
    values = {**c1(inputs), "C2": c2(inputs), "C3": c3(inputs), "C4": c4(inputs),
              **c5_c6(inputs), "C7": c7(inputs), **c8(inputs), "C9": c9(inputs),
              **c10(inputs), "C11": c11(inputs), "C12": c12(inputs), "C13": c13(inputs)}
    return json_safe({cid: values[cid] for cid in CLAIM_IDS}, infinity_as_string=True)


def fallback_notes(ctx, statistics: Mapping[str, dict]) -> dict[str, str]:
    """Per model explaining ImageNet images: what the run used instead of ILSVRC2012
    validation when its archives were missing (the images, the statistics); none otherwise."""
    _, images = imagenet.evaluation_folder(ctx.settings("imagenet.source"),
                                           ctx.input("imagenet_sample"),
                                           ctx.input("ilsvrc2012_val"))
    notes = {}
    for name, entry in ctx.settings("parchgrad.models").items():
        if entry.images != "imagenet":
            continue
        parts = [images, statistics.get(name, {}).get("fallback_note", "")]
        if any(parts):
            notes[entry.model] = "; ".join(p for p in parts if p)
    return notes


def run(ctx) -> None:
    """Every claim value from the tables into one JSON (``metrics/parchgrad/claims.json``)."""
    statistics = read_statistics_summaries(ctx.input("statistics_metrics"))
    inputs = Inputs(read_results(ctx.input(name) for name in RESULTS), statistics,
                    ctx.settings("parchgrad.claims"), ctx.settings("seed"),
                    fallback_notes(ctx, statistics))
    write_json(ctx.output("out"), claim_values(inputs))
