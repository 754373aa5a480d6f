"""S1: checks of the channel statistics (``parchgrad_statistics_checks``; claims C11, C12).

- C11: the fraction of channels the authors' Shapiro filter keeps, per model (from the
  statistics stage's summaries);
- C12: how much the authors' ``h`` bug changes ParchGrad: the H sets of corrected vs
  bug-compatible statistics per hooked conv and q, and the maps' agreement;
- dead channels: what the engine does, in instance mode, with channels whose GAP is 0 on the
  whole statistics set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from replication import plotting
from replication.attribution import ChannelStatistics, Explainer, create_method, select_channels
from replication.cost import Cost
from replication.errors import ConfigError, DataError
from replication.experiments.common import ImageSet, stage_device
from replication.experiments.parchgrad import loading
from replication.experiments.parchgrad.display import Sources
from replication.experiments.parchgrad.methods import (MethodOptions, counting_card, flat,
                                                       gradient_pixel_map, hooked_convs,
                                                       image_rows, map_cost)
from replication.experiments.parchgrad.settings import StatisticsChecksSettings
from replication.experiments.parchgrad.statistics import last_layer_copy
from replication.fileio import atomic_directory, atomic_write_text, concat_tables, write_json
from replication.fileio import write_table
from replication.metrics import similarity
from replication.models.base import ModelCard

SHAPIRO_THRESHOLD = 0.05  # the authors' filter, where the settings turn it off (dead channels)


# --------------------------------------------------------------------------- C11

def shapiro_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """Per model: the channels whose GAP has Shapiro p < 0.05 (kept by the authors' filter)."""
    rows = []
    for model, summary in summaries.items():
        fraction = summary.get("shapiro_below_0.05") or {}
        rows.append({"model": model, "statistics_set": summary.get("statistics_set", ""),
                     "mode": summary.get("mode"), "n_images": summary.get("n_images"),
                     "channels": fraction.get("channels"),
                     "shapiro_below_0.05": fraction.get("count"),
                     "fraction": fraction.get("fraction")})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- C12

def select_high(log_p: Tensor, q: float) -> Tensor:
    """H masks (C, K) for every class at channel portion q: the ParchGrad method's own rule
    (p ≤ the k-th smallest p, k = max(1, int(C·q)); ties at the threshold are all kept, so |H|
    can exceed int(C·q): the float32 tie problem)."""
    if not 0 < q <= 1:
        raise ConfigError(f"channel portion q must be in (0, 1]; got {q}")
    return select_channels(log_p.T, q, None, None, None).T


def _high_sets(layer, q: float, shapiro_threshold: float | None, name: str) -> Tensor:
    high = select_high(layer.log_p, q)
    if shapiro_threshold is not None:
        if layer.shapiro_p is None:
            raise DataError(f"{name}: no Shapiro p-values to filter with")
        high &= (layer.shapiro_p < shapiro_threshold)[:, None]
    return high


def selection_difference(corrected: ChannelStatistics, bug_compatible: ChannelStatistics,
                         q: float = 0.1, layers: Sequence[str] | None = None,
                         shapiro_threshold: float | None = None) -> pd.DataFrame:
    """How much the authors' bug changes the selected H sets (claim C12).

    Per layer (default: the layers both hold), H by ``select_high`` at channel portion ``q``
    for every class, optionally with the Shapiro filter (p < threshold); the Jaccard index of
    corrected vs bug-compatible H, its mean and minimum over classes, and the fraction of
    classes with identical H. Empty unions count as identical (Jaccard 1).
    """
    for stats_ in (corrected, bug_compatible):
        if stats_.mode != "class":
            raise ConfigError("selection_difference compares class-mode statistics")
    names = [n for n in corrected.layers if n in bug_compatible.layers] if layers is None \
        else list(layers)
    rows = []
    for name in names:
        a_layer, b_layer = corrected.layer(name), bug_compatible.layer(name)
        if a_layer.log_p.shape != b_layer.log_p.shape:
            raise DataError(f"{name}: corrected {tuple(a_layer.log_p.shape)} and bug-compatible "
                            f"{tuple(b_layer.log_p.shape)} statistics differ in shape")
        a, b = (_high_sets(layer, q, shapiro_threshold, name) for layer in (a_layer, b_layer))
        inter = (a & b).sum(dim=0).to(torch.float64)
        union = (a | b).sum(dim=0).to(torch.float64)
        jaccard = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
        rows.append({"layer": name, "channels": a_layer.channels, "q": q,
                     "h_size_corrected": float(a.sum(dim=0).double().mean()),
                     "h_size_bug": float(b.sum(dim=0).double().mean()),
                     "jaccard_mean": float(jaccard.mean()), "jaccard_min": float(jaccard.min()),
                     "identical_classes": _mean(jaccard == 1)})
    return pd.DataFrame(rows)


@dataclass
class BugEffect:
    """C12: H-set overlap of corrected vs bug-compatible statistics, and the maps' agreement."""

    selection: pd.DataFrame
    maps: pd.DataFrame


def statistics_bug_effect(card: ModelCard, images: ImageSet, corrected: ChannelStatistics,
                          bug: ChannelStatistics, settings: StatisticsChecksSettings,
                          options: MethodOptions, explainer: Explainer) -> BugEffect:
    """How much the authors' statistics bug changes ParchGrad (claim C12).

    ``selection``: per hooked conv and q, Jaccard of the H sets (with the Shapiro filter, as
    the method runs) and whether the bug-compatible log p is the last conv's copy. ``maps``:
    per image and q, Spearman and Pearson of the authors' |map| of ParchGrad(Gradient) under
    the two statistics.
    """
    convs, rows = hooked_convs(card, settings.hooks), image_rows(card, images)
    copies = last_layer_copy(bug)
    frames, agreement = [], []
    for q in settings.channel_portions:
        frame = selection_difference(corrected, bug, float(q), convs, options.shapiro_threshold)
        frame.insert(0, "model", card.name)
        frame["bug_is_last_layer_copy"] = frame["layer"].map(copies)
        frame["is_last_conv"] = frame["layer"] == list(bug.layers)[-1]
        frames.append(frame)
        a, b = (flat(gradient_pixel_map(explainer, card, images, options, stats_, q, convs))
                for stats_ in (corrected, bug))
        spearman, pearson = similarity.spearman_rows(a, b), similarity.pearson_rows(a, b)
        agreement += [{**row, "q": float(q), "spearman": spearman[i], "pearson": pearson[i]}
                      for i, row in enumerate(rows)]
    return BugEffect(pd.concat(frames, ignore_index=True), pd.DataFrame(agreement))


# --------------------------------------------------------------------------- dead channels

def _mean(mask: Tensor) -> float:
    return float(mask.double().mean()) if mask.numel() else float("nan")


def _following_batchnorm(model: torch.nn.Module, conv: str) -> torch.nn.BatchNorm2d | None:
    """The module right after ``conv`` in ``named_modules`` order, if it is a BatchNorm2d
    (timm's BatchNormAct2d, which applies the activation too, is one)."""
    names = [n for n, _ in model.named_modules()]
    position = names.index(conv) + 1
    while position < len(names) and names[position].startswith(conv + "."):
        position += 1
    if position < len(names):
        module = model.get_submodule(names[position])
        if isinstance(module, torch.nn.BatchNorm2d):
            return module
    return None


def _record_outputs(model: torch.nn.Module, conv: str) -> tuple[dict[str, Tensor], list]:
    """Forward hooks keeping the conv's output and that of the BatchNorm after it (if any)."""
    outputs: dict[str, Tensor] = {}

    def keep(key: str):
        return lambda _m, _i, output: outputs.__setitem__(key, output.detach().cpu())

    handles = [model.get_submodule(conv).register_forward_hook(keep("output"))]
    norm = _following_batchnorm(model, conv)
    if norm is not None:
        handles.append(norm.register_forward_hook(keep("norm")))
    return outputs, handles


def _dead_rows(card, method, name: str, layer, images: ImageSet, settings, threshold,
               device: torch.device) -> list[dict]:
    """One conv's rows: on the statistics images and on the IG path's midpoint (0.5·x)."""
    dead = layer.gap_std == 0
    outputs, handles = _record_outputs(card.model, name)
    rows = []
    try:
        x = images.images.to(device)
        for label, inputs in (("statistics_images", x), ("ig_midpoint", 0.5 * x)):
            with torch.no_grad():
                card.model.eval()(inputs)
            log_p = method.log_pvalues(name, outputs["output"])  # the engine's own p-values
            with_filter = select_channels(log_p, settings.channel_portion, None,
                                          layer.shapiro_p, threshold or SHAPIRO_THRESHOLD)
            without = select_channels(log_p, settings.channel_portion, None, None, None)
            dead_p = log_p[:, dead]
            awake = (torch.relu(outputs["output"]).mean((2, 3))[:, dead] > 0)
            after_bn = (_mean(outputs["norm"][:, dead].amax((0, 2, 3)) > 0)
                        if "norm" in outputs else float("nan"))
            rows.append({"model": card.name, "conv": name, "channels": layer.channels,
                         "dead_channels": int(dead.sum()), "input": label,
                         "images": len(images), "dead_awake_fraction": _mean(awake),
                         "dead_active_after_bn_fraction": after_bn,
                         "dead_p_one_fraction": _mean(dead_p == 0),
                         "dead_p_zero_fraction": _mean(torch.exp(dead_p) == 0),
                         "dead_selected_with_shapiro": _mean(with_filter[:, dead]),
                         "dead_selected_without_shapiro": _mean(without[:, dead]),
                         "dead_shapiro_p_min": float(layer.shapiro_p[dead].min())
                         if layer.shapiro_p is not None and dead.any() else float("nan")})
    finally:
        for handle in handles:
            handle.remove()
    return rows


def dead_channel_check(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                       settings: StatisticsChecksSettings, options: MethodOptions,
                       device: torch.device) -> pd.DataFrame:
    """Instance mode: what the engine does with channels whose GAP is 0 on the whole set.

    Their z = (gap − mean) / std is 0/0 on the set's own images (the engine maps NaN to p = 1)
    but +∞ on any input that wakes them (p = 0, selected first) unless the Shapiro filter
    (p = 1 for a constant channel) removes them. Checked on the images and on the midpoint of
    the IG path from the zero baseline (0.5·x), an input off the statistics set.

    "Dead" is the authors' statistic: ReLU of the *pre*-BatchNorm output. When a BatchNorm
    follows the conv, ``dead_active_after_bn_fraction`` says how many of these channels are
    positive after it somewhere (ReLU(BN(x)) > 0): such channels carry gradient, so the
    Shapiro filter's pruning of them changes the map even at q = 1. Empty for class-mode
    statistics.
    """
    if statistics.mode != "instance":
        return pd.DataFrame()
    convs, threshold = hooked_convs(card, settings.hooks), options.shapiro_threshold
    method = create_method("parchgrad", card, statistics=statistics, convs=convs,
                           channel_portion=float(settings.channel_portion),
                           shapiro_threshold=threshold)
    rows = []
    for name in convs:
        rows += _dead_rows(card, method, name, statistics.layer(name), images, settings,
                           threshold, device)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the stage

def cost(ctx) -> list[Cost]:
    """C12: ParchGrad(Gradient) under both statistics at each q, per bug model (counted as if
    its statistics were class-wise); dead channels: two forwards per hooked conv and image of
    the instance-wise models (counted for every ImageNet model)."""
    settings, models = ctx.settings("parchgrad.statistics_checks"), ctx.settings("parchgrad.models")
    counts = loading.models_to_explain(settings.images)
    maps = 2 * len(settings.channel_portions)
    costs = [map_cost(ctx, name, "gradient", maps, counts[name], f"C12: {maps} maps per image")
             for name in settings.bug_models]
    for name, count in counts.items():
        if models[name].images == "imagenet":
            convs = len(hooked_convs(counting_card(models[name].model), settings.hooks))
            costs.append(Cost(models[name].model, "dead channels", 0, 2 * convs * count))
    return costs


BUG_NEEDS_CLASSES = ("not run: the authors' bug needs class-wise statistics (ILSVRC2012 "
                     "archives)")


def bug_status(ctx, name: str) -> str:
    """Why C12 cannot be measured on ``name`` ("" when it can): the bug is one of the
    class-wise test, so a model whose statistics are instance-wise (the ImageNet sample, or the
    fallback to it without the ILSVRC2012 archives) has no bug-compatible statistics."""
    statistics = loading.load_statistics(ctx, name, "")
    if statistics.mode == "class" and (ctx.input("statistics") / f"{name}-authors-bug.pt").is_file():
        return ""
    if statistics.mode == "class":
        return (f"not run: {name}-authors-bug.pt is missing (parchgrad.statistics.authors_bug is "
                "off)")
    fallback = statistics.meta.get("fallback_note")
    return BUG_NEEDS_CLASSES + (f"; {name}: {fallback}" if fallback else
                                f"; {name}'s statistics are instance-wise")


def run(ctx) -> None:
    settings, options = ctx.settings("parchgrad.statistics_checks"), MethodOptions.of(ctx)
    explainer = loading.explainer(ctx)
    summaries = loading.read_statistics_summaries(ctx.input("statistics_metrics"))
    counts = loading.models_to_explain(settings.images)
    selections, bug_maps, dead, status = [], [], [], []
    for name in settings.bug_models:
        reason = bug_status(ctx, name)
        status.append({"model": name, "status": "not run" if reason else "run",
                       "reason": reason})
        if reason:
            continue
        result = statistics_bug_effect(
            loading.load_card(ctx, name), loading.explained_images(ctx, name, counts[name]),
            loading.load_statistics(ctx, name, ""),
            loading.load_statistics(ctx, name, "-authors-bug"), settings, options, explainer)
        selections.append(result.selection)
        bug_maps.append(result.maps)
    for name, count in counts.items():
        if loading.load_statistics(ctx, name).mode == "instance":
            dead.append(dead_channel_check(loading.load_card(ctx, name),
                                           loading.explained_images(ctx, name, count),
                                           loading.load_statistics(ctx, name), settings,
                                           options, stage_device(ctx)))
    with atomic_directory(ctx.output("out")) as out:
        write_table(shapiro_table(summaries), out / "s1_shapiro.csv")
        write_table(concat_tables(selections), out / "s1_bug_selection.csv")
        write_table(concat_tables(bug_maps), out / "s1_bug_maps.csv")
        write_table(pd.DataFrame(status, columns=["model", "status", "reason"]),
                    out / "s1_bug_status.csv")
        write_table(concat_tables(dead), out / "s1_dead_channels.csv")
    write_json(ctx.output("metrics"), loading.stage_metrics(ctx))


# --------------------------------------------------------------------------- figures

def draw_statistics(sources: Sources, out: Path) -> list[Path]:
    """One Markdown page: Shapiro fractions (C11), the bug's H sets and maps (C12)."""
    tables = sources.tables
    shapiro = tables["s1_shapiro"]
    selection = tables.get("s1_bug_selection", pd.DataFrame())
    bug_maps = tables.get("s1_bug_maps", pd.DataFrame())
    parts = [("Shapiro–Wilk filter: channels with p < 0.05 (kept by the authors' filter; C11)",
              shapiro)]
    status = tables.get("s1_bug_status", pd.DataFrame())
    if not status.empty and (status["status"] != "run").any():
        parts.append(("The authors' statistics bug: models it could not be measured on (C12)",
                      status[status["status"] != "run"]))
    if not selection.empty:
        parts.append(("The authors' statistics bug: H sets of corrected vs bug-compatible "
                      "statistics (C12)", selection))
    if not bug_maps.empty:
        maps = bug_maps.groupby(["model", "q"]).agg(
            images=("spearman", "size"), spearman_mean=("spearman", "mean"),
            spearman_min=("spearman", "min"), pearson_mean=("pearson", "mean")).reset_index()
        parts.append(("ParchGrad(Gradient) maps under corrected vs bug-compatible statistics",
                      maps))
    text = "# S1: channel statistics checks\n"
    for title, frame in parts:
        text += f"\n## {title}\n\n{plotting.markdown_table(frame)}"
    atomic_write_text(out / "s1_channel_statistics.md", text)
    write_table(shapiro, out / "s1_channel_statistics.csv")
    return [out / "s1_channel_statistics.md", out / "s1_channel_statistics.csv"]


def draw_dead_channels(sources: Sources, out: Path) -> list[Path]:
    dead = sources.tables["s1_dead_channels"]
    if dead.empty:
        return []
    return plotting.write_table(
        dead, out / "s1_dead_channels",
        "S1: channels dead on the whole statistics set (instance mode)",
        "The engine's instance z-test gives them 0/0 → p = 1 on the set's images, and the "
        "Shapiro filter (p = 1 for a constant channel) excludes them; dead_p_zero_fraction > 0 "
        "would mean an input woke them and they were ranked first.")
