"""The Expected Grad-CAM DVC stages: load models and data, call the compute functions, write
tidy tables (results/expected_gradcam/*.csv) and summaries (metrics/expected_gradcam/*.json).

Each ``run_<stage>(params, *, data, results, metrics)`` takes the effective parameters (the
profile already merged) and reads ``params["expected_gradcam"]``; smoke, quick and paper differ
only in that section. Every file is written atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from replication.data import imagenet
from replication.errors import ConfigError
from replication.experiments.common import (Explainer, ImageSet, imagenet_set, mnist_set,
                                            trained_mnist_model, write_csv)
from replication.experiments.expected_gradcam import experiments as ex
from replication.fileio import json_safe, write_json, write_npz
from replication.models import ModelCard, create_model

log = logging.getLogger("replication")

MNIST_MODELS = {"mnist_cnn": "cnn"}

# Output files of each stage (names inside results/ and metrics/).
OUTPUTS = {
    "comparison": ["comparison_scores.csv", "comparison_summary.csv", "panels.npz"],
    "saturation": ["saturation_curves.csv", "saturation_alpha_star.csv", "saturation_topk.csv"],
    "smoothing": ["sigma_sweep.csv", "sample_stability.csv", "sigma_panels.npz"],
    "baselines": ["baseline_sensitivity.csv"],
    "special_cases": ["special_cases.csv"],
}


@dataclass(frozen=True)
class DataPaths:
    """Prepared data the stages read (DVC outputs of the data and train stages)."""

    imagenet_sample: Path = Path("datasets/imagenet_sample")
    ilsvrc2012: Path = Path("datasets/ilsvrc2012_val")
    mnist: Path = Path("datasets/mnist")
    mnist_checkpoint: Path = Path("models/mnist-cnn-true.pt")


@dataclass
class ModelData:
    """One model with its evaluated images, its reference set D and its parameter section."""

    card: ModelCard
    images: ImageSet
    references: ImageSet
    params: dict
    description: dict


def section(params: dict) -> dict:
    if "expected_gradcam" not in params:
        raise ConfigError("params.yaml has no 'expected_gradcam' section")
    return params["expected_gradcam"]


def load_model_data(name: str, params: dict, data: DataPaths) -> ModelData:
    """Model ``name``, its images and reference set D, from the merged parameter section.

    ImageNet models: ``data.imagenet.images`` images of the configured source (sample or
    ILSVRC2012 validation), a seeded choice; D = ``reference_images`` other images of the same
    folder, disjoint from them (ILSVRC2012 *train* images, the notes' D, are not available
    offline: our substitute). MNIST: the first test images; D = training images from
    ``reference_offset`` (after the 5,000-image validation split).
    """
    own = ex.model_section(section(params), name)
    seed = int(own.get("seed", params.get("seed", 0)))
    own["seed"] = seed
    if name in MNIST_MODELS:
        options = (own.get("data") or {}).get("mnist") or {}
        card = trained_mnist_model(data.mnist_checkpoint, MNIST_MODELS[name])
        images = mnist_set(data.mnist, int(options.get("images", 100)), "test")
        offset = int(options.get("reference_offset", 5000))
        references = mnist_set(data.mnist, int(options.get("reference_images", 1000)), "train",
                               offset)
        description = {"images": f"first {len(images)} MNIST test images",
                       "references": f"{len(references)} MNIST training images from index "
                                     f"{offset} (after the validation split)",
                       "checkpoint": str(data.mnist_checkpoint)}
    else:
        options = (own.get("data") or {}).get("imagenet") or {}
        card = create_model(name)
        source = (params.get("imagenet") or {}).get("source", "sample")
        folder, note = imagenet.evaluation_folder(source, data.imagenet_sample, data.ilsvrc2012)
        images = imagenet_set(folder, card, options.get("images", 100), seed)
        references = imagenet_set(folder, card, options.get("reference_images", 100), seed + 1,
                                  exclude=images.names)
        description = {"images": f"{len(images)} images of {folder} (seed {seed})",
                       "references": f"{len(references)} other images of {folder}, disjoint "
                                     "from the evaluated ones (ILSVRC2012 train images are not "
                                     "available offline)",
                       "fallback_note": note}
    card.model.eval()
    description["model"] = name
    return ModelData(card, images, references, own, description)


def configure_threads(params: dict) -> None:
    """``expected_gradcam.threads`` (null: torch's default). One thread per process is much
    faster than two on an oversubscribed CPU, where OpenMP threads wait on each other."""
    threads = section(params).get("threads")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"expected_gradcam.threads must be a positive integer or null, "
                              f"got {threads!r}")
        torch.set_num_threads(threads)


def models(params: dict, data: DataPaths) -> Iterator[ModelData]:
    configure_threads(params)
    names = section(params).get("models") or []
    if not names:
        raise ConfigError("expected_gradcam.models is empty: name at least one model")
    for name in names:
        yield load_model_data(name, params, data)


def explainer(params: dict) -> Explainer:
    own = section(params)
    return Explainer(accelerator=own.get("accelerator", "cpu"), devices=own.get("devices", 1),
                     batch_size=int(own.get("batch_size", 16)))


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()



def display_pixels(card: ModelCard, images: torch.Tensor) -> np.ndarray:
    """Images as uint8 (N, H, W, C) for panels (the model's normalisation undone)."""
    pixels = card.preprocessing.denormalize(images).clamp(0, 1)
    return (pixels.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def _timed(label: str, model: str, start: float) -> float:
    seconds = round(time.perf_counter() - start, 1)
    log.info("expected_gradcam %s: %s in %.1f s", label, model, seconds)
    return seconds


# --------------------------------------------------------------------------------- stages

def run_comparison(params: dict, *, data: DataPaths, results: Path, metrics: Path) -> dict:
    """Exp. 1 and the qualitative panels: per-image scores, their summary, panel maps."""
    explain, scores, panels, summary = explainer(params), [], {}, {"models": {}}
    for md in models(params, data):
        start = time.perf_counter()
        result = ex.compare_methods(md.card, md.images, md.references, md.params, explain)
        scores.append(result.scores)
        n_panel = next(iter(result.panels.values())).shape[0] if result.panels else 0
        methods = list(result.panels)
        panels[f"{md.card.name}/images"] = display_pixels(md.card, md.images.images[:n_panel])
        panels[f"{md.card.name}/names"] = np.array(md.images.names[:n_panel])
        panels[f"{md.card.name}/targets"] = result.targets[:n_panel]
        panels[f"{md.card.name}/methods"] = np.array(methods)
        panels[f"{md.card.name}/maps"] = (np.stack([result.panels[m] for m in methods])
                                          if methods else np.zeros((0, 0, 0, 0), np.float32))
        summary["models"][md.card.name] = {
            **md.description, "seconds": _timed("comparison", md.card.name, start),
            "images_per_method_metric": result.scores.groupby(["method", "metric"]).size()
            .unstack(fill_value=0).to_dict(orient="index")}
    table = _concat(scores)
    own = section(params)
    directions = {}
    for name in own.get("models") or []:
        directions.update(ex.metric_directions(ex.model_section(own, name)["comparison"]
                                               .get("metrics") or {}))
    boot = own.get("bootstrap") or {}
    summary_table = ex.summarize_comparison(
        table, directions, n_resamples=int(boot.get("n_resamples", 10_000)),
        confidence=float(boot.get("confidence", 0.95)), alpha=float(boot.get("alpha", 0.05)),
        seed=int(params.get("seed", 0))) if len(table) else pd.DataFrame()
    write_csv(table, results / "comparison_scores.csv")
    write_csv(summary_table, results / "comparison_summary.csv")
    write_npz(results / "panels.npz", panels)
    summary["means"] = {
        f"{r.model}/{r.method}/{r.metric}": r.mean for r in summary_table.itertuples()
    } if len(summary_table) else {}
    write_json(metrics / "comparison.json", json_safe(summary))
    return summary


def run_saturation(params: dict, *, data: DataPaths, results: Path, metrics: Path) -> dict:
    """Exp. 2: s(α) curves, α* per image, top-k channel scores."""
    curves, stars, topk, summary = [], [], [], {"models": {}}
    for md in models(params, data):
        start = time.perf_counter()
        result = ex.internal_saturation(md.card, md.images, md.references, md.params)
        curves.append(result.curves)
        stars.append(result.alpha_star)
        topk.append(result.topk)
        black = result.alpha_star[result.alpha_star["baseline"] == "black"]["alpha_star"]
        summary["models"][md.card.name] = {
            **md.description, "seconds": _timed("saturation", md.card.name, start),
            "n_images": int(black.size), "median_alpha_star_black": float(black.median()),
            "median_alpha_star_by_baseline": result.alpha_star.groupby("baseline")["alpha_star"]
            .median().to_dict()}
    write_csv(_concat(curves), results / "saturation_curves.csv")
    write_csv(_concat(stars), results / "saturation_alpha_star.csv")
    write_csv(_concat(topk), results / "saturation_topk.csv")
    write_json(metrics / "saturation.json", json_safe(summary))
    return summary


def run_smoothing(params: dict, *, data: DataPaths, results: Path, metrics: Path) -> dict:
    """Exp. 3: σ sweep (with the maps of the first images) and M vs stability."""
    explain, sweeps, stability, panels, summary = explainer(params), [], [], {}, {"models": {}}
    for md in models(params, data):
        start = time.perf_counter()
        result = ex.smoothing(md.card, md.images, md.references, md.params, explain)
        sweeps.append(result.sigma)
        stability.append(result.stability)
        n_panel = result.sigma_maps.shape[2]
        panels[f"{md.card.name}/images"] = display_pixels(md.card, md.images.images[:n_panel])
        panels[f"{md.card.name}/names"] = np.array(md.images.names[:n_panel])
        panels[f"{md.card.name}/sigmas"] = np.array(result.sigmas)
        panels[f"{md.card.name}/methods"] = np.array(result.methods)
        panels[f"{md.card.name}/maps"] = result.sigma_maps  # (methods, sigmas, images, h, w)
        summary["models"][md.card.name] = {
            **md.description, "seconds": _timed("smoothing", md.card.name, start),
            "mean_by_sigma": {f"{e}/{m}/{s:g}": v for (e, m, s), v in
                              result.sigma.groupby(["method", "metric", "sigma"])["value"]
                              .mean().items()},
            "stability_by_samples": {f"{e}/{m}/{k}": v for (e, m, k), v in
                                     result.stability.groupby(["method", "metric", "n_samples"])
                                     ["value"].mean().items()}}
    write_csv(_concat(sweeps), results / "sigma_sweep.csv")
    write_csv(_concat(stability), results / "sample_stability.csv")
    write_npz(results / "sigma_panels.npz", panels)
    write_json(metrics / "smoothing.json", json_safe(summary))
    return summary


def run_baselines(params: dict, *, data: DataPaths, results: Path, metrics: Path) -> dict:
    """Exp. 4: pairwise Spearman between the maps of baseline / reference-pool choices."""
    explain, pairs, summary = explainer(params), [], {"models": {}}
    for md in models(params, data):
        start = time.perf_counter()
        table = ex.baseline_sensitivity(md.card, md.images, md.references, md.params, explain)
        pairs.append(table)
        summary["models"][md.card.name] = {
            **md.description, "seconds": _timed("baselines", md.card.name, start),
            "mean_pairwise_spearman": ex.mean_pairwise(table).groupby("method")["mean_spearman"]
            .mean().to_dict()}
    write_csv(_concat(pairs), results / "baseline_sensitivity.csv")
    write_json(metrics / "baselines.json", json_safe(summary))
    return summary


def run_special_cases(params: dict, *, data: DataPaths, results: Path, metrics: Path) -> dict:
    """The reductions of notes §1.5 on real images (claim C9) and the completeness gaps."""
    tables, summary = [], {"models": {}}
    for md in models(params, data):
        start = time.perf_counter()
        table = ex.special_cases(md.card, md.images, md.references, md.params)
        tables.append(table)
        summary["models"][md.card.name] = {
            **md.description, "seconds": _timed("special_cases", md.card.name, start),
            "max_relative": table.groupby("case")["relative"].max().to_dict()}
    write_csv(_concat(tables), results / "special_cases.csv")
    write_json(metrics / "special_cases.json", json_safe(summary))
    return summary


def run_figures(params: dict, *, results: Path, out: Path) -> list[Path]:
    """Every figure and table of figures/expected_gradcam/, from the tables only."""
    from replication.experiments.expected_gradcam.figures import make_figures

    return make_figures(results, out, profile=str(params.get("profile", "")))


def run_claims(params: dict, *, results: Path, out: Path) -> dict:
    """metrics/expected_gradcam/claims.json: the values of claims C1–C9 from the tables."""
    from replication.experiments.expected_gradcam.summary import claim_values_from_folder

    values = claim_values_from_folder(results, section(params))
    write_json(out, json_safe(values))
    return values



__all__ = ["DataPaths", "OUTPUTS", "load_model_data", "run_baselines", "run_claims",
           "run_comparison", "run_figures", "run_saturation", "run_smoothing",
           "run_special_cases"]


STAGES: list = []  # TEMPORARY during the migration
