"""Exp. 4 (claim C6): how much maps change with the baseline parameter; its figure and table.

For each image, the Spearman correlation of the upsampled maps of every pair of configurations
of one method: Integrated Grad-CAM over baseline choices, each configured Expected Grad-CAM over
reference pools and seeds. C6 compares the per-image mean over pairs. Integrated Grad-CAM runs
through the engine directly (the baselines are per-image tensors, which a batched loop cannot
pass); Expected Grad-CAM through the Explainer.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from replication.attribution import Explainer
from replication.errors import ConfigError
from replication.experiments.common import stage_explainer
from replication.experiments.expected_gradcam.drawing import (Table, View, colour, model_label,
                                                              paired_table)
from replication.experiments.expected_gradcam.loading import (Loaded, reference_draws,
                                                              run_models, seconds_since)
from replication.experiments.expected_gradcam.methods import (build_method, configured_methods,
                                                              upsampled)
from replication.experiments.expected_gradcam.settings import Baselines
from replication.fileio import concat_tables, json_safe, write_json, write_table
from replication.metrics.similarity import spearman_rows
from replication.models.base import ModelCard

PAIR_COLUMNS = ["model", "method", "image", "config_a", "config_b", "spearman"]
CONSISTENCY = "mean pairwise Spearman"  # the tables' name of the per-image mean over pairs


def blurred(pixels: Tensor, sigma: float) -> Tensor:
    """Gaussian blur in pixel space with reflected borders (kernel ±3σ, within the image)."""
    from torchvision.transforms.functional import gaussian_blur

    size = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(pixels.shape[-2:]) // 2) - 1)
    return gaussian_blur(pixels, [size, size], [sigma, sigma])


def baseline_tensors(card: ModelCard, x: Tensor, kinds: Sequence[str], references: Tensor,
                     *, seed: int, blur_sigma: float) -> dict[str, Tensor]:
    """Per-image baselines (B, C, H, W) in model-input space.

    ``zeros`` (the Integrated Grad-CAM notebook's ``input * 0``), ``black``, ``white``, ``blur``
    (the input blurred in pixel space, σ = ``blur_sigma`` pixels), ``uniform_noise`` (pixels
    U(0, 1), seeded per image index) and ``data`` (one image of D per image, seeded).
    """
    p = card.preprocessing
    out: dict[str, Tensor] = {}
    for kind in kinds:
        if kind == "zeros":
            out[kind] = torch.zeros_like(x)
        elif kind == "black":
            out[kind] = p.normalize(torch.zeros_like(x))
        elif kind == "white":
            out[kind] = p.normalize(torch.ones_like(x))
        elif kind == "blur":
            out[kind] = p.normalize(blurred(p.denormalize(x).clamp(0, 1), blur_sigma))
        elif kind == "uniform_noise":
            noise = [torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(
                seed * 1_000_003 + i)) for i in range(len(x))]
            out[kind] = p.normalize(torch.stack(noise).to(x)) if len(x) else x.clone()
        elif kind == "data":
            if not len(references):
                raise ConfigError("baseline 'data' needs the reference set D")
            index = reference_draws(len(x), len(references), 1, seed)[:, 0]
            out[kind] = references[torch.as_tensor(index, dtype=torch.long)].to(x)
        else:
            raise ConfigError(f"unknown baseline {kind!r}; choose from zeros, black, white, blur, "
                              "uniform_noise, data")
    return out


def reference_pool(references: Tensor, pool: str) -> Tensor | str:
    """The references of one configuration: a part of D, or a fixed baseline's name."""
    if pool in ("black", "zeros", "input"):
        return pool
    half = len(references) // 2
    pools = {"all": references, "first_half": references[:half], "second_half": references[half:]}
    if not len(pools[pool]):
        raise ConfigError(f"reference pool {pool!r} is empty (D holds {len(references)} images)")
    return pools[pool]


def baseline_sensitivity(loaded: Loaded, settings: Baselines, methods: Mapping[str, Any],
                         explainer: Explainer, *, seed: int) -> pd.DataFrame:
    """Exp. 4 on the first ``settings.images`` images: Integrated Grad-CAM (its parameters from
    ``methods``) with each baseline of ``settings.integrated_gradcam.baselines``, and each
    configured Expected Grad-CAM of ``settings.methods`` with each of ``settings.configs``."""
    card, references = loaded.card, loaded.references.images
    x, targets = loaded.first(settings.images)
    if not len(x):  # a count of 0: not run on this model
        return pd.DataFrame(columns=PAIR_COLUMNS)
    maps: dict[str, dict[str, np.ndarray]] = {"integrated_gradcam": {}}
    tensors = baseline_tensors(card, x, settings.integrated_gradcam.baselines, references,
                               seed=seed, blur_sigma=float(settings.blur_sigma))
    for kind, baseline in tensors.items():
        method = build_method(card, "integrated_gradcam",
                              {**methods["integrated_gradcam"], "baseline": baseline}, references)
        maps["integrated_gradcam"][kind] = flat(method.attribute(x, targets), x)
    for name in settings.methods:
        maps[name] = {}
        for config, choice in settings.configs.items():
            chosen = {**methods[name], "references": reference_pool(references, choice.pool),
                      "seed": choice.seed}
            attribution = build_method(card, name, chosen, references)
            maps[name][config] = flat(explainer.raw(attribution, x, targets), x)
    rows = []
    for method, by_config in maps.items():
        names = list(by_config)
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                rho = spearman_rows(by_config[names[a]], by_config[names[b]])
                rows += [{"model": card.name, "method": method, "image": loaded.images.names[i],
                          "config_a": names[a], "config_b": names[b], "spearman": float(r)}
                         for i, r in enumerate(rho)]
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def flat(maps: Tensor, x: Tensor) -> np.ndarray:
    return upsampled(maps, x).flatten(1).cpu().numpy()


def mean_pairwise(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per model × method × image: the mean pairwise Spearman over configuration pairs."""
    return (pairs.groupby(["model", "method", "image"], sort=False)["spearman"].mean()
            .reset_index(name="mean_spearman"))


def run(ctx) -> None:
    """The egc_baselines stage: pairwise Spearman between the maps of baseline choices."""
    explainer = stage_explainer(ctx, ctx.settings("expected_gradcam.batch_size"))
    pairs, summary = [], {"models": {}}
    for loaded in run_models(ctx):
        start = ctx.seconds
        table = baseline_sensitivity(
            loaded, ctx.settings("expected_gradcam.baselines", model=loaded.name),
            configured_methods(ctx, loaded.name), explainer,
            seed=ctx.settings("seed"))
        pairs.append(table)
        summary["models"][loaded.name] = {
            **loaded.description, "seconds": seconds_since(ctx, start, "baselines", loaded),
            "mean_pairwise_spearman": mean_pairwise(table).groupby("method")["mean_spearman"]
            .mean().to_dict()}
    write_table(concat_tables(pairs), ctx.output("pairs"))
    write_json(ctx.output("metrics"), json_safe(summary))


# --------------------------------------------------------------------------------- drawing

def baseline_figure(pairs: pd.DataFrame, view: View) -> plt.Figure:
    means = mean_pairwise(pairs)
    models = list(dict.fromkeys(means["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 2.8), squeeze=False)
    for c, model in enumerate(models):
        ax = axes[0][c]
        rows = means[means["model"] == model]
        methods = list(dict.fromkeys(rows["method"]))
        values = [rows[rows["method"] == m]["mean_spearman"].dropna().to_numpy() for m in methods]
        ax.boxplot(values, tick_labels=[textwrap.fill(view.label(m), 12) for m in methods],
                   widths=0.5)
        for k, v in enumerate(values):
            ax.scatter(np.full(len(v), k + 1.0), v, s=6, color=colour(methods[k]), alpha=0.7)
        ax.set(ylabel="mean pairwise Spearman (per image)",
               title=f"{model_label(model)} (n = {rows['image'].nunique()})")
    fig.suptitle(view.title("Sensitivity to the baseline choice", models), fontsize=8)
    fig.tight_layout()
    return fig


def baseline_table(pairs: pd.DataFrame, view: View) -> Table:
    """The paired difference of the per-image mean pairwise Spearman with Integrated Grad-CAM,
    and the configurations in the note."""
    means = mean_pairwise(pairs).rename(columns={"mean_spearman": "value"})
    means["metric"] = CONSISTENCY
    view = dataclasses.replace(view, directions={**view.directions, CONSISTENCY: True})
    others = [m for m in dict.fromkeys(means["method"]) if m != "integrated_gradcam"]
    table = pd.concat([paired_table(means, m, "integrated_gradcam", view)
                       .rename(columns={f"mean {view.label(m)}": "mean (method)"})
                       .assign(method=view.label(m)) for m in others],
                      ignore_index=True) if others else pd.DataFrame()
    configs = (pairs.groupby(["model", "method"])
               .apply(lambda g: ", ".join(sorted(set(g["config_a"]) | set(g["config_b"]))),
                      include_groups=False).rename("configurations").reset_index())
    note = view.note + "\n\nConfigurations: " + "; ".join(
        f"{r.model} {r.method}: {r.configurations}" for r in configs.itertuples())
    return Table(table, "Baseline sensitivity: Expected Grad-CAM variants − Integrated Grad-CAM",
                 note)
