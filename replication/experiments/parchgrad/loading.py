"""What the ParchGrad stages load, once per stage (``ctx.cache``): model cards on the stage's
device, channel statistics, the images each experiment explains; and the metrics record every
experiment stage writes.

A stage's inputs are named in its declaration (``stages.py``): the prepared datasets by folder
(``mnist``, ``fashion_mnist``, ``imagenet_sample``, ``ilsvrc2012_val``), the train stage's
checkpoints (found by the file name ``parchgrad.models.<entry>.checkpoint`` gives), the statistics
folder (``statistics``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from replication.attribution import ChannelStatistics, Explainer
from replication.data import imagenet
from replication.errors import ConfigError, DataError
from replication.experiments.common import (ImageSet, imagenet_card, imagenet_set, mnist_set,
                                            stage_device, stage_explainer, trained_mnist_model)
from replication.experiments.parchgrad.settings import ModelEntry
from replication.fileio import read_table
from replication.models import ModelCard

# parchgrad.statistics_variant -> the statistics file's suffix
STATISTICS_VARIANTS = {"corrected": "", "authors_bug": "-authors-bug"}
LEAKAGE_NOTE = ("the explained images belong to the statistics set (the authors' ILSVRC2012 "
                "validation leakage; for Lite0 in the quick profile the 1000-image sample is "
                "both the statistics set and the evaluated images)")


def model_entry(ctx, name: str) -> ModelEntry:
    models = ctx.settings("parchgrad.models")
    if name not in models:
        raise ConfigError(f"parchgrad.models has no entry {name!r}; it has {sorted(models)}")
    return models[name]


def dataset_folder(ctx, name: str) -> Path:
    """A prepared dataset folder; ``ilsvrc2012_train`` is one you supply beside the validation
    folder (no stage makes it, so it is not a declared input)."""
    if name == "ilsvrc2012_train":
        return ctx.input("ilsvrc2012_val").parent / name
    return ctx.input(name)


def _checkpoint(ctx, file_name: str) -> Path:
    for path in ctx.inputs.values():
        if path.name == file_name:
            return path
    raise ConfigError(f"stage {ctx.stage.name} declares no input {file_name} (the checkpoint "
                      "params.yaml names): add it to the stage's deps")


def load_card(ctx, name: str) -> ModelCard:
    """The model of catalogue entry ``name`` in eval mode on the stage's device, loaded once per
    stage: the train stage's checkpoint where the entry names one, else the ImageNet model
    through ``imagenet_card`` (stand-in weights where ``stand_in_weights`` allows them)."""
    key = ("parchgrad_card", name)
    if key not in ctx.cache:
        entry = model_entry(ctx, name)
        if entry.checkpoint:
            card = trained_mnist_model(_checkpoint(ctx, entry.checkpoint), "cnn")
            card.model.eval().to(stage_device(ctx))
        else:
            card = imagenet_card(ctx, entry.model)
        ctx.cache[key] = card
    return ctx.cache[key]


def load_statistics(ctx, name: str, variant: str | None = None) -> ChannelStatistics:
    """The statistics of ``name``: ``variant`` is a file suffix ("" corrected, "-authors-bug");
    by default ``parchgrad.statistics_variant`` chooses (instance-wise sets have no
    bug-compatible file, so they stay corrected)."""
    folder = ctx.input("statistics")
    if variant is None:
        variant = STATISTICS_VARIANTS[ctx.settings("parchgrad.statistics_variant")]
        if variant and not (folder / f"{name}{variant}.pt").is_file():
            variant = ""
    key = ("parchgrad_statistics", name, variant)
    if key not in ctx.cache:
        ctx.cache[key] = ChannelStatistics.load(folder / f"{name}{variant}.pt")
    return ctx.cache[key]


def explained_images(ctx, name: str, count: int) -> ImageSet:
    """The images an experiment explains with model ``name`` (the first MNIST test images, or
    a seeded draw of ImageNet images); what they are goes into the stage's metrics."""
    entry = model_entry(ctx, name)
    seed = ctx.settings("seed")
    if entry.images in ("mnist", "fashion_mnist"):
        images = mnist_set(ctx.input(entry.images), count, "test")
        note = f"the first {count} {entry.images} test images"
    else:
        folder, fallback = imagenet.evaluation_folder(
            ctx.settings("imagenet.source"), ctx.input("imagenet_sample"),
            ctx.input("ilsvrc2012_val"))
        images = imagenet_set(folder, load_card(ctx, name), count, seed)
        note = f"{count} images of {folder.name} drawn with seed {seed}" + (
            f"; {fallback}" if fallback else "")
    meta = load_statistics(ctx, name).meta
    leakage = entry.images == "imagenet" and str(meta.get("statistics_set_key")) in (
        "imagenet_sample", "ilsvrc2012_val")
    ctx.cache.setdefault("parchgrad_notes", {})[name] = {
        "images": note, "leakage": LEAKAGE_NOTE if leakage else "",
        "statistics_set": meta.get("statistics_set", ""), "statistics_mode": meta.get("mode", "")}
    return images


def explainer(ctx) -> Explainer:
    return stage_explainer(ctx, ctx.settings("parchgrad.explainer").batch_size)


def models_to_explain(images: Mapping[str, int]) -> dict[str, int]:
    """The models of an ``images`` map with their counts; a count of 0 drops a model."""
    return {name: count for name, count in images.items() if count}


def per_model(ctx, images: Mapping[str, int], compute: Callable, *args
              ) -> tuple[dict[str, Any], dict[str, float]]:
    """``compute(card, images, statistics, *args)`` for each model an experiment explains (in
    the ``images`` map's order), and the seconds each took."""
    results, seconds = {}, {}
    for name, count in models_to_explain(images).items():
        started = time.perf_counter()
        results[name] = compute(load_card(ctx, name), explained_images(ctx, name, count),
                                load_statistics(ctx, name), *args)
        seconds[name] = round(time.perf_counter() - started, 1)
    return results, seconds


def stage_metrics(ctx, *, models: bool = True, **extra) -> dict:
    """The metrics record of an experiment stage: timing, threads, what each model explained."""
    record = {"stage": ctx.stage.name, "profile": ctx.settings("profile"), "seconds": ctx.seconds,
              "torch_threads": torch.get_num_threads()}
    if models:
        record["models"] = ctx.cache.get("parchgrad_notes", {})
    return {**record, **extra}


# --------------------------------------------------------------------------- tables

def read_results(folders: Iterable[Path]) -> dict[str, pd.DataFrame]:
    """Every table of the given result folders, keyed by file stem (absent folders: none)."""
    tables = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.csv")):
            tables[path.stem] = read_table(path)
    return tables


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing: run `dvc repro` to produce it")
    return json.loads(path.read_text())


def read_statistics_summaries(folder: str | os.PathLike) -> dict[str, dict]:
    """The statistics stage's summaries (``metrics/parchgrad/statistics/<model>.json``)."""
    return {path.stem: read_json(path) for path in sorted(Path(folder).glob("*.json"))}
