"""E3: the project page's method comparison table with the engine's passes per map and the
measured seconds per map (``parchgrad_costs``; claim C10).

Each method is warmed up on one image (not the perturbation CAMs), then timed on the images
(seconds per map, batched as the engine batches): Score-CAM / Ablation-CAM once on fewer images
(one forward per channel of the CAM layer; not timed when ``perturbation_images`` is 0), the
others ``repeats`` times, the fastest reported (the least disturbed by a shared CPU). CRP is not
provided by the engine: its row has no measurement.

Claim C10b compares ParchGrad(Gradient) with Gradient on timings taken alternately
(``paired_timings``: the two methods back to back, ``paired_repeats`` times), so that a load
change on a shared CPU hits both; its value is the median of the per-repeat ratios.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import torch

from replication import plotting
from replication.attribution import ChannelStatistics, create_method
from replication.cost import Cost, method_passes
from replication.experiments.common import ImageSet, stage_device
from replication.experiments.parchgrad import loading
from replication.experiments.parchgrad.display import Sources, model_name
from replication.experiments.parchgrad.methods import (MethodOptions, base_params, counting_card,
                                                       hooked_convs, method_spec)
from replication.experiments.parchgrad.settings import Base, CostsSettings
from replication.fileio import atomic_directory, write_json, write_table
from replication.models.base import ModelCard

# The project page's comparison table (notes E3), verbatim, and the engine's name for each row.
PAPER_METHOD_TABLE: tuple[tuple[str, str, str, str, str, str, str | None], ...] = (
    ("ScoreCAM", "CAM", "X", "O", "O(C)", "O(C)", "scorecam"),
    ("AblationCAM", "CAM", "X", "O", "O(C)", "O(C)", "ablationcam"),
    ("LRP", "LRP", "O", "X", "O(1)", "O(1)", "lrp"),
    ("CRP", "LRP", "O", "O", "O(1)", "O(1)", None),
    ("Gradient", "Saliency", "O", "X", "O(1)", "O(1)", "gradient"),
    ("InputGrad", "Saliency", "O", "X", "O(1)", "O(1)", "input_x_gradient"),
    ("Integrated Gradient", "Saliency", "O", "X", "O(1)", "O(M)", "integrated_gradients"),
    ("SmoothGrad", "Saliency", "O", "X", "O(M)", "O(M)", "smoothgrad"),
    ("ParchGrad", "Saliency", "O", "O", "O(1)", "O(1)", "parchgrad"),
)
PERTURBATION_METHODS = ("scorecam", "ablationcam")
BASES = get_args(Base)


def _describe(params: Mapping) -> str:
    shown = {k: v for k, v in params.items() if k != "statistics"}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def engine_spec(engine: str, statistics: ChannelStatistics, convs: list[str],
                settings: CostsSettings, options: MethodOptions) -> tuple[str, dict]:
    """(engine name, params) of one row's method, as the experiments configure it."""
    if engine == "parchgrad":
        return method_spec("gradient", options, statistics, settings.channel_portion, convs)
    if engine in BASES:
        return engine, base_params(engine, settings, options.seed)
    return engine, {}


def time_method(card: ModelCard, name: str, params: dict, images: ImageSet,
                settings: CostsSettings, device: torch.device) -> dict:
    """Passes and seconds per map of one configured method."""
    method = create_method(name, card, **params)
    passes = method.passes()
    x, y = images.images.to(device), images.labels.to(device)
    perturbation = name in PERTURBATION_METHODS
    count = min(settings.perturbation_images, len(images)) if perturbation else len(images)
    repeats = 1 if perturbation else settings.repeats
    if count == 0:
        return {"forward_backward": passes.forward_backward, "forward": passes.forward,
                "images_timed": 0, "repeats": 0, "params": _describe(params),
                "note": "not timed in this profile (perturbation_images: 0)"}
    if not perturbation:
        method.attribute(x[:1], y[:1])  # warm-up: allocator, hooks, lazy imports
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        method.attribute(x[:count], y[:count])
        seconds.append((time.perf_counter() - started) / count)
    return {"forward_backward": passes.forward_backward, "forward": passes.forward,
            "images_timed": count, "repeats": repeats, "seconds_per_map": min(seconds),
            "seconds_per_map_median": float(np.median(seconds)), "params": _describe(params),
            "torch_threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0],
            "note": ""}


def method_costs(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                 settings: CostsSettings, options: MethodOptions,
                 device: torch.device) -> pd.DataFrame:
    """The comparison table for one model: the page's columns, the engine's passes per map and
    the measured seconds per map (module docstring)."""
    convs = hooked_convs(card, settings.hooks)
    rows = []
    for paper_name, category, all_layers, prune, propagation, samples, engine in PAPER_METHOD_TABLE:
        row = {"method": paper_name, "category": category, "all_layers": all_layers,
               "prune_channels": prune, "propagation": propagation, "sample_size": samples,
               "engine_method": engine or "", "provided": engine is not None, "model": card.name}
        if engine is None:
            rows.append({**row, "note": "not provided by the engine (CRP needs concept "
                                        "relevance propagation; not implemented)"})
            continue
        name, params = engine_spec(engine, statistics, convs, settings, options)
        rows.append({**row, **time_method(card, name, params, images, settings, device)})
    table = pd.DataFrame(rows)
    gradient = table.loc[table["engine_method"] == "gradient", "seconds_per_map"]
    table["relative_to_gradient"] = table["seconds_per_map"] / float(gradient.iloc[0])
    return table


def _seconds_per_map(method, x, y) -> float:
    started = time.perf_counter()
    method.attribute(x, y)
    return (time.perf_counter() - started) / len(x)


def paired_timings(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                   settings: CostsSettings, options: MethodOptions,
                   device: torch.device) -> pd.DataFrame:
    """Gradient and ParchGrad(Gradient) timed back to back ``paired_repeats`` times (after a
    warm-up of each): one row per repeat with both seconds per map (claim C10b)."""
    convs = hooked_convs(card, settings.hooks)
    methods = {}
    for engine in ("gradient", "parchgrad"):
        name, params = engine_spec(engine, statistics, convs, settings, options)
        methods[engine] = create_method(name, card, **params)
    x, y = images.images.to(device), images.labels.to(device)
    for method in methods.values():
        method.attribute(x[:1], y[:1])
    rows = []
    for repeat in range(settings.paired_repeats):
        seconds = {engine: _seconds_per_map(method, x, y) for engine, method in methods.items()}
        rows.append({"model": card.name, "repeat": repeat, "images": len(x),
                     "gradient_seconds": seconds["gradient"],
                     "parchgrad_seconds": seconds["parchgrad"],
                     "ratio": seconds["parchgrad"] / seconds["gradient"]})
    return pd.DataFrame(rows)


def model_costs(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                settings: CostsSettings, options: MethodOptions,
                device: torch.device) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (method_costs(card, images, statistics, settings, options, device),
            paired_timings(card, images, statistics, settings, options, device))


def cost(ctx) -> list[Cost]:
    """Per method: a one-image warm-up and ``repeats`` timings (the perturbation CAMs once on
    ``perturbation_images``); then the paired Gradient / ParchGrad timings."""
    settings = ctx.settings("parchgrad.costs")
    models = ctx.settings("parchgrad.models")
    costs = []
    for name, count in loading.models_to_explain(settings.images).items():
        card = counting_card(models[name].model)
        for engine in (row[-1] for row in PAPER_METHOD_TABLE if row[-1] is not None):
            base = "gradient" if engine == "parchgrad" else engine
            maps = (min(settings.perturbation_images, count) if engine in PERTURBATION_METHODS
                    else 1 + settings.repeats * count)
            counted = method_passes(card, base, base_params(base, settings, 0), maps)
            costs.append(Cost(card.name, f"E3: {engine}", counted.forward_backward,
                              counted.forward))
        pairs = 2 * (1 + settings.paired_repeats * count)
        costs.append(Cost(card.name, "C10b: paired timings", pairs, 0))
    return costs


def run(ctx) -> None:
    settings = ctx.settings("parchgrad.costs")
    tables, _ = loading.per_model(ctx, settings.images, model_costs, settings,
                                  MethodOptions.of(ctx), stage_device(ctx))
    with atomic_directory(ctx.output("out")) as out:
        write_table(pd.concat([t[0] for t in tables.values()], ignore_index=True),
                    out / "e3_costs.csv")
        write_table(pd.concat([t[1] for t in tables.values()], ignore_index=True),
                    out / "e3_paired_timings.csv")
    write_json(ctx.output("metrics"), loading.stage_metrics(ctx))


# --------------------------------------------------------------------------- figures

def draw_comparison(sources: Sources, out: Path) -> list[Path]:
    """The comparison table per model (the page's columns, passes, measured seconds)."""
    costs = sources.tables["e3_costs"]
    columns = ["method", "category", "all_layers", "prune_channels", "propagation",
               "sample_size", "engine_method", "forward_backward", "forward", "images_timed",
               "repeats", "seconds_per_map", "relative_to_gradient", "params", "note"]
    frames = []
    for model, group in costs.groupby("model", sort=False):
        frame = group.reindex(columns=columns).copy()
        frame.insert(0, "model", model_name(model))
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    load = costs["load_average_1min"].max() if "load_average_1min" in costs else float("nan")
    return plotting.write_table(
        table, out / "e3_method_comparison", f"E3: method comparison ({sources.profile} profile)",
        "Columns category … sample_size are the project page's table verbatim (O = yes, X = no; "
        "M = samples, C = channels). forward_backward / forward are the engine's passes per map; "
        "seconds per map were measured on this machine (1-minute load average up to "
        f"{float(load):.4g}; shared CPU, so compare ratios, not absolute times; the fastest of "
        "`repeats` timings). CRP is not provided by the engine. ParchGrad's one-time statistics "
        "pass is not in its per-map cost.")
