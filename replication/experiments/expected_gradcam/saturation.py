"""Exp. 2 (claim C1; notes §2.3, reconstructed): internal saturation along the straight path, and
the top-k channel study; their figures and table.

Curves: s(α) = cos(e(α), e(1)), e = the flattened target-layer activations at
x_α = x' + α(x − x') (no spatial pooling), with the target logit and probability; s(1) = 1 by
construction. α* = min{α : s(α) ≥ threshold} (the notes' definition, first crossing).

Top-k channels under saturation (our reading of the appendix's "top-k features insertion"):
rank the layer's K channels by Grad-CAM's weights and by the configured Expected Grad-CAM's (the
engine's channel weights, averaged over positions where they are element-wise: GAP of Ĝ for
``eg_weights``, GAP of Φ for ``layer_eg``), keep the top ⌈f·K⌉ channels (the others set to 0 at
the layer) and score the target probability for each fraction f; a method whose weights name the
channels that carry the score inserts faster. Images are later split at the median α*
(``saturation_groups``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from replication.attribution import create_method
from replication.errors import ConfigError
from replication.experiments.expected_gradcam.drawing import Table, View, colour, model_label
from replication.experiments.expected_gradcam.loading import (Loaded, reference_draws, run_models,
                                                              seconds_since)
from replication.experiments.expected_gradcam.methods import build_method, configured_methods
from replication.experiments.expected_gradcam.settings import Saturation
from replication.fileio import concat_tables, json_safe, write_json, write_table

SATURATED_AT = 0.7  # the notes' example bound for "α* clearly < 1"


@dataclass
class SaturationTables:
    curves: pd.DataFrame  # model, image, baseline, draw, alpha, cosine, logit, probability
    alpha_star: pd.DataFrame  # model, image, baseline, draw, alpha_star
    topk: pd.DataFrame  # model, image, method, fraction, n_channels, probability, logit


@torch.no_grad()
def forward_with_layer(model: nn.Module, layer: nn.Module, inputs: Tensor, batch_size: int,
                       mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Target-layer activations (flattened, float64) and logits; with ``mask`` (B, K) the layer's
    output is multiplied by it channel-wise before the rest of the network runs."""
    acts, logits = [], []
    store: dict[str, Tensor] = {}
    current: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
        store["output"] = output.detach().flatten(1).double()
        if "mask" in current:
            return output * current["mask"][:, :, None, None].to(output.dtype)
        return output

    handle = layer.register_forward_hook(hook)
    try:
        for start in range(0, len(inputs), batch_size):
            rows = slice(start, start + batch_size)
            if mask is not None:
                current["mask"] = mask[rows]
            logits.append(model(inputs[rows]).double())
            acts.append(store["output"])
    finally:
        handle.remove()
    return torch.cat(acts), torch.cat(logits)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine of (N, D) float64 rows with one (D,) row; 1 for two zero vectors."""
    na, nb = a.norm(dim=1), b.norm()
    cos = (a @ b) / (na * nb).clamp_min(1e-300)
    cos = torch.where(na * nb > 0, cos, torch.zeros_like(cos))
    return torch.where((na == 0) & (nb == 0), torch.ones_like(cos), cos)


def internal_saturation(loaded: Loaded, settings: Saturation, methods: Mapping[str, Any],
                        seed: int) -> SaturationTables:
    """Exp. 2 on the first ``settings.images`` images: s(α) on an ``alphas`` grid for each
    baseline (``black``: pixel 0; ``data``: ``data_draws`` images of D per image), α*, and the
    top-k channel scores of Grad-CAM and ``settings.method``."""
    card, images, references = loaded.card, loaded.images, loaded.references.images
    model = card.model.eval()
    layer = model.get_submodule(card.cam_layer)
    x, targets = loaded.first(settings.images)
    n = len(x)
    if not n:
        return SaturationTables(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    alphas = torch.linspace(0.0, 1.0, settings.alphas, dtype=x.dtype)
    black = card.preprocessing.normalize(torch.zeros_like(x[:1]))[0]
    if "data" in settings.baselines and not len(references):
        raise ConfigError("saturation baseline 'data' needs the reference set D: set "
                          "data.*.reference_images above 0")
    index = (reference_draws(n, len(references), settings.data_draws, seed) if len(references)
             else None)
    curves, stars = [], []
    for i in range(n):
        baselines: list[tuple[str, int, Tensor]] = []
        for kind in settings.baselines:
            if kind == "black":
                baselines.append(("black", 0, black))
            else:
                baselines += [("data", j, references[int(k)])  # type: ignore[index]
                              for j, k in enumerate(index[i])]
        for kind, draw, base in baselines:
            points = base[None] + alphas.to(x.device).view(-1, 1, 1, 1) * (x[i] - base)[None]
            acts, logits = forward_with_layer(model, layer, points, settings.batch_size)
            cos, logits = cosine(acts, acts[-1]).cpu().numpy(), logits.cpu()
            target = int(targets[i])
            probs = logits.softmax(1)[:, target].numpy()
            for a, c, lg, p in zip(alphas.tolist(), cos, logits[:, target].numpy(), probs):
                curves.append({"model": card.name, "image": images.names[i], "baseline": kind,
                               "draw": draw, "alpha": a, "cosine": float(c), "logit": float(lg),
                               "probability": float(p)})
            reached = np.flatnonzero(cos >= settings.threshold)
            stars.append({"model": card.name, "image": images.names[i], "baseline": kind,
                          "draw": draw, "alpha_star": float(alphas[reached[0]]) if len(reached)
                          else math.nan})
    topk = topk_channels(loaded, x, targets, settings, methods)
    return SaturationTables(pd.DataFrame(curves), pd.DataFrame(stars), topk)


def topk_channels(loaded: Loaded, x: Tensor, targets: Tensor, settings: Saturation,
                  methods: Mapping[str, Any]) -> pd.DataFrame:
    """Target probability and logit keeping each fraction of the channels, ranked by each
    method's channel weights (the engine's ``activations_and_weights``); none without
    fractions (the study is skipped)."""
    if not settings.fractions:
        return pd.DataFrame()
    card = loaded.card
    model = card.model.eval()
    layer = model.get_submodule(card.cam_layer)
    ranked = {"gradcam": create_method("gradcam", card),
              settings.method: build_method(card, settings.method, methods[settings.method],
                                            loaded.references.images)}
    rows = []
    for method, attribution in ranked.items():
        weights = attribution.activations_and_weights(x, targets)[1].mean((2, 3))  # (B, K)
        channels = weights.shape[1]
        order = torch.argsort(weights, dim=1, descending=True, stable=True)
        rank = torch.argsort(order, dim=1)
        for f in settings.fractions:
            keep = max(1, math.ceil(f * channels))
            mask = (rank < keep).to(x.dtype)
            _, logits = forward_with_layer(model, layer, x, settings.batch_size, mask)
            picked = logits.gather(1, targets[:, None].to(logits.device)).squeeze(1).cpu()
            probs = logits.softmax(1).gather(1, targets[:, None].to(logits.device)).squeeze(1).cpu()
            rows += [{"model": card.name, "image": loaded.images.names[i], "method": method,
                      "fraction": f, "n_channels": keep, "probability": float(probs[i]),
                      "logit": float(picked[i])} for i in range(len(x))]
    return pd.DataFrame(rows)


def channel_insertion_auc(topk: pd.DataFrame) -> pd.DataFrame:
    """Per model × image × method: trapezoid area of the probability over the kept-channel
    fractions, divided by the fractions' span (the mean score over the range; higher is better)."""
    rows = []
    for (model, image, method), group in topk.groupby(["model", "image", "method"], sort=False):
        group = group.sort_values("fraction")
        f, p = group["fraction"].to_numpy(), group["probability"].to_numpy()
        span = f[-1] - f[0]
        auc = float(np.trapezoid(p, f) / span) if span > 0 else float(p.mean())
        rows.append({"model": model, "image": image, "method": method, "auc": auc})
    return pd.DataFrame(rows)


def saturation_groups(alpha_star: pd.DataFrame, baseline: str = "black") -> pd.DataFrame:
    """Per model × image: α* of ``baseline`` (mean over draws) and the group: ``strong`` when
    α* is below the model's median α*, ``rest`` otherwise (our split: always two groups)."""
    table = (alpha_star[alpha_star["baseline"] == baseline]
             .groupby(["model", "image"], sort=False)["alpha_star"].mean().reset_index())
    median = table.groupby("model")["alpha_star"].transform("median")
    table["group"] = np.where(table["alpha_star"] < median, "strong", "rest")
    return table


def run(ctx) -> None:
    """The egc_saturation stage: s(α) curves, α* per image, top-k channel scores."""
    curves, stars, topk, summary = [], [], [], {"models": {}}
    for loaded in run_models(ctx):
        start = ctx.seconds
        result = internal_saturation(
            loaded, ctx.settings("expected_gradcam.saturation", model=loaded.name),
            configured_methods(ctx, loaded.name), ctx.settings("seed"))
        curves.append(result.curves)
        stars.append(result.alpha_star)
        topk.append(result.topk)
        entry = {**loaded.description, "seconds": seconds_since(ctx, start, "saturation", loaded)}
        if len(result.alpha_star):
            black = result.alpha_star[result.alpha_star["baseline"] == "black"]["alpha_star"]
            entry.update(n_images=int(black.size), median_alpha_star_black=float(black.median()),
                         median_alpha_star_by_baseline=result.alpha_star.groupby("baseline")
                         ["alpha_star"].median().to_dict())
        summary["models"][loaded.name] = entry
    write_table(concat_tables(curves), ctx.output("curves"))
    write_table(concat_tables(stars), ctx.output("alpha_star"))
    write_table(concat_tables(topk), ctx.output("topk"))
    write_json(ctx.output("metrics"), json_safe(summary))


# --------------------------------------------------------------------------------- drawing

def saturation_figure(curves: pd.DataFrame, alpha_star: pd.DataFrame, view: View,
                      threshold: float = 0.95) -> plt.Figure:
    models = list(dict.fromkeys(curves["model"]))
    fig, axes = plt.subplots(2, len(models), figsize=(3.6 * len(models), 5.2), squeeze=False)
    for c, model in enumerate(models):
        ax = axes[0][c]
        rows = curves[curves["model"] == model]
        for baseline, line in (("black", "black"), ("data", "tab:orange")):
            sub = rows[rows["baseline"] == baseline]
            if sub.empty:
                continue
            g = sub.groupby("alpha")["cosine"].agg(["mean", "std"]).reset_index()
            ax.plot(g["alpha"], g["mean"], color=line, label=f"{baseline} baseline")
            ax.fill_between(g["alpha"], g["mean"] - g["std"].fillna(0),
                            g["mean"] + g["std"].fillna(0), color=line, alpha=0.15, lw=0)
        ax.axhline(threshold, color="tab:red", ls="--", lw=0.8, label=f"s = {threshold:g}")
        n = rows["image"].nunique()
        ax.set(xlabel="α", ylabel="cos(e(α), e(1))", title=f"{model_label(model)} (n = {n})")
        ax.legend()
        ax = axes[1][c]
        stars = alpha_star[alpha_star["model"] == model]
        for baseline, line in (("black", "black"), ("data", "tab:orange")):
            values = stars[stars["baseline"] == baseline]["alpha_star"].dropna()
            if len(values):
                ax.hist(values, bins=np.linspace(0, 1, 21), color=line, alpha=0.5,
                        label=f"{baseline} (median {values.median():.2f})")
        ax.set(xlabel="α* = min{α : s(α) ≥ threshold}", ylabel="images")
        ax.legend()
    fig.suptitle(view.title("Internal saturation along the path", models), fontsize=8)
    fig.tight_layout()
    return fig


def topk_figure(topk: pd.DataFrame, alpha_star: pd.DataFrame, view: View) -> plt.Figure:
    models = list(dict.fromkeys(topk["model"]))
    groups = saturation_groups(alpha_star)
    data = topk.merge(groups[["model", "image", "group"]], on=["model", "image"])
    fig, axes = plt.subplots(1, len(models), figsize=(3.8 * len(models), 2.8), squeeze=False)
    for c, model in enumerate(models):
        ax = axes[0][c]
        rows = data[data["model"] == model]
        for (method, group), sub in rows.groupby(["method", "group"], sort=False):
            g = sub.groupby("fraction")["probability"].mean()
            ax.plot(g.index, g.to_numpy(), marker="o", markersize=2.5,
                    color=colour(method), ls="-" if group == "strong" else ":",
                    label=f"{view.label(method)}, {group} saturation "
                          f"(n = {sub['image'].nunique()})")
        ax.set(xscale="log", xlabel="fraction of channels kept (top-k by weight)",
               ylabel="target probability", title=model_label(model))
        ax.legend(fontsize=6)
    fig.suptitle(view.title("Top-k channels under saturation (our reading)", models), fontsize=8)
    fig.tight_layout()
    return fig


def saturation_table(alpha_star: pd.DataFrame, topk: pd.DataFrame, view: View) -> Table:
    rows = []
    for (model, baseline), g in alpha_star.groupby(["model", "baseline"], sort=False):
        v = g["alpha_star"].dropna()
        rows.append({"model": model, "baseline": baseline, "n": int(g["image"].nunique()),
                     "draws": int(len(v)), "median α*": v.median(), "mean α*": v.mean(),
                     "share α* ≤ 0.7": float((v <= SATURATED_AT).mean()) if len(v)
                     else math.nan})
    table = pd.DataFrame(rows)
    aucs = channel_insertion_auc(topk).merge(saturation_groups(alpha_star), on=["model", "image"])
    wide = aucs.pivot_table(index=["model", "group"], columns="method", values="auc",
                            aggfunc="mean").reset_index()
    wide.columns = [c if c in ("model", "group") else f"top-k AUC {view.label(c)}"
                    for c in wide.columns]
    wide = wide.rename(columns={"group": "baseline"})
    wide["baseline"] = "black: " + wide["baseline"] + " saturation"
    return Table(pd.concat([table, wide], ignore_index=True),
                 "Internal saturation: α* and top-k channel AUC")
