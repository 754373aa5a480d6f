"""The offline channel statistics of every ParchGrad model (``parchgrad_statistics``).

The fitting itself is the engine's (``ChannelStatistics.from_gaps``: class-wise t-tests in log
space, Shapiro–Wilk, instance-wise mode); this module chooses each model's statistics set,
reproduces the authors' ``h`` bug beside the corrected statistics (claim C12) and summarises
both for the metrics (Shapiro fractions for C11, float32 ties, dead channels).

Statistics sets: the 55,000 MNIST / Fashion-MNIST training images (class-wise); the 1000-image
ImageNet sample (one image per class: instance-wise); ILSVRC2012 validation (the authors',
class-wise; falls back to the sample when it was not supplied); ILSVRC2012 training images
(the correction: disjoint from the evaluated images; a prepared folder you supply).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

from replication.attribution import ChannelStatistics, LayerStatistics
from replication.attribution._significance import class_log_pvalues, float32_tied
from replication.attribution.channel_statistics import gather_gap, statistics_loader
from replication.cost import Cost
from replication.data import mnist
from replication.data.tensors import ImageNetImages, mnist_tensors
from replication.errors import ConfigError, DataError
from replication.experiments.common import stage_device
from replication.experiments.parchgrad.loading import dataset_folder, load_card, model_entry
from replication.fileio import atomic_directory, write_json
from replication.models.base import ModelCard

log = logging.getLogger("replication")

SHAPIRO_THRESHOLD = 0.05  # the authors' p_value_threshold: the summary's fractions use it
# statistics set -> (the dataset input it is computed on, test mode)
STATISTICS_DATA = {
    "mnist_train": ("mnist", "class"),
    "fashion_mnist_train": ("fashion_mnist", "class"),
    "imagenet_sample": ("imagenet_sample", "instance"),
    "ilsvrc2012_val": ("ilsvrc2012_val", "class"),
    "ilsvrc2012_train": ("ilsvrc2012_train", "class"),
}
FALLBACK_NOTE = ("ILSVRC2012 validation was not supplied: instance-wise statistics on the "
                 "1000-image sample instead of the authors' class-wise ones")
# Descriptions stored in ``meta["statistics_set"]``: what each set is and what it implies.
STATISTICS_SETS = {
    "mnist_train": "MNIST training images 5000–59999 (55,000; the first 5,000 are the "
                   "validation split and are excluded); class-wise test, ~5,500 per class",
    "fashion_mnist_train": "Fashion-MNIST training images 5000–59999 (55,000; the first 5,000 "
                           "are the validation split and are excluded); class-wise test",
    "imagenet_sample": "the 1000-image ImageNet sample (one image per class): the class test is "
                       "degenerate, so the instance-wise statistics (GAP mean/std) are used",
    "ilsvrc2012_val": "ILSVRC2012 validation, 50,000 images (50 per class), as the authors did; "
                      "LEAKAGE: the same images are later explained and evaluated",
    "ilsvrc2012_train": "ILSVRC2012 training images (corrected option: disjoint from the "
                        "evaluated validation images)",
}


# --------------------------------------------------------------------------- statistics sets

def mnist_statistics_set(folder: str | os.PathLike, validation_size: int) -> TensorDataset:
    """The 55,000 training images of a prepared MNIST / Fashion-MNIST folder, labels included.

    The first ``validation_size`` training images are the validation split and are excluded.
    """
    pixels, labels = mnist_tensors(folder, "train")
    train, _ = mnist.train_validation_split(len(labels), validation_size)
    return TensorDataset(pixels[train], labels[train])


def imagenet_statistics_set(folder: str | os.PathLike, card: ModelCard,
                            indices: list[int] | None = None) -> ImageNetImages:
    """A prepared ImageNet folder (sample or ILSVRC2012 val) through ``card``'s preprocessing."""
    if card.preprocessing.channels != 3:
        raise ConfigError(f"{card.name} is not an ImageNet model: its input has "
                          f"{card.preprocessing.channels} channel(s)")
    return ImageNetImages(folder, card.preprocessing.transform(), indices)


def statistics_data(ctx, name: str, card: ModelCard) -> tuple[Dataset, str, str, str, str]:
    """(dataset, statistics set key, mode, fallback note, subset note) of model ``name``, with
    the ILSVRC fallback and the profile's subset."""
    key = model_entry(ctx, name).statistics_set
    folder_name, mode = STATISTICS_DATA[key]
    folder, fallback = dataset_folder(ctx, folder_name), ""
    if key in ("mnist_train", "fashion_mnist_train"):
        data = mnist_statistics_set(folder, ctx.settings("data.validation_size"))
    else:
        if key == "ilsvrc2012_val" and not (folder / "labels.csv").is_file():
            folder, key, mode = ctx.input("imagenet_sample"), "imagenet_sample", "instance"
            fallback = FALLBACK_NOTE
            log.warning(fallback)
        elif not (folder / "labels.csv").is_file():
            raise DataError(f"{folder} is not a prepared ImageNet folder (images/ + labels.csv)"
                            + (": prepare ILSVRC2012 training images there yourself"
                               if key == "ilsvrc2012_train" else ""))
        data = imagenet_statistics_set(folder, card)
    data, subset = seeded_subset(data, (ctx.settings("parchgrad.statistics.subset") or {}).get(name),
                                 ctx.settings("seed"))
    return data, key, mode, fallback, subset


def seeded_subset(data: Dataset, size: int | None, seed: int) -> tuple[Dataset, str]:
    """``size`` images of ``data`` drawn with ``seed`` (kept in the set's order), and a note;
    all of them when ``size`` is None or not smaller. A draw, not the first images: the
    ImageNet sample is sorted by class."""
    total = len(data)
    if size is None or size >= total:
        return data, ""
    chosen = np.sort(np.random.default_rng(seed).permutation(total)[:size])
    if isinstance(data, TensorDataset):
        data = TensorDataset(*(t[torch.from_numpy(chosen)] for t in data.tensors))
    else:
        data = Subset(data, chosen.tolist())
    return data, f"{size} of the set's {total} images, drawn with seed {seed}"


# --------------------------------------------------------------------------- the authors' bug

def with_bug_flag(options: dict, reproduced: bool) -> dict:
    """The fit's options with whether they reproduce the authors' bug (listed third, as the
    metrics files always have)."""
    first = ("equal_var", "pvalue_precision")
    return {**{k: options[k] for k in first}, "authors_stats_bug": reproduced,
            **{k: v for k, v in options.items() if k not in first}}


def authors_bug_statistics(gaps: dict[str, Tensor], labels: Tensor, num_classes: int,
                           corrected: ChannelStatistics) -> ChannelStatistics:
    """The authors' ``h`` bug: every conv's class test is the *last* conv's (its first C_l
    channels); GAP mean/std and Shapiro stay per layer, as in their code (shared with
    ``corrected``, fitted from the same ``gaps``, whose last entry is the model's last conv)."""
    if corrected.mode != "class":
        raise ConfigError("the authors' statistics bug is a bug of the class-wise test; it has "
                          "no meaning in instance mode")
    last = list(gaps)[-1]
    too_wide = {n: layer.channels for n, layer in corrected.layers.items()
                if layer.channels > gaps[last].shape[1]}
    if too_wide:
        raise ConfigError(f"authors' bug: convs {too_wide} have more channels than the last conv "
                          f"{last} ({gaps[last].shape[1]}); the authors' code would have crashed "
                          "here, so there is nothing to reproduce")
    options = corrected.meta["options"]
    source = class_log_pvalues(gaps[last], labels, num_classes, options["equal_var"])
    layers = {}
    for name, layer in corrected.layers.items():
        log_p = source[:layer.channels].clone()
        layers[name] = LayerStatistics(
            log_p=float32_tied(log_p) if options["pvalue_precision"] == "float32" else log_p,
            gap_mean=layer.gap_mean, gap_std=layer.gap_std, shapiro_p=layer.shapiro_p)
    meta = {**corrected.meta, "options": with_bug_flag({**options, "shapiro": False}, True),
            "bug_source_layer": last, "shapiro_info": None}
    return ChannelStatistics("class", layers, meta)


def last_layer_copy(stats_: ChannelStatistics) -> dict[str, bool]:
    """Per layer: is its log p the first C_l rows of the last layer's (the authors' bug)?

    The check of claim C12 for any class statistics, the authors' shipped pickles included.
    """
    if stats_.mode != "class":
        raise ConfigError("last_layer_copy needs class-mode statistics")
    names = list(stats_.layers)
    last = stats_.layers[names[-1]].log_p
    result = {}
    for name in names:
        own = stats_.layers[name].log_p
        result[name] = bool(own.shape[0] <= last.shape[0] and own.shape[1] == last.shape[1]
                            and torch.equal(own, last[:own.shape[0]]))
    return result


# --------------------------------------------------------------------------- summaries

def float32_underflow(log_p: Tensor) -> Tensor:
    """Which p-values are exactly 0 once cast to float32 (the authors' ties)."""
    return torch.exp(log_p.to(torch.float64)).to(torch.float32) == 0


def _fraction(mask: Tensor) -> float:
    return float(mask.to(torch.float64).mean()) if mask.numel() else float("nan")


def layer_summary(name: str, layer: LayerStatistics, gaps: dict[str, Tensor] | None,
                  q: float) -> dict:
    """One conv's entry of ``statistics_summary``."""
    channels = layer.channels
    entry: dict = {"channels": channels}
    if layer.shapiro_p is not None:
        entry["shapiro_below_0.05"] = int((layer.shapiro_p < SHAPIRO_THRESHOLD).sum()) / channels
    if layer.log_p is not None:
        zeros = float32_underflow(layer.log_p)
        entry["float32_underflow"] = _fraction(zeros)
        entry["classes_tied_beyond_q"] = _fraction(zeros.sum(dim=0) > max(1, int(channels * q)))
        entry["log_p_min"] = float(layer.log_p.min())
        entry["log_p_median"] = float(layer.log_p.median())
    if layer.gap_std is not None:
        entry["zero_std_channels"] = _fraction(layer.gap_std == 0)
    if gaps is not None and name in gaps:
        entry["dead_channels"] = _fraction((gaps[name] == 0).all(dim=0))
    return entry


def statistics_summary(stats_: ChannelStatistics, gaps: dict[str, Tensor] | None = None,
                       q: float = 0.1) -> dict:
    """Per-conv numbers for the metrics file.

    ``shapiro_below_0.05`` is claim C11's fraction (channels the authors' filter keeps);
    ``float32_underflow`` the fraction of (channel, class) p-values that are exactly 0 in
    float32; ``classes_tied_beyond_q`` the fraction of classes whose float32 zeros alone exceed
    int(C·q) channels, so that q no longer bounds |H|; ``dead_channels`` (needs ``gaps``) the
    fraction of channels whose GAP is 0 on every image.
    """
    layers = {name: layer_summary(name, layer, gaps, q) for name, layer in stats_.layers.items()}
    filtered = [layer for layer in stats_.layers.values() if layer.shapiro_p is not None]
    below = sum(int((layer.shapiro_p < SHAPIRO_THRESHOLD).sum()) for layer in filtered)
    tested = sum(layer.channels for layer in filtered)
    summary: dict = {"mode": stats_.mode, "layers_count": len(layers),
                     "channels": sum(entry["channels"] for entry in layers.values()),
                     "q_for_ties": q, "layers": layers}
    if tested:
        summary["shapiro_below_0.05"] = {"count": below, "channels": tested,
                                         "fraction": below / tested}
    if stats_.mode == "class":
        zeros = sum(int(float32_underflow(l.log_p).sum()) for l in stats_.layers.values())
        pairs = sum(l.log_p.numel() for l in stats_.layers.values())
        summary["float32_underflow"] = {"count": zeros, "pairs": pairs, "fraction": zeros / pairs}
    for key in ("model", "statistics_set", "n_images", "options", "seconds", "shapiro_info"):
        if key in stats_.meta:
            summary[key] = stats_.meta[key]
    return summary


# --------------------------------------------------------------------------- the stage

def fit_model(ctx, name: str, out: Path) -> dict:
    """Fit, save (``out/<name>.pt``, ``<name>-authors-bug.pt``) and summarise one model."""
    settings = ctx.settings("parchgrad.statistics")
    started = time.perf_counter()
    card = load_card(ctx, name)
    data, key, mode, fallback, subset = statistics_data(ctx, name, card)
    gaps, labels = gather_gap(card.model, statistics_loader(data, settings.batch_size),
                              device=stage_device(ctx))
    gather_seconds = time.perf_counter() - started
    meta = {"model": card.name, "model_entry": name, "statistics_set": STATISTICS_SETS[key],
            "statistics_set_key": key, "layers_stored": "all convs",
            "seconds_gather": round(gather_seconds, 1), "fallback_note": fallback,
            "subset_note": subset}
    corrected = ChannelStatistics.from_gaps(
        gaps, labels, card.num_classes, mode, equal_var=settings.equal_var,
        pvalue_precision=settings.pvalue_precision, shapiro=settings.shapiro,
        shapiro_max_samples=settings.shapiro_max_samples, seed=ctx.settings("seed"), meta=meta)
    corrected.meta["options"] = with_bug_flag(corrected.meta["options"], False)
    corrected.save(out / f"{name}.pt")
    summary = statistics_summary(corrected, gaps, float(settings.q_for_ties))
    summary["statistics_set_key"] = key
    if settings.authors_bug and mode == "class":
        bug = authors_bug_statistics(gaps, labels, card.num_classes, corrected)
        bug.save(out / f"{name}-authors-bug.pt")
        summary["authors_bug"] = {"file": f"{name}-authors-bug.pt",
                                  "last_layer_copy": last_layer_copy(bug),
                                  "source_layer": bug.meta.get("bug_source_layer")}
    summary.update(seconds_total=round(time.perf_counter() - started, 1),
                   seconds_gather=round(gather_seconds, 1), fallback_note=fallback,
                   subset_note=subset)
    log.info("parchgrad statistics %s (%s, %s): %d images in %.0f s", name, key, mode,
             summary.get("n_images", len(labels)), summary["seconds_total"])
    return summary


def statistics_set_size(ctx, key: str) -> int:
    """Images in a statistics set (ILSVRC2012 training: the full set; the sample also stands
    for a missing ILSVRC2012 validation, which costs more)."""
    mnist = 60_000 - ctx.settings("data.validation_size")
    return {"mnist_train": mnist, "fashion_mnist_train": mnist, "imagenet_sample": 1_000,
            "ilsvrc2012_val": 50_000, "ilsvrc2012_train": 1_281_167}[key]


def cost(ctx) -> list[Cost]:
    """One forward per statistics image of each model (the GAP of every conv)."""
    models, settings = ctx.settings("parchgrad.models"), ctx.settings("parchgrad.statistics")
    costs = []
    for name in settings.models:
        key = models[name].statistics_set
        images = min(statistics_set_size(ctx, key), (settings.subset or {}).get(name) or 10**9)
        costs.append(Cost(models[name].model, f"GAP over {images:,} images ({key})", 0, images))
    return costs


def run(ctx) -> None:
    """Channel statistics of every model in ``parchgrad.statistics.models``: ``out/<model>.pt``
    (corrected), ``out/<model>-authors-bug.pt`` for class-wise sets when ``authors_bug`` is on
    (claim C12), and ``metrics/<model>.json`` (the summary)."""
    with atomic_directory(ctx.output("out")) as out, \
            atomic_directory(ctx.output("metrics")) as metrics:
        for name in ctx.settings("parchgrad.statistics.models"):
            write_json(metrics / f"{name}.json", fit_model(ctx, name, out))
