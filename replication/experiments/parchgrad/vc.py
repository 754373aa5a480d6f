"""E2: zero pruning vs variance conservation (``parchgrad_vc``; claims C4, C7).

ParchGrad(Gradient, γ = ∞) with variance conservation (VC) against zero pruning (β = 1) at each
hooks setting and channel portion. ``pairs``: Pearson r of the raw maps, the best scale s
(VC ≈ s · zero pruning) and the relative residual: on a purely sequential net (the MNIST CNN;
the authors' VGG16-BN) r = 1 and the residual is round-off (C4). ``artifacts``: high-frequency
energy and total variation of the authors' |map| (C7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from replication import plotting
from replication.attribution import ChannelStatistics, Explainer
from replication.cost import Cost
from replication.errors import ConfigError
from replication.experiments.common import ImageSet
from replication.experiments.parchgrad import loading
from replication.experiments.parchgrad.display import (AUTHORS_MODELS, Sources, gallery_rows,
                                                       heat, image_panels, model_name,
                                                       model_title, panel, panel_key,
                                                       save_gallery)
from replication.experiments.parchgrad.methods import (MethodOptions, authors_pixel_map, explain,
                                                       flat, gradient_pixel_map, hooked_convs,
                                                       hooks_label, image_rows, map_cost,
                                                       method_spec)
from replication.experiments.parchgrad.settings import VCSettings
from replication.fileio import atomic_directory, write_json, write_npz, write_table
from replication.metrics import similarity
from replication.models.base import ModelCard

# The artifact measures; lower is fewer artifacts (the direction of the VC-vs-zero comparison).
ARTIFACT_MEASURES = {"hf_energy": False, "total_variation": False}


# --------------------------------------------------------------------------- artifact measures

def high_frequency_energy(pixel_maps: Tensor, cutoff: float = 0.5) -> np.ndarray:
    """Fraction of the spectral energy of each (mean-removed) map above ``cutoff``·Nyquist.

    Radial frequency with 1 = Nyquist (0.5 cycles/pixel) along an axis; stride-2 checkerboard
    artifacts sit at 1 (and √2 on the diagonal). Scale-invariant; NaN for a constant map.
    """
    if not 0 < cutoff < math.sqrt(2):
        raise ConfigError(f"cutoff must be a fraction of Nyquist in (0, √2); got {cutoff}")
    m = pixel_maps[:, 0].double()
    m = m - m.mean((1, 2), keepdim=True)
    power = torch.fft.fft2(m).abs() ** 2
    fy = torch.fft.fftfreq(m.shape[1], dtype=torch.float64) / 0.5
    fx = torch.fft.fftfreq(m.shape[2], dtype=torch.float64) / 0.5
    high = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt() > cutoff
    total = power.flatten(1).sum(1)
    above = (power * high).flatten(1).sum(1)
    return torch.where(total > 0, above / total.clamp_min(1e-300), torch.nan).numpy()


def total_variation(pixel_maps: Tensor) -> np.ndarray:
    """(mean |Δx| + mean |Δy|) / mean |m|: neighbour differences relative to the map's size.

    Scale-invariant; NaN for an all-zero map.
    """
    m = pixel_maps[:, 0].double()
    tv = (m[:, :, 1:] - m[:, :, :-1]).abs().flatten(1).mean(1) \
        + (m[:, 1:, :] - m[:, :-1, :]).abs().flatten(1).mean(1)
    size = m.abs().flatten(1).mean(1)
    return torch.where(size > 0, tv / size.clamp_min(1e-300), torch.nan).numpy()


def best_scale(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, s minimising ‖a − s·b‖ and the relative residual ‖a − s·b‖ / ‖a‖."""
    scale = np.einsum("ij,ij->i", a, b) / np.maximum(np.einsum("ij,ij->i", b, b), 1e-300)
    residual = np.linalg.norm(a - scale[:, None] * b, axis=1) / np.maximum(
        np.linalg.norm(a, axis=1), 1e-300)
    return scale, residual


# --------------------------------------------------------------------------- compute

@dataclass
class VCResult:
    """E2 tables: per-map artifact measures, per-image VC-vs-zero-pruning agreement, panels."""

    artifacts: pd.DataFrame
    pairs: pd.DataFrame
    maps: dict[str, np.ndarray] = field(default_factory=dict)


def _artifact_rows(rows: list[dict], pixel: Tensor, cutoff: float, **columns) -> list[dict]:
    hf, tv = high_frequency_energy(pixel, cutoff), total_variation(pixel)
    return [{**row, **columns, "hf_energy": hf[i], "total_variation": tv[i]}
            for i, row in enumerate(rows)]


def vc_ablation(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                settings: VCSettings, options: MethodOptions, explainer: Explainer) -> VCResult:
    """ParchGrad(Gradient) with variance conservation vs zero pruning (β = 1), γ = ∞, at each
    of ``settings.hooks`` and ``settings.channel_portions`` (module docstring)."""
    panels, rows, cutoff = min(settings.panels, len(images)), image_rows(card, images), \
        settings.cutoff
    gradient = gradient_pixel_map(explainer, card, images, options)
    artifacts = _artifact_rows(rows, gradient, cutoff, hooks="none", n_convs=0,
                               q=float("nan"), variant="gradient")
    maps, pairs = image_panels(card, images.images, gradient, panels), []
    for hooks in settings.hooks:
        convs = hooked_convs(card, hooks)
        for q in settings.channel_portions:
            raw = {}
            for vc, variant in ((True, "vc"), (False, "zero_pruning")):
                name, params = method_spec("gradient", options, statistics, q, convs, vc)
                raw[variant] = explain(explainer, card, name, params, images)
                pixel = authors_pixel_map(raw[variant], "gradient")
                artifacts += _artifact_rows(rows, pixel, cutoff, hooks=hooks_label(hooks),
                                            n_convs=len(convs), q=float(q), variant=variant)
                for i in range(panels):
                    maps[panel_key(variant, hooks_label(hooks), f"{q:g}", i)] = panel(pixel[i])
            a, b = flat(raw["vc"]), flat(raw["zero_pruning"])
            r = similarity.pearson_rows(a, b)
            scale, residual = best_scale(a, b)
            pairs += [{**row, "hooks": hooks_label(hooks), "n_convs": len(convs), "q": float(q),
                       "pearson": r[i], "best_scale": scale[i], "relative_residual": residual[i]}
                      for i, row in enumerate(rows)]
    return VCResult(pd.DataFrame(artifacts), pd.DataFrame(pairs), maps)


def cost(ctx) -> list[Cost]:
    """Gradient, then ParchGrad(Gradient) with and without VC per hooks setting and q."""
    settings = ctx.settings("parchgrad.vc")
    maps = 1 + 2 * len(settings.hooks) * len(settings.channel_portions)
    return [map_cost(ctx, name, "gradient", maps, count, f"E2: {maps} maps per image")
            for name, count in loading.models_to_explain(settings.images).items()]


def run(ctx) -> None:
    settings = ctx.settings("parchgrad.vc")
    results, seconds = loading.per_model(ctx, settings.images, vc_ablation, settings,
                                         MethodOptions.of(ctx), loading.explainer(ctx))
    with atomic_directory(ctx.output("out")) as out:
        write_table(pd.concat([r.artifacts for r in results.values()], ignore_index=True),
                    out / "e2_artifacts.csv")
        write_table(pd.concat([r.pairs for r in results.values()], ignore_index=True),
                    out / "e2_pairs.csv")
    write_npz(ctx.output("maps"), {panel_key(name, key): value for name, r in results.items()
                                   for key, value in r.maps.items()})
    write_json(ctx.output("metrics"), loading.stage_metrics(ctx, seconds_per_model=seconds))


# --------------------------------------------------------------------------- figures

def _gallery_row(maps, model: str, settings: list, i: int) -> list:
    row = [maps[panel_key(model, "image", i)], heat(maps[panel_key(model, "gradient", i)])]
    for hooks, q in settings:
        for variant in ("vc", "zero_pruning"):
            key = panel_key(model, variant, hooks, f"{q:g}", i)
            row.append(heat(maps[key]) if key in maps else None)
    return row


def draw_panels(sources: Sources, out: Path) -> list[Path]:
    """Per model: the images, Gradient, and VC / zero-pruning maps at each (hooks, q)."""
    artifacts, pairs, maps = sources.tables["e2_artifacts"], sources.tables["e2_pairs"], \
        sources.maps["vc"]
    settings = list(pairs[["hooks", "q"]].drop_duplicates().itertuples(index=False))
    columns = ["image", "Gradient"]
    for hooks, q in settings:
        columns += [f"VC\n{hooks}, q={q:g}", f"zero pruning\n{hooks}, q={q:g}"]
    written = []
    for model in dict.fromkeys(artifacts["model"]):
        names = list(pairs.loc[pairs["model"] == model, "image"])
        rows, labels = gallery_rows(maps, model, lambda i: _gallery_row(maps, model, settings, i),
                                    names)
        if rows:
            written += save_gallery(rows, labels, columns,
                                    "E2: zero pruning vs variance conservation (each map scaled "
                                    f"by 10·mean|R|) — {model_title(model, sources.profile)}",
                                    out / f"e2_zero_pruning_vs_vc_{model}")
    return written


def draw_artifacts(sources: Sources, out: Path) -> list[Path]:
    """Mean artifact measures per model and hooks, zero pruning beside VC."""
    artifacts = sources.tables["e2_artifacts"]
    plotting.use_style()
    hooked = artifacts[artifacts["variant"] != "gradient"]
    panels = list(hooked.groupby(["model", "hooks"], sort=False))
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.0))
    for ax, measure in zip(axes, ARTIFACT_MEASURES):
        labels, zero, vc = [], [], []
        for (model, hooks), group in panels:
            means = group.groupby("variant")[measure].mean()
            labels.append(f"{model_name(model)}\n{hooks}")
            zero.append(means.get("zero_pruning", np.nan))
            vc.append(means.get("vc", np.nan))
        x = np.arange(len(labels))
        ax.bar(x - 0.2, zero, 0.4, label="zero pruning (β = 1)", color="tab:red")
        ax.bar(x + 0.2, vc, 0.4, label="variance conservation", color="tab:blue")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=6, rotation=30, ha="right")
        ax.set_title({"hf_energy": "spectral energy above ½ Nyquist",
                      "total_variation": "total variation / mean |R|"}[measure])
    axes[0].legend(fontsize=6)
    fig.suptitle(f"E2: artifact measures, mean over images ({sources.profile} profile; "
                 f"{AUTHORS_MODELS})", fontsize=8, y=1.04)
    return plotting.save_figure(fig, out / "e2_artifacts")


def draw_scale_invariance(sources: Sources, out: Path) -> list[Path]:
    """The per-model table: Pearson r and best scale of VC vs zero pruning, artifact means."""
    artifacts, pairs = sources.tables["e2_artifacts"], sources.tables["e2_pairs"]
    table = pairs.groupby(["model", "hooks", "n_convs", "q"], sort=False).agg(
        images=("pearson", "size"), pearson_min=("pearson", "min"),
        pearson_mean=("pearson", "mean"), best_scale_min=("best_scale", "min"),
        best_scale_max=("best_scale", "max"),
        relative_residual_max=("relative_residual", "max")).reset_index()
    hooked = artifacts[artifacts["variant"] != "gradient"]
    means = hooked.pivot_table(index=["model", "hooks", "q"], columns="variant",
                               values=list(ARTIFACT_MEASURES), aggfunc="mean")
    means.columns = [f"{m}_{v}" for m, v in means.columns]
    table = table.merge(means.reset_index(), on=["model", "hooks", "q"], how="left")
    return plotting.write_table(
        table, out / "e2_scale_invariance",
        "E2: ParchGrad(Gradient) with VC vs zero pruning, per model and hooks",
        "Pearson r of the raw maps per image and the best scale s (VC ≈ s · zero pruning). r = 1 "
        "with round-off residual means VC only rescales the map: every hooked conv then lies on "
        "a path all the gradient crosses (sequential nets; Lite0's default hooks too). "
        "Layer-ratio hooks (r=…) include convs inside residual blocks.")
