"""Exp. 3 (claim C5): the σ sweep and the M sweep of configured Expected Grad-CAMs; their
figures and tables.

Common random numbers across σ: the engine draws each image's references, α and ε in a fixed
order from a stream seeded by (seed, image), so every σ reuses them and only the noise scale
changes. Stability at M = the correlation (Pearson and Spearman) of the upsampled maps from the
two seeds, per image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from torch import Tensor

from replication import plotting
from replication.attribution import Explainer
from replication.experiments.common import stage_explainer
from replication.experiments.expected_gradcam import drawing
from replication.experiments.expected_gradcam.drawing import (EGC_COLOUR, Table, View, gallery,
                                                              model_label, overlay, short)
from replication.experiments.expected_gradcam.loading import (Loaded, count, display_pixels,
                                                              run_models, seconds_since)
from replication.experiments.expected_gradcam.methods import (build_method, configured_methods,
                                                              metric_rows, upsampled)
from replication.experiments.expected_gradcam.settings import Smoothing, metric_specs
from replication.fileio import concat_tables, json_safe, write_json, write_npz, write_table
from replication.metrics.similarity import pearson_rows, spearman_rows

SWEEP_COLUMNS = ["model", "method", "sigma", "image", "metric", "value"]
STABILITY_COLUMNS = ["model", "method", "n_samples", "image", "metric", "value"]


@dataclass
class SmoothingTables:
    sigma: pd.DataFrame  # model, method, sigma, image, metric, value
    stability: pd.DataFrame  # model, method, n_samples, image, metric (pearson/spearman), value
    sigma_maps: np.ndarray  # (n_methods, n_sigmas, n_panel, h, w) raw coarse maps
    sigmas: list[float]
    methods: list[str]


def smoothing(loaded: Loaded, settings: Smoothing, methods: Mapping[str, Any],
              explainer: Explainer, *, seed: int, batch_size: int) -> SmoothingTables:
    """Exp. 3 for each configured Expected Grad-CAM of ``settings.methods``: the metrics of
    its maps on the first ``images`` images at every σ (the first ``panel_images`` maps kept),
    and its seed-to-seed stability at every M of ``samples``."""
    x, targets = loaded.first(settings.images)
    if not len(x):  # a count of 0: not run on this model
        return SmoothingTables(pd.DataFrame(columns=SWEEP_COLUMNS),
                               pd.DataFrame(columns=STABILITY_COLUMNS),
                               np.zeros((0, 0, 0, 0, 0), np.float32), [], [])
    n_panel = count(settings.panel_images, len(x))
    sigmas = [float(s) for s in settings.sigmas]
    specs = metric_specs(settings.metrics, "smoothing.metrics")
    rows, panels = [], []
    for method in settings.methods:
        panel = []
        for sigma in sigmas:
            attribution = build_method(loaded.card, method, {**methods[method], "sigma": sigma},
                                       loaded.references.images)
            coarse = explainer.raw(attribution, x, targets)
            panel.append(coarse[:n_panel, 0].numpy())
            rows += [{**row, "sigma": sigma} for row in metric_rows(
                loaded, method, attribution, specs, x, targets, upsampled(coarse, x), seed=seed,
                batch_size=batch_size)]
        panels.append(np.stack(panel))
    stability = concat_tables([sample_stability(loaded, settings, methods, explainer, method)
                               for method in settings.methods])
    return SmoothingTables(pd.DataFrame(rows, columns=SWEEP_COLUMNS), stability,
                           np.stack(panels).astype(np.float32), sigmas, list(settings.methods))


def sample_stability(loaded: Loaded, settings: Smoothing, methods: Mapping[str, Any],
                     explainer: Explainer, method: str) -> pd.DataFrame:
    """Per M and image: Pearson and Spearman of the maps from the two seeds."""
    x, targets = loaded.first(settings.stability_images)
    rows = []
    if not len(x):
        return pd.DataFrame(columns=STABILITY_COLUMNS)
    for m in settings.samples:
        maps = []
        for s in settings.seeds:
            attribution = build_method(loaded.card, method,
                                       {**methods[method], "n_samples": int(m), "seed": s},
                                       loaded.references.images)
            maps.append(flat_maps(explainer.raw(attribution, x, targets), x))
        for metric, fn in (("pearson", pearson_rows), ("spearman", spearman_rows)):
            rows += [{"model": loaded.card.name, "method": method, "n_samples": int(m),
                      "image": loaded.images.names[i], "metric": metric, "value": float(v)}
                     for i, v in enumerate(fn(maps[0], maps[1]))]
    return pd.DataFrame(rows, columns=STABILITY_COLUMNS)


def flat_maps(coarse: Tensor, x: Tensor) -> np.ndarray:
    return upsampled(coarse, x).flatten(1).double().numpy()


def panel_arrays(loaded: Loaded, result: SmoothingTables) -> dict[str, np.ndarray]:
    """The sigma_panels .npz entries of one model."""
    n_panel, name = result.sigma_maps.shape[2], loaded.card.name
    return {f"{name}/images": display_pixels(loaded.card, loaded.images.images[:n_panel]),
            f"{name}/names": np.array(loaded.images.names[:n_panel]),
            f"{name}/sigmas": np.array(result.sigmas),
            f"{name}/methods": np.array(result.methods),
            f"{name}/maps": result.sigma_maps}  # (methods, sigmas, images, h, w)


def run(ctx) -> None:
    """The egc_smoothing stage: σ sweep (with the maps of the first images) and M vs
    stability."""
    explainer = stage_explainer(ctx, ctx.settings("expected_gradcam.batch_size"))
    seed, batch = ctx.settings("seed"), ctx.settings("expected_gradcam.metric_batch_size")
    sweeps, stability, panels, summary = [], [], {}, {"models": {}}
    for loaded in run_models(ctx):
        start = ctx.seconds
        result = smoothing(loaded, ctx.settings("expected_gradcam.smoothing", model=loaded.name),
                           configured_methods(ctx, loaded.name),
                           explainer, seed=seed, batch_size=batch)
        sweeps.append(result.sigma)
        stability.append(result.stability)
        if result.methods and result.sigmas and result.sigma_maps.shape[2]:
            panels.update(panel_arrays(loaded, result))
        summary["models"][loaded.name] = {
            **loaded.description, "seconds": seconds_since(ctx, start, "smoothing", loaded),
            "mean_by_sigma": {f"{e}/{m}/{s:g}": v for (e, m, s), v in
                              result.sigma.groupby(["method", "metric", "sigma"])["value"]
                              .mean().items()},
            "stability_by_samples": {f"{e}/{m}/{k}": v for (e, m, k), v in
                                     result.stability.groupby(["method", "metric", "n_samples"])
                                     ["value"].mean().items()}}
    write_table(concat_tables(sweeps), ctx.output("sigma_sweep"))
    write_table(concat_tables(stability), ctx.output("stability"))
    write_npz(ctx.output("panels"), panels)
    write_json(ctx.output("metrics"), json_safe(summary))


# --------------------------------------------------------------------------------- drawing

def noise_figure(panels: Mapping[str, np.ndarray], view: View, *, model: str) -> plt.Figure:
    """Rows: (method, image); columns: the image, then the method's map at each σ (overlays)."""
    images, maps, sigmas = (panels[f"{model}/images"], panels[f"{model}/maps"],
                            panels[f"{model}/sigmas"])
    methods = [str(m) for m in panels[f"{model}/methods"]]
    names = [short(str(n)) for n in panels[f"{model}/names"]]
    size = tuple(images.shape[1:3])
    grid, labels = [], []
    for k, method in enumerate(methods):
        for i in range(len(images)):
            image = images[i] if images.shape[-1] == 3 else images[i][..., 0]
            grid.append([image] + [overlay(images[i],
                                           drawing.upsampled(maps[k, s, i][None], size)[0])
                                   for s in range(len(sigmas))])
            labels.append(f"{names[i]}\n{view.label(method)}" if len(methods) > 1 else names[i])
    return gallery(grid, labels, ["image"] + [f"σ = {s:g}" for s in sigmas],
                   view.title("Expected Grad-CAM as the noise level σ grows", [model]),
                   plotting.ABS_CMAP)


def sigma_figure(sweep: pd.DataFrame, view: View) -> plt.Figure:
    models = list(dict.fromkeys(sweep["model"]))
    metrics = list(dict.fromkeys(sweep["metric"]))
    methods = list(dict.fromkeys(sweep["method"]))
    styles = dict(zip(methods, ("-", "--", ":", "-.")))
    fig, axes = plt.subplots(len(metrics), len(models), squeeze=False,
                             figsize=(3.4 * len(models), 2.2 * len(metrics)))
    for r, metric in enumerate(metrics):
        for c, model in enumerate(models):
            ax = axes[r][c]
            rows = sweep[(sweep["model"] == model) & (sweep["metric"] == metric)]
            n = 0
            for method in methods:
                g = rows[rows["method"] == method].groupby("sigma")["value"].agg(
                    ["mean", "std", "size"])
                n = max(n, int(g["size"].max()) if len(g) else 0)
                ax.errorbar(g.index, g["mean"], yerr=g["std"].fillna(0), marker="o", markersize=3,
                            color=EGC_COLOUR, capsize=2, lw=1, ls=styles.get(method, "-"),
                            label=view.label(method))
            ax.set(xlabel="σ (pixel units)", ylabel=metric, title=f"{model_label(model)} (n = {n})")
            if len(methods) > 1 and r == 0:
                ax.legend(fontsize=6)
    fig.suptitle(view.title("Expected Grad-CAM as σ grows (mean ± SD)", models), fontsize=8)
    fig.tight_layout()
    return fig


def stability_figure(stability: pd.DataFrame, view: View) -> plt.Figure:
    models = list(dict.fromkeys(stability["model"]))
    methods = list(dict.fromkeys(stability["method"]))
    styles = dict(zip(methods, ("-", "--", ":", "-.")))
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 2.6), squeeze=False)
    for c, model in enumerate(models):
        ax = axes[0][c]
        rows = stability[stability["model"] == model]
        for method in methods:
            sub = rows[rows["method"] == method]
            for metric, line in (("pearson", "tab:purple"), ("spearman", "tab:green")):
                g = sub[sub["metric"] == metric].groupby("n_samples")["value"].agg(["mean", "std"])
                label = metric if len(methods) == 1 else f"{metric}, {view.label(method)}"
                ax.errorbar(g.index, g["mean"], yerr=g["std"].fillna(0), marker="o", markersize=3,
                            capsize=2, lw=1, color=line, ls=styles.get(method, "-"), label=label)
        ticks = sorted(rows["n_samples"].unique())
        ax.set(xscale="log", xlabel="M (samples; forward+backward passes per image)",
               ylabel="seed-to-seed correlation",
               title=f"{model_label(model)} (n = {rows['image'].nunique()})")
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(int(m)) for m in ticks])
        ax.legend(fontsize=6)
    fig.suptitle(view.title("Expected Grad-CAM stability vs M", models), fontsize=8)
    fig.tight_layout()
    return fig


def sigma_table(sweep: pd.DataFrame, view: View) -> Table:
    from scipy.stats import spearmanr

    keys = ["model", "method", "metric"]
    means = sweep.groupby([*keys, "sigma"])["value"].mean().unstack("sigma")
    means.columns = [f"σ={s:g}" for s in means.columns]
    rho = []
    for key, g in sweep.groupby(keys, sort=False):
        m = g.groupby("sigma")["value"].mean()
        constant = m.nunique() < 2
        rho.append({**dict(zip(keys, key)),
                    "Spearman ρ(σ, mean)": math.nan if len(m) < 3 or constant
                    else float(spearmanr(m.index, m.to_numpy()).statistic)})
    table = means.reset_index().merge(pd.DataFrame(rho), on=keys)
    table["method"] = table["method"].map(view.label)
    return Table(table, "Expected Grad-CAM: metrics per σ")


def stability_table(stability: pd.DataFrame, view: View) -> Table:
    g = (stability.groupby(["model", "method", "metric", "n_samples"])["value"]
         .agg(["mean", "std", "min", "count"]).reset_index())
    g["method"] = g["method"].map(view.label)
    g["passes per image"] = g["n_samples"]
    return Table(g.rename(columns={"n_samples": "M", "count": "n"}),
                 "Expected Grad-CAM: seed-to-seed correlation per M")
