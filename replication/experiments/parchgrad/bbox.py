"""E4: box energy of ParchGrad(Gradient) with and without variance conservation
(``parchgrad_bbox``; claims C5, C6).

``mu_in`` / ``mu_in_w`` (``boxes.box_energy``) at the authors' layer ratios and channel
portions, for the correct box pairing and the authors' mismatched one; the plain Gradient is
included (hooks "none"). Reads the boxes the ``ilsvrc2012_val`` stage prepared
(``datasets/ilsvrc2012_val/boxes.csv``, from ``ILSVRC2012_bbox_val_v3.tgz`` in ``data/``) and
explains ILSVRC2012 validation images; without them the stage writes a "not run" status and an
empty table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import Tensor

from replication import plotting
from replication.attribution import ChannelStatistics, Explainer
from replication.cost import Cost
from replication.data import imagenet
from replication.experiments.common import ImageSet
from replication.data import boxes as D
from replication.experiments.parchgrad import boxes as B
from replication.experiments.parchgrad import loading
from replication.experiments.parchgrad.display import Sources, model_name
from replication.experiments.parchgrad.methods import (MethodOptions, gradient_pixel_map,
                                                       hooked_convs, hooks_label, image_rows,
                                                       map_cost)
from replication.experiments.parchgrad.settings import BBoxSettings
from replication.fileio import atomic_directory, write_json, write_table
from replication.models.base import ModelCard

log = logging.getLogger("replication")

BBOX_COLUMNS = ["model", "image", "label", "hooks", "q", "vc", "pairing", "mu_in", "mu_in_w",
                "box_area_fraction"]


def box_masks(card: ModelCard, images: ImageSet, settings: BBoxSettings,
              annotations: Mapping[str, D.BoxAnnotation],
              all_rows: Sequence[Mapping]) -> dict[str, Tensor]:
    """Per pairing, the (N, H, W) box masks of the images in model-input coordinates."""
    size = card.preprocessing.input_size
    masks = {}
    for pairing in settings.pairings:
        paired = B.pair_boxes(images.names, all_rows, annotations, pairing)
        masks[pairing] = torch.stack([D.box_mask(D.crop_box(a, card.preprocessing), size)
                                      for a in paired])
    return masks


def bbox_energy(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                settings: BBoxSettings, options: MethodOptions, explainer: Explainer,
                annotations: Mapping[str, D.BoxAnnotation],
                all_rows: Sequence[Mapping]) -> pd.DataFrame:
    """``mu_in`` / ``mu_in_w`` per image of Gradient and of ParchGrad(Gradient) at each hooks
    setting, q and VC on/off, per pairing. ``images.names`` must be validation file names and
    ``all_rows`` the whole validation list (for the authors' pairing)."""
    masks, base = box_masks(card, images, settings, annotations, all_rows), image_rows(card, images)
    rows = []

    def add(pixel: Tensor, hooks: str, q: float, vc: bool | None) -> None:
        for pairing, mask in masks.items():
            mu_in, mu_in_w, area = B.box_energy(pixel, mask)
            rows.extend({**row, "hooks": hooks, "q": q, "vc": vc, "pairing": pairing,
                         "mu_in": mu_in[i], "mu_in_w": mu_in_w[i], "box_area_fraction": area[i]}
                        for i, row in enumerate(base))

    add(gradient_pixel_map(explainer, card, images, options), "none", float("nan"), None)
    for hooks in settings.hooks:
        convs = hooked_convs(card, hooks)
        for q in settings.channel_portions:
            for vc in (False, True):
                add(gradient_pixel_map(explainer, card, images, options, statistics, q, convs, vc),
                    hooks_label(hooks), float(q), vc)
    return pd.DataFrame(rows)


def cost(ctx) -> list[Cost]:
    """Gradient, and ParchGrad(Gradient) with and without VC per hooks setting and q (counted
    as if the boxes were there)."""
    settings = ctx.settings("parchgrad.bbox")
    maps = 1 + 2 * len(settings.hooks) * len(settings.channel_portions)
    return [map_cost(ctx, name, "gradient", maps, count, f"E4: {maps} maps per image")
            for name, count in loading.models_to_explain(settings.images).items()]


def not_run_reason(ctx, settings: BBoxSettings, validation: Path) -> str:
    if not loading.models_to_explain(settings.images):
        return "not run: this profile explains no model with bounding boxes"
    if not (validation / "labels.csv").is_file():
        return "not run: needs the ILSVRC2012 validation images (see data/README.md)"
    if not (validation / "boxes.csv").is_file():
        return (f"not run: needs {D.BOX_ARCHIVE} in data/ beside the ILSVRC2012 archives (not "
                "redistributable; the ilsvrc2012_val stage prepares its boxes)")
    if ctx.settings("imagenet.source") != "ilsvrc2012_val":
        return ("not run: the box energy explains ILSVRC2012 validation images, and "
                "imagenet.source is the sample")
    return ""


def run(ctx) -> None:
    """E4 box energy (C5, C6); "not run" without ILSVRC2012 validation and its boxes."""
    settings = ctx.settings("parchgrad.bbox")
    validation = ctx.input("ilsvrc2012_val")
    reason = not_run_reason(ctx, settings, validation)
    if reason:
        log.warning("parchgrad bbox: %s", reason)
        table = pd.DataFrame(columns=BBOX_COLUMNS)
    else:
        annotations = D.prepared_boxes(validation)
        all_rows = imagenet.read_labels(validation)
        tables, _ = loading.per_model(ctx, settings.images, bbox_energy, settings,
                                      MethodOptions.of(ctx), loading.explainer(ctx),
                                      annotations, all_rows)
        table = pd.concat(tables.values(), ignore_index=True)
    with atomic_directory(ctx.output("out")) as out:
        write_table(table, out / "e4_bbox.csv")
        write_table(pd.DataFrame({"status": ["not run" if reason else "run"], "reason": [reason]}),
                    out / "e4_bbox_status.csv")
    write_json(ctx.output("metrics"), loading.stage_metrics(
        ctx, models=not reason, status="not run" if reason else "run", reason=reason))


# --------------------------------------------------------------------------- figures

def draw_energy(sources: Sources, out: Path) -> list[Path]:
    """The mean box energy per model, hooks, q, pairing and VC (a "not run" table without
    boxes), and mu_in_w against the layer ratio."""
    table, profile = sources.tables["e4_bbox"], sources.profile
    if table.empty:
        status = sources.tables.get("e4_bbox_status", pd.DataFrame())
        reason = str(status["reason"].iloc[0]) if "reason" in status and len(status) else ""
        frame = pd.DataFrame({"status": ["not run"], "reason": [
            reason or "needs ILSVRC2012 validation images and ILSVRC2012_bbox_val_v3.tgz"]})
        return plotting.write_table(frame, out / "e4_bbox_energy",
                                    f"E4: box energy ({profile} profile)")
    means = table.groupby(["model", "hooks", "q", "pairing", "vc"], dropna=False, sort=False)[
        ["mu_in", "mu_in_w"]].mean().reset_index()
    written = plotting.write_table(means, out / "e4_bbox_energy",
                                   f"E4: box energy mu_in / mu_in_w ({profile} profile)",
                                   "pairing 'authors' reproduces their image/box index mismatch; "
                                   "'correct' pairs each image with its own first box.")
    plotting.use_style()
    models, pairings = list(dict.fromkeys(means["model"])), list(dict.fromkeys(means["pairing"]))
    fig, axes = plt.subplots(len(pairings), len(models),
                             figsize=(3 * len(models), 2.4 * len(pairings)), squeeze=False)
    for r, pairing in enumerate(pairings):
        for c, model in enumerate(models):
            ax = axes[r][c]
            own = means[(means["model"] == model) & (means["pairing"] == pairing)
                        & (means["hooks"] != "none")]
            for (q, vc), group in own.groupby(["q", "vc"]):
                ax.plot(group["hooks"], group["mu_in_w"], marker="o",
                        ls="-" if str(vc) == "True" else "--", label=f"q={q:g}, VC={vc}")
            ax.set_title(f"{model_name(model)} — {pairing} boxes")
            ax.set_ylabel("mu_in_w")
            ax.legend(fontsize=5)
    written += plotting.save_figure(fig, out / "e4_bbox_energy")
    return written
