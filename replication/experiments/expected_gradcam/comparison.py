"""Exp. 1: every method × every metric, per image, and its paired summary against Grad-CAM
(claims C2–C4, C8), with the qualitative panels; their figures and tables.

All of it is our reconstruction (paper_notes/expected_gradcam.md): the paper's code and body are
unavailable. Metrics see the raw maps upsampled to the input (bilinear): infidelity depends on
their scale (the un-normalised map is what the notes ask for); insertion, deletion and ROAD
depend on ranks only; complexity, sparseness and max-sensitivity normalise internally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plotting
from replication.attribution import Explainer
from replication.experiments.common import stage_explainer
from replication.experiments.expected_gradcam import drawing
from replication.experiments.expected_gradcam.drawing import (Table, View, colour, gallery,
                                                              model_label, overlay, paired_table,
                                                              short)
from replication.experiments.expected_gradcam.loading import (Loaded, count, display_pixels,
                                                              run_models, seconds_since)
from replication.experiments.expected_gradcam.methods import (REFERENCE_METHOD, build_method,
                                                              configured_methods,
                                                              metric_rows, upsampled)
from replication.experiments.expected_gradcam.settings import Bootstrap, Comparison, metric_specs
from replication.fileio import concat_tables, json_safe, write_json, write_npz, write_table
from replication.metrics import stats
from replication.progress import progress

NUMERICAL_TOLERANCE = 1e-6  # relative: differences below it are float round-off
SCORE_COLUMNS = ["model", "method", "image", "metric", "value"]


@dataclass
class MethodScores:
    """Per-image scores (model, method, image, metric, value) and the first images' raw coarse
    maps of every method (``panels[method]``: (n, h, w), NaN where a method ran on fewer)."""

    scores: pd.DataFrame
    panels: dict[str, np.ndarray]
    targets: np.ndarray


def compare_methods(loaded: Loaded, settings: Comparison, methods: Mapping[str, Any],
                    explainer: Explainer, *, seed: int, batch_size: int) -> MethodScores:
    """Every method of ``settings.methods`` × every metric, per image: ``images`` for the maps
    (and the metrics without their own count), at most ``method_images`` per method, the first
    ``panel_images`` raw maps kept."""
    x_all, targets = loaded.first(settings.images)
    n_panel = count(settings.panel_images, len(x_all))
    specs = metric_specs(settings.metrics, "comparison.metrics")
    rows: list[dict] = []
    panels: dict[str, np.ndarray] = {}
    for method in progress(settings.methods, f"{loaded.name} comparison", unit="method"):
        n_method = count(settings.method_cap(method), len(x_all))
        if n_method == 0:
            continue
        attribution = build_method(loaded.card, method, methods[method], loaded.references.images)
        x, t = x_all[:n_method], targets[:n_method]
        coarse = explainer.raw(attribution, x, t)
        panel = np.full((n_panel, *coarse.shape[-2:]), np.nan, dtype=np.float32)
        panel[:min(n_panel, n_method)] = coarse[:n_panel, 0].numpy()
        panels[method] = panel
        rows += metric_rows(loaded, method, attribution, specs, x, t, upsampled(coarse, x),
                            seed=seed, batch_size=batch_size)
    return MethodScores(pd.DataFrame(rows, columns=SCORE_COLUMNS), panels, targets.numpy())


def summarize_comparison(scores: pd.DataFrame, directions: Mapping[str, bool],
                         bootstrap: Bootstrap, seed: int,
                         reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """Per model × method × metric: mean and bootstrap CI, and the paired comparison with
    ``reference`` on the images both were scored on (``stats.compare_to_reference``: mean
    difference method − reference, its CI, Wilcoxon p). ``better_than_reference`` is
    direction-aware (the difference has the sign of improvement and exceeds float round-off,
    ``NUMERICAL_TOLERANCE`` of the values' mean magnitude); ``significantly_better`` adds
    p < ``bootstrap.alpha`` and a CI excluding 0."""
    paired = stats.compare_to_reference(scores, reference, directions,
                                        n_resamples=bootstrap.n_resamples,
                                        confidence=bootstrap.confidence, seed=seed)
    paired = paired[paired["n_pairs"] > 0].set_index(["model", "metric", "method"])
    rows = []
    for (model, metric), group in scores.groupby(["model", "metric"], sort=False):
        table = group.pivot(index="image", columns="method", values="value")
        for method in dict.fromkeys(group["method"]):
            ci = stats.bootstrap_ci(table[method].dropna().to_numpy(),
                                    n_resamples=bootstrap.n_resamples,
                                    confidence=bootstrap.confidence, seed=seed)
            row = {"model": model, "method": method, "metric": metric,
                   "higher_is_better": bool(directions[metric]), "n": ci.n, "mean": ci.mean,
                   "ci_low": ci.low, "ci_high": ci.high, "reference": reference, "n_pairs": 0,
                   "difference": math.nan, "difference_ci_low": math.nan,
                   "difference_ci_high": math.nan, "p_value": math.nan,
                   "better_than_reference": None, "significantly_better": None}
            if (model, metric, method) in paired.index:
                row.update(versus_reference(paired.loc[(model, metric, method)], bootstrap.alpha))
            rows.append(row)
    return pd.DataFrame(rows)


def versus_reference(pair: pd.Series, alpha: float) -> dict:
    """The summary columns of one paired comparison with the reference."""
    # Differences at float round-off (e.g. a method that equals Grad-CAM on this model) are not
    # an improvement; every metric here is non-negative, so the means are the magnitudes.
    noise = NUMERICAL_TOLERANCE * (abs(pair["mean"]) + abs(pair["reference_mean"])) / 2
    better = bool(pair["improvement"] > noise)
    excludes_zero = bool(pair["ci_low"] > 0 if pair["higher_is_better"] else pair["ci_high"] < 0)
    return {"n_pairs": pair["n_pairs"], "difference": pair["difference"],
            "difference_ci_low": pair["ci_low"], "difference_ci_high": pair["ci_high"],
            "p_value": pair["p_value"], "better_than_reference": better,
            "significantly_better": bool(better and pair["p_value"] < alpha and excludes_zero)}


def panel_arrays(loaded: Loaded, result: MethodScores) -> dict[str, np.ndarray]:
    """The panels .npz entries of one model: images, names, targets, methods, raw maps."""
    n_panel = next(iter(result.panels.values())).shape[0] if result.panels else 0
    methods = list(result.panels)
    name = loaded.card.name
    return {f"{name}/images": display_pixels(loaded.card, loaded.images.images[:n_panel]),
            f"{name}/names": np.array(loaded.images.names[:n_panel]),
            f"{name}/targets": result.targets[:n_panel],
            f"{name}/methods": np.array(methods),
            f"{name}/maps": (np.stack([result.panels[m] for m in methods]) if methods
                             else np.zeros((0, 0, 0, 0), np.float32))}


def run(ctx) -> None:
    """The egc_comparison stage: per-image scores, their summary, the panel maps."""
    explainer = stage_explainer(ctx, ctx.settings("expected_gradcam.batch_size"))
    seed, batch = ctx.settings("seed"), ctx.settings("expected_gradcam.metric_batch_size")
    scores, panels, directions, summary = [], {}, {}, {"models": {}}
    for loaded in run_models(ctx):
        start = ctx.seconds
        settings = ctx.settings("expected_gradcam.comparison", model=loaded.name)
        result = compare_methods(loaded, settings,
                                 configured_methods(ctx, loaded.name),
                                 explainer, seed=seed, batch_size=batch)
        directions.update({spec.name: spec.metric.higher_is_better
                           for spec in metric_specs(settings.metrics, "comparison.metrics")})
        scores.append(result.scores)
        panels.update(panel_arrays(loaded, result))
        summary["models"][loaded.name] = {
            **loaded.description, "seconds": seconds_since(ctx, start, "comparison", loaded),
            "images_per_method_metric": result.scores.groupby(["method", "metric"]).size()
            .unstack(fill_value=0).to_dict(orient="index")}
    table = concat_tables(scores)
    summary_table = (summarize_comparison(table, directions,
                                          ctx.settings("expected_gradcam.bootstrap"), seed)
                     if len(table) else pd.DataFrame())
    write_table(table, ctx.output("scores"))
    write_table(summary_table, ctx.output("summary"))
    write_npz(ctx.output("panels"), panels)
    summary["means"] = {f"{r.model}/{r.method}/{r.metric}": r.mean
                        for r in summary_table.itertuples()} if len(summary_table) else {}
    write_json(ctx.output("metrics"), json_safe(summary))


# --------------------------------------------------------------------------------- drawing

def qualitative_figure(panels: Mapping[str, np.ndarray], view: View, *, model: str,
                       raw: bool = False) -> plt.Figure:
    """Rows: images; columns: the image, then every method (overlay, or raw coarse map)."""
    images, maps = panels[f"{model}/images"], panels[f"{model}/maps"]
    methods = [str(m) for m in panels[f"{model}/methods"]]
    names = [str(n) for n in panels[f"{model}/names"]]
    size = tuple(images.shape[1:3])
    grid = []
    for i in range(len(images)):
        image = images[i] if images.shape[-1] == 3 else images[i][..., 0]
        row: list[np.ndarray | None] = [image]
        for j in range(len(methods)):
            coarse = maps[j, i]
            if np.isnan(coarse).all():
                row.append(None)
            elif raw:
                row.append(coarse)
            else:
                row.append(overlay(images[i], drawing.upsampled(coarse[None], size)[0]))
        grid.append(row)
    what = "Raw coarse maps (layer resolution)" if raw else "Qualitative comparison"
    return gallery(grid, [short(n) for n in names], ["image"] + [view.label(m) for m in methods],
                   view.title(what, [model]), plotting.ABS_CMAP if not raw else "viridis")


def raw_maps_figure(panels: Mapping[str, np.ndarray], view: View, *, model: str) -> plt.Figure:
    return qualitative_figure(panels, view, model=model, raw=True)


def metric_bars(summary: pd.DataFrame, metrics: list[str], view: View,
                what: str) -> plt.Figure | None:
    """One panel per model × metric: mean and 95% CI per method, Expected Grad-CAM in red."""
    rows = summary[summary["metric"].isin(metrics)]
    if rows.empty:
        return None
    models = list(dict.fromkeys(rows["model"]))
    present = [m for m in metrics if m in set(rows["metric"])]
    fig, axes = plt.subplots(len(present), len(models), squeeze=False,
                             figsize=(3.6 * len(models), 2.6 * len(present)))
    for r, metric in enumerate(present):
        for c, model in enumerate(models):
            ax = axes[r][c]
            sub = rows[(rows["model"] == model) & (rows["metric"] == metric)]
            if sub.empty:  # a model the profile scores on fewer metrics (quick: Lite1, Lite2)
                ax.set_axis_off()
                ax.set_title(f"{model_label(model)}: {metric} not measured", fontsize=7)
                continue
            y = np.arange(len(sub))
            low = (sub["mean"] - sub["ci_low"]).clip(lower=0).fillna(0)
            high = (sub["ci_high"] - sub["mean"]).clip(lower=0).fillna(0)
            ax.barh(y, sub["mean"], xerr=[low, high], color=[colour(m) for m in sub["method"]],
                    error_kw={"lw": 0.8})
            ax.set_yticks(y)
            ax.set_yticklabels([f"{view.label(m)} (n={n})"
                                for m, n in zip(sub["method"], sub["n"])])
            ax.invert_yaxis()
            arrow = "↑" if bool(sub["higher_is_better"].iloc[0]) else "↓"
            ax.set(xlabel=f"{metric} ({arrow} better)", title=model_label(model))
    fig.suptitle(view.title(what, models), fontsize=8)
    fig.tight_layout()
    return fig


def insertion_deletion_figure(summary: pd.DataFrame, view: View) -> plt.Figure | None:
    return metric_bars(summary, ["insertion", "deletion"], view,
                       "Insertion and deletion AUC (mean, 95% bootstrap CI)")


def infidelity_figure(summary: pd.DataFrame, view: View) -> plt.Figure | None:
    return metric_bars(summary, ["infidelity", "infidelity_scaled"], view,
                       "Infidelity (mean, 95% bootstrap CI)")


def max_sensitivity_figure(summary: pd.DataFrame, view: View) -> plt.Figure | None:
    return metric_bars(summary, ["max_sensitivity"], view,
                       "Max-sensitivity (mean, 95% bootstrap CI)")


def road_complexity_figure(summary: pd.DataFrame, view: View) -> plt.Figure | None:
    return metric_bars(summary, ["road_morf", "road_lerf", "complexity", "sparseness"], view,
                       "ROAD, complexity and sparseness (mean, 95% bootstrap CI)")


def comparison_table(summary: pd.DataFrame, view: View) -> Table:
    out = summary.copy()
    out["method"] = out["method"].map(view.label)
    cell = plotting.table_cell
    out["mean [95% CI]"] = [f"{cell(m)} [{cell(lo)}, {cell(hi)}]"
                            for m, lo, hi in zip(out["mean"], out["ci_low"], out["ci_high"])]
    out["Δ vs Grad-CAM [95% CI]"] = [
        "—" if math.isnan(d) else f"{cell(d)} [{cell(lo)}, {cell(hi)}]"
        for d, lo, hi in zip(out["difference"], out["difference_ci_low"],
                             out["difference_ci_high"])]
    out["direction"] = np.where(out["higher_is_better"], "↑", "↓")
    frame = out[["model", "metric", "direction", "method", "n", "mean [95% CI]",
                 "Δ vs Grad-CAM [95% CI]", "p_value", "better_than_reference",
                 "significantly_better"]].rename(columns={"p_value": "Wilcoxon p",
                                                          "better_than_reference": "better",
                                                          "significantly_better": "significant"})
    return Table(frame, "Every method × metric, paired with Grad-CAM")


def expected_gradcam_pp_table(scores: pd.DataFrame, view: View) -> Table | None:
    if "expected_gradcam_pp" not in set(scores["method"]):
        return None
    return Table(paired_table(scores, "expected_gradcam_pp", "gradcam_pp", view),
                 "Expected Grad-CAM++ (ours) − Grad-CAM++")
