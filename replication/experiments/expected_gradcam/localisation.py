"""Claim C7 ("more … localized"): how much of each map's energy falls inside the image's
ILSVRC2012 validation bounding boxes; its table.

The metric is our choice [I] (the paper's is unknown): the energy-based pointing game of
Score-CAM (Wang et al. 2020, §4.2), the map upsampled to the input (bilinear) and clipped at 0,
summed inside the union of the image's boxes (each mapped into the model's centre crop,
``replication.data.boxes.crop_box``) over its sum over the image; NaN for an all-zero map. The
pointing game's hit (Zhang et al. 2018: the map's maximum lies in a box; without its 15-pixel
tolerance) is recorded beside it. The class explained is the ground-truth one, the boxes'
class, where the other experiments explain the predicted one [I].

Boxes exist only for ILSVRC2012 validation images: with ``imagenet.source: sample``, without
the archives (the fallback to the sample) or without the box archive, the stage writes an empty
table and the reason, and C7 is not run with that reason. MNIST models have no boxes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from replication.attribution import Explainer
from replication.data import imagenet
from replication.data.boxes import box_mask, crop_box, prepared_boxes
from replication.errors import DataError
from replication.experiments.common import stage_explainer
from replication.experiments.expected_gradcam.drawing import Table, View
from replication.experiments.expected_gradcam.loading import (MNIST_ARCHS, Loaded, count, load,
                                                              seconds_since)
from replication.experiments.expected_gradcam.methods import (build_method, configured_methods,
                                                              upsampled)
from replication.experiments.expected_gradcam.settings import Localisation
from replication.fileio import concat_tables, json_safe, write_json, write_table
from replication.models.base import Preprocessing

COLUMNS = ["model", "method", "image", "metric", "value"]
ENERGY, HIT = "energy_in_box", "pointing_hit"


def box_folder(ctx) -> tuple[Path | None, str]:
    """The prepared ILSVRC2012 folder whose boxes the stage scores, or None and why not."""
    source = ctx.settings("imagenet.source")
    if source != "ilsvrc2012_val":
        return None, (f"imagenet.source is {source!r}: bounding boxes exist only for ILSVRC2012 "
                      "validation images (imagenet.source: ilsvrc2012_val, with the archives "
                      "and ILSVRC2012_bbox_val_v3.tgz in data/)")
    folder, note = imagenet.evaluation_folder(source, ctx.input("imagenet_sample"),
                                              ctx.input("ilsvrc2012"))
    if note:
        return None, note + "; the sample has no bounding boxes"
    try:
        prepared_boxes(folder)
    except DataError as error:
        return None, str(error)
    return folder, ""


def box_masks(names: list[str], folder: Path, preprocessing: Preprocessing) -> Tensor:
    """(N, H, W) bool: the union of each image's boxes in the model's input crop."""
    annotations = prepared_boxes(folder)
    size = preprocessing.input_size
    masks = []
    for name in names:
        stem = Path(name).stem
        if stem not in annotations:
            raise DataError(f"{folder}/boxes.csv has no box for {name}: prepare the boxes of "
                            "every validation image (the ilsvrc2012_val stage)")
        annotation = annotations[stem]
        union = torch.zeros(size, size, dtype=torch.bool)
        for box in annotation.boxes:
            union |= box_mask(crop_box(annotation, preprocessing, box), size)
        masks.append(union)
    return torch.stack(masks) if masks else torch.zeros(0, size, size, dtype=torch.bool)


def energy_and_hits(maps: Tensor, masks: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the share of the clipped map's sum inside the mask (NaN for an all-zero
    map), and whether the map's maximum lies inside it."""
    positive = maps.double().clamp_min(0).flatten(1)
    inside = masks.flatten(1).to(positive.device)
    total = positive.sum(1)
    energy = torch.where(total > 0, (positive * inside).sum(1) / total.clamp_min(1e-300),
                         torch.full_like(total, float("nan")))
    hits = inside.gather(1, positive.argmax(1, keepdim=True))[:, 0]
    return energy.cpu().numpy(), hits.cpu().numpy().astype(np.float64)


def localisation(loaded: Loaded, settings: Localisation, methods: Mapping[str, Any],
                 explainer: Explainer, masks: Tensor) -> pd.DataFrame:
    """Each method of ``settings.methods`` on the first ``images`` images, for their
    ground-truth classes: energy in the boxes and the pointing hit."""
    n = count(settings.images, len(loaded.images))
    x, labels = loaded.images.images[:n], loaded.images.labels[:n]
    rows = []
    for method in settings.methods:
        attribution = build_method(loaded.card, method, methods[method], loaded.references.images)
        maps = upsampled(explainer.raw(attribution, x, labels), x)
        energy, hits = energy_and_hits(maps, masks[:n])
        for metric, values in ((ENERGY, energy), (HIT, hits)):
            rows += [{"model": loaded.card.name, "method": method,
                      "image": loaded.images.names[i], "metric": metric, "value": float(v)}
                     for i, v in enumerate(values)]
    return pd.DataFrame(rows, columns=COLUMNS)


def run(ctx) -> None:
    """The egc_localisation stage: the table, or an empty one and the reason it is empty."""
    folder, reason = box_folder(ctx)
    tables, summary = [], {"models": {}}
    if folder is None:
        summary["reason"] = reason
    else:
        explainer = stage_explainer(ctx, ctx.settings("expected_gradcam.batch_size"))
        for name in ctx.settings("expected_gradcam.run_models"):
            if name in MNIST_ARCHS:
                summary["models"][name] = {"reason": "MNIST has no bounding boxes"}
                continue
            start, loaded = ctx.seconds, load(ctx, name)
            settings = ctx.settings("expected_gradcam.localisation", model=name)
            masks = box_masks(loaded.images.names[:count(settings.images, len(loaded.images))],
                              folder, loaded.card.preprocessing)
            table = localisation(loaded, settings, configured_methods(ctx, name), explainer,
                                 masks)
            tables.append(table)
            summary["models"][name] = {
                **loaded.description, "seconds": seconds_since(ctx, start, "localisation", loaded),
                "mean": table.groupby(["method", "metric"])["value"].mean()
                .unstack().to_dict(orient="index")}
    write_table(concat_tables(tables) if tables else pd.DataFrame(columns=COLUMNS),
                ctx.output("localisation"))
    write_json(ctx.output("metrics"), json_safe(summary))


def localisation_table(table: pd.DataFrame, view: View) -> Table:
    frame = (table.groupby(["model", "metric", "method"], sort=False)["value"]
             .agg(["size", "mean", "std"]).rename(columns={"size": "n"}).reset_index())
    frame["method"] = frame["method"].map(view.label)
    return Table(frame, "Localisation: energy in the ILSVRC2012 boxes and pointing hits")
