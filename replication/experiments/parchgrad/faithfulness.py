"""E5: the authors' pixel-removal protocol and Gini sparsity (``parchgrad_faithfulness``; C8).

Each base (Gradient, Gradient⊙Input, IG, SmoothGrad) and ParchGrad over it at each channel
portion. Maps are reduced as the authors did (``authors_pixel_map``); the top (MoRF) or bottom
(LeRF) int(H·W·r) pixels are set to 0 in model-input space and the unhooked model scores each
copy (``faithfulness.pixel_removal_curves``). Summaries are means over the ratios, ratio 0
included, as the authors'. Explained class: the label. Per model and method: means with
bootstrap (BCa) CIs; per base and q: ParchGrad − base, paired per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plotting
from replication.attribution import ChannelStatistics, Explainer
from replication.cost import Cost
from replication.experiments.common import ImageSet
from replication.experiments.parchgrad import loading
from replication.experiments.parchgrad.display import AUTHORS_MODELS, Sources, model_name
from replication.experiments.parchgrad.methods import (MethodOptions, authors_pixel_map, explain,
                                                       hooked_convs, image_rows, map_cost,
                                                       method_label, method_spec)
from replication.experiments.parchgrad.settings import FaithfulnessSettings
from replication.fileio import atomic_directory, write_json, write_table
from replication.metrics import faithfulness as F
from replication.metrics import stats
from replication.models.base import ModelCard

# The per-image values and the registry metric each is (its direction: higher is better?).
METRICS = {name: F.get_metric(registered).higher_is_better for name, registered in (
    ("morf_aopc", "morf_aopc"), ("lerf_aopc", "lerf_aopc"), ("morf_lodds", "morf_lodds"),
    ("lerf_lodds", "lerf_lodds"), ("gini", "sparseness"))}


@dataclass
class FaithfulnessResult:
    """E5 tables: pixel-removal curves (one row per image, method, order, ratio) and one row per
    image and method with the authors' summaries and the Gini index."""

    curves: pd.DataFrame
    per_image: pd.DataFrame


def faithfulness_methods(settings: FaithfulnessSettings) -> list[tuple[str, float | None]]:
    """(base, q) pairs: each base, then ParchGrad over it at each channel portion."""
    return [(base, q) for base in settings.bases for q in (None, *settings.channel_portions)]


def removal_curves(card: ModelCard, images: ImageSet, pixel, settings: FaithfulnessSettings,
                   device) -> tuple[dict[str, F.PixelRemovalCurves], np.ndarray]:
    """MoRF and LeRF curves of one method's maps, and the model's probability of each label."""
    model, curves = card.model.eval(), {}
    for order in ("morf", "lerf"):
        curves[order] = F.pixel_removal_curves(model, images.images.to(device),
                                               images.labels.to(device), pixel.to(device),
                                               order=order, ratios=settings.ratios,
                                               batch_size=settings.batch_size)
    return curves, curves["lerf"].probability


def faithfulness(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                 settings: FaithfulnessSettings, options: MethodOptions,
                 explainer: Explainer) -> FaithfulnessResult:
    """Pixel-removal curves and per-image summaries of every method (module docstring)."""
    convs, rows = hooked_convs(card, settings.hooks), image_rows(card, images)
    curve_rows, image_table = [], []
    for base, q in faithfulness_methods(settings):
        name, params = method_spec(base, options, statistics, q, convs, settings=settings)
        pixel = authors_pixel_map(explain(explainer, card, name, params, images), base)
        gini = F.sparseness(pixel)
        curves, probability = removal_curves(card, images, pixel, settings, explainer.device)
        method = {"method": method_label(base, q), "base": base, "q": q}
        summaries = {}
        for order, curve in curves.items():
            summaries.update({f"{order}_aopc": curve.aopc.mean(1),
                              f"{order}_lodds": curve.lodds.mean(1),
                              f"{order}_accuracy": curve.accuracy.mean(1)})
            curve_rows += [{**row, **method, "order": order, "ratio": float(ratio),
                            "aopc": curve.aopc[i, j], "lodds": curve.lodds[i, j],
                            "accuracy": curve.accuracy[i, j], "fracdiff": curve.fracdiff[i, j]}
                           for i, row in enumerate(rows) for j, ratio in enumerate(curve.ratios)]
        image_table += [{**row, **method, "probability": probability[i],
                         **{k: v[i] for k, v in summaries.items()}, "gini": gini[i]}
                        for i, row in enumerate(rows)]
    return FaithfulnessResult(pd.DataFrame(curve_rows), pd.DataFrame(image_table))


def faithfulness_summary(per_image: pd.DataFrame, resamples: int, seed: int) -> pd.DataFrame:
    """Per model, method and metric: mean and bootstrap (BCa) CI over images."""
    rows = []
    for (model, method), group in per_image.groupby(["model", "method"], sort=False):
        for metric, higher in METRICS.items():
            ci = stats.bootstrap_ci(group[metric].to_numpy(), n_resamples=resamples, seed=seed)
            rows.append({"model": model, "method": method, "base": group["base"].iloc[0],
                         "q": group["q"].iloc[0], "metric": metric, "mean": ci.mean,
                         "ci_low": ci.low, "ci_high": ci.high, "n": ci.n,
                         "n_dropped": ci.n_dropped, "higher_is_better": higher})
    return pd.DataFrame(rows)


def paired_scores(per_image: pd.DataFrame) -> pd.DataFrame:
    """The per-image values as ``compare_to_reference`` reads them: one group per model, base,
    q and metric holding ParchGrad's values and the base's (the reference), each image keyed by
    its position among the base's images (so images pair in the order they were explained)."""
    frames = []
    for (model, base), group in per_image.groupby(["model", "base"], sort=False):
        reference = group[group["q"].isna()]
        position = {image: i for i, image in enumerate(reference["image"])}
        for q, variant in group[group["q"].notna()].groupby("q", sort=False):
            for metric in METRICS:
                for method, rows in (("parchgrad", variant), ("base", reference)):
                    frames.append(pd.DataFrame({
                        "model": model, "base": base, "q": float(q), "metric": metric,
                        "method": method, "image": rows["image"].map(position).to_numpy(),
                        "value": rows[metric].to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def faithfulness_comparisons(per_image: pd.DataFrame, resamples: int, seed: int) -> pd.DataFrame:
    """ParchGrad(base, q) − base per image, paired: mean difference, bootstrap CI, two-sided
    Wilcoxon p, and whether the mean difference favours ParchGrad (by the metric's direction)."""
    compared = stats.compare_to_reference(paired_scores(per_image), "base", METRICS,
                                          by=("model", "base", "q", "metric"),
                                          n_resamples=resamples, seed=seed)
    return pd.DataFrame({
        "model": compared["model"], "base": compared["base"], "q": compared["q"],
        "metric": compared["metric"], "mean_difference": compared["difference"],
        "ci_low": compared["ci_low"], "ci_high": compared["ci_high"],
        "p_value": compared["p_value"], "n_pairs": compared["n_pairs"],
        "higher_is_better": compared["higher_is_better"],
        "favours_parchgrad": compared["improvement"] > 0})


def cost(ctx) -> list[Cost]:
    """Each method's maps, and per map the clean and removed copies of both orders."""
    settings = ctx.settings("parchgrad.faithfulness")
    scored = 2 * (1 + len(settings.ratios))  # pixel_removal_curves: the clean copy and each ratio
    costs = []
    for name, count in loading.models_to_explain(settings.images).items():
        for base, q in faithfulness_methods(settings):
            maps = map_cost(ctx, name, base, 1, count, f"E5: {method_label(base, q)}", settings)
            costs.append(Cost(maps.model, maps.what, maps.forward_backward,
                              maps.forward + scored * count))
    return costs


def run(ctx) -> None:
    settings, seed = ctx.settings("parchgrad.faithfulness"), ctx.settings("seed")
    results, seconds = loading.per_model(ctx, settings.images, faithfulness, settings,
                                         MethodOptions.of(ctx), loading.explainer(ctx))
    per_image = pd.concat([r.per_image for r in results.values()], ignore_index=True)
    resamples = settings.bootstrap_resamples
    with atomic_directory(ctx.output("out")) as out:
        write_table(pd.concat([r.curves for r in results.values()], ignore_index=True),
                    out / "e5_curves.csv")
        write_table(per_image, out / "e5_per_image.csv")
        write_table(faithfulness_summary(per_image, resamples, seed), out / "e5_summary.csv")
        write_table(faithfulness_comparisons(per_image, resamples, seed), out / "e5_paired.csv")
    write_json(ctx.output("metrics"), loading.stage_metrics(
        ctx, seconds_per_model=seconds,
        reduction="mean over RGB of |map| (|mean over RGB| for IG), as the authors",
        ig_steps=settings.ig_steps, smoothgrad_samples=settings.smoothgrad_samples))


# --------------------------------------------------------------------------- figures

def draw_pixel_removal(sources: Sources, out: Path) -> list[Path]:
    """MoRF and LeRF AOPC curves per model, mean over images, one line per method."""
    curves = sources.tables["e5_curves"]
    plotting.use_style()
    models = list(dict.fromkeys(curves["model"]))
    fig, axes = plt.subplots(len(models), 2, figsize=(7.5, 2.8 * len(models)), squeeze=False)
    fig.subplots_adjust(hspace=0.5)
    styles = {None: "-", 0.1: "--", 0.05: ":"}
    palette = dict(zip(dict.fromkeys(curves["base"]), plt.get_cmap("tab10").colors))
    for r, model in enumerate(models):
        own = curves[curves["model"] == model]
        means = own.groupby(["method", "base", "q", "order", "ratio"], dropna=False,
                            sort=False)["aopc"].mean().reset_index()
        for c, order in enumerate(("morf", "lerf")):
            ax = axes[r][c]
            for (method, base, q), group in means[means["order"] == order].groupby(
                    ["method", "base", "q"], dropna=False, sort=False):
                key = None if pd.isna(q) else float(q)
                ax.plot(group["ratio"], group["aopc"], color=palette[base],
                        ls=styles.get(key, "-."), lw=1.0, label=method)
            ax.set_xlabel("fraction of pixels removed")
            ax.set_ylabel("p_y(x) − p_y(x_r)")
            ax.set_title(f"{order.upper()} — {model_name(model)}")
        axes[r][1].legend(fontsize=5, ncol=1, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"E5: pixel removal, mean over images (removed pixels set to 0 in model-input "
                 f"space, as the authors) — {sources.profile} profile; {AUTHORS_MODELS}",
                 fontsize=7)
    return plotting.save_figure(fig, out / "e5_pixel_removal")


def draw_summary(sources: Sources, out: Path) -> list[Path]:
    """The summary as 'mean [CI]' per model, method and metric."""
    summary = sources.tables["e5_summary"]
    wide = summary.assign(value=[f"{m:.4g} [{lo:.4g}, {hi:.4g}]" for m, lo, hi in
                                 zip(summary["mean"], summary["ci_low"], summary["ci_high"])])
    wide = wide.pivot_table(index=["model", "method"], columns="metric", values="value",
                            aggfunc="first", sort=False).reset_index()
    return plotting.write_table(
        wide, out / "e5_faithfulness_summary",
        f"E5: faithfulness and sparsity, mean [95% BCa CI] over images ({sources.profile} "
        "profile)",
        "morf_aopc higher and lerf_aopc lower are more faithful; morf_lodds lower and lerf_lodds "
        "higher; gini (Gini index of the |map|) higher is sparser. Means over ratios 0…0.5, "
        "ratio 0 included (the authors' ratio_mean).")


def draw_paired(sources: Sources, out: Path) -> list[Path]:
    return plotting.write_table(
        sources.tables["e5_paired"], out / "e5_paired_comparisons",
        "E5: ParchGrad(base, q) − base, paired per image",
        "mean difference with its bootstrap CI and the two-sided Wilcoxon signed-rank p; "
        "favours_parchgrad uses each metric's direction.")
