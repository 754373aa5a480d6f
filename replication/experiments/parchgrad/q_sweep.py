"""E0 panels and E6 channel-portion sweep (``parchgrad_q_sweep``; claims C3, C9).

ParchGrad(Gradient, VC, γ = ∞) at each channel portion q against the plain Gradient. Per image
and q: Spearman and Pearson of the authors' |map|, SSIM of the min–max scaled |maps| (data
range 1), and ``max_relative_difference`` = max|PG − Grad| / max|Grad| of the raw maps. At
q = 1 every channel passes the p-value threshold, but the Shapiro filter can still drop
(normal-looking or dead) channels, so ``max_relative_difference_no_shapiro`` repeats q = 1
without the filter: round-off there is claim C3. Claim C9: the mean similarity falls with q.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from torch import Tensor

from replication import plotting
from replication.attribution import ChannelStatistics, Explainer
from replication.cost import Cost
from replication.experiments.common import ImageSet
from replication.experiments.parchgrad import loading
from replication.experiments.parchgrad.display import (AUTHORS_MODELS, Sources, gallery_rows,
                                                       heat, image_panels, model_name,
                                                       model_title, panel, panel_key,
                                                       save_gallery)
from replication.experiments.parchgrad.methods import (MethodOptions, authors_pixel_map, explain,
                                                       flat, hooked_convs, hooks_label,
                                                       image_rows, map_cost, method_spec)
from replication.experiments.parchgrad.settings import QSweepSettings
from replication.fileio import atomic_directory, write_json, write_npz, write_table
from replication.metrics import similarity
from replication.models.base import ModelCard

AUTHORS_Q_SEQUENCE = (1.0, 0.5, 0.3, 0.1, 0.08, 0.05)  # the GIFs' channel portions (E0)


@dataclass
class SweepResult:
    """E6 table (one row per image and q) and the E0 panels."""

    table: pd.DataFrame
    maps: dict[str, np.ndarray] = field(default_factory=dict)


def _relative_difference(maps: Tensor, reference: Tensor, peak: Tensor) -> np.ndarray:
    return ((maps - reference).flatten(1).abs().amax(1).double() / peak).numpy()


def channel_portion_sweep(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                          settings: QSweepSettings, options: MethodOptions,
                          explainer: Explainer) -> SweepResult:
    """ParchGrad(Gradient, VC, γ = ∞) at each of ``settings.channel_portions`` against the
    plain Gradient (module docstring)."""
    convs = hooked_convs(card, settings.hooks)
    panels, rows = min(settings.panels, len(images)), image_rows(card, images)
    raw_gradient = explain(explainer, card, "gradient", {}, images)
    gradient = authors_pixel_map(raw_gradient, "gradient")
    maps = image_panels(card, images.images, gradient, panels)
    peak = raw_gradient.flatten(1).abs().amax(1).double().clamp_min(1e-300)
    table = []
    for q in settings.channel_portions:
        name, params = method_spec("gradient", options, statistics, q, convs)
        raw = explain(explainer, card, name, params, images)
        pixel = authors_pixel_map(raw, "gradient")
        spearman = similarity.spearman_rows(flat(gradient), flat(pixel))
        pearson = similarity.pearson_rows(flat(gradient), flat(pixel))
        ssim = similarity.ssim(gradient, pixel, data_range=1.0)
        difference = _relative_difference(raw, raw_gradient, peak)
        unfiltered = np.full(len(images), np.nan)
        if float(q) == 1.0:
            name, params = method_spec("gradient", options, statistics, q, convs, shapiro=False)
            unfiltered = _relative_difference(explain(explainer, card, name, params, images),
                                              raw_gradient, peak)
        table += [{**row, "hooks": hooks_label(settings.hooks), "n_convs": len(convs),
                   "q": float(q), "spearman": spearman[i], "pearson": pearson[i],
                   "ssim": ssim[i], "max_relative_difference": difference[i],
                   "max_relative_difference_no_shapiro": unfiltered[i]}
                  for i, row in enumerate(rows)]
        for i in range(panels):
            maps[panel_key("parchgrad", f"{q:g}", i)] = panel(pixel[i])
    return SweepResult(pd.DataFrame(table), maps)


def sweep_summary(table: pd.DataFrame,
                  metrics: Sequence[str] = ("spearman", "ssim")) -> pd.DataFrame:
    """Per model, metric and q (largest q first): mean, SD and count over images, and whether
    the mean falls (weakly) at every step of decreasing q (``monotone``)."""
    rows = []
    for (model, hooks), group in table.groupby(["model", "hooks"], sort=False):
        for metric in metrics:
            means = group.groupby("q", sort=False)[metric].agg(["mean", "std", "count"])
            means = means.sort_index(ascending=False)
            monotone = bool(np.all(np.diff(means["mean"].to_numpy()) <= 1e-12))
            for q, values in means.iterrows():
                rows.append({"model": model, "hooks": hooks, "metric": metric, "q": q,
                             "mean": values["mean"], "sd": values["std"],
                             "n": int(values["count"]), "monotone": monotone})
    return pd.DataFrame(rows)


def cost(ctx) -> list[Cost]:
    """Gradient, ParchGrad(Gradient) at each q, and q = 1 again without the Shapiro filter."""
    settings = ctx.settings("parchgrad.q_sweep")
    portions = [float(q) for q in settings.channel_portions]
    maps = 1 + len(portions) + (1.0 in portions)
    return [map_cost(ctx, name, "gradient", maps, count, f"E6: {maps} maps per image")
            for name, count in loading.models_to_explain(settings.images).items()]


def run(ctx) -> None:
    settings = ctx.settings("parchgrad.q_sweep")
    results, seconds = loading.per_model(ctx, settings.images, channel_portion_sweep, settings,
                                         MethodOptions.of(ctx), loading.explainer(ctx))
    table = pd.concat([r.table for r in results.values()], ignore_index=True)
    with atomic_directory(ctx.output("out")) as out:
        write_table(table, out / "e6_q_sweep.csv")
        write_table(sweep_summary(table), out / "e6_q_sweep_summary.csv")
    write_npz(ctx.output("maps"), {panel_key(name, key): value for name, r in results.items()
                                   for key, value in r.maps.items()})
    write_json(ctx.output("metrics"), loading.stage_metrics(ctx, seconds_per_model=seconds))


# --------------------------------------------------------------------------- figures

def draw_panels(sources: Sources, out: Path) -> list[Path]:
    """E0, per model: the images, Gradient, ParchGrad at each q (1.0 → 0.05)."""
    table, maps = sources.tables["e6_q_sweep"], sources.maps["q_sweep"]
    written = []
    for model, group in table.groupby("model", sort=False):
        qs = list(dict.fromkeys(group["q"]))

        def row(i: int) -> list:
            return [maps[panel_key(model, "image", i)], heat(maps[panel_key(model, "gradient", i)]),
                    *[heat(maps[panel_key(model, "parchgrad", f"{q:g}", i)]) for q in qs]]

        rows, labels = gallery_rows(maps, model, row, list(group["image"]))
        if rows:
            columns = ["image", "Gradient", *[f"q = {q:g}" for q in qs]]
            written += save_gallery(rows, labels, columns,
                                    "E0: ParchGrad(Gradient) as the channel portion q shrinks — "
                                    f"{model_title(model, sources.profile)}",
                                    out / f"e0_channel_portion_panels_{model}")
    return written


def draw_sweep(sources: Sources, out: Path) -> list[Path]:
    """E6: mean ± SD similarity to the Gradient map against q, and the summary table."""
    summary = sources.tables["e6_q_sweep_summary"]
    plotting.use_style()
    metrics = list(dict.fromkeys(summary["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 2.6), squeeze=False)
    fig.subplots_adjust(wspace=0.4)
    for ax, metric in zip(axes[0], metrics):
        own = summary[summary["metric"] == metric]
        for model, group in own.groupby("model", sort=False):
            ax.errorbar(group["q"], group["mean"], yerr=group["sd"], marker="o", ms=3, lw=1,
                        capsize=2, label=model_name(model))
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("channel portion q (decreasing →)")
        ax.set_ylabel(f"{metric} to the Gradient map")
        ax.legend(fontsize=6)
    fig.suptitle(f"E6: similarity of ParchGrad(Gradient) to Gradient vs q, mean ± SD "
                 f"({sources.profile} profile; {AUTHORS_MODELS})", fontsize=7)
    written = plotting.save_figure(fig, out / "e6_channel_portion_sweep")
    written += plotting.write_table(summary, out / "e6_channel_portion_sweep",
                                    "E6: similarity to the Gradient map per channel portion q",
                                    "monotone: the mean falls (weakly) at every step of "
                                    "decreasing q (claim C9).")
    return written
