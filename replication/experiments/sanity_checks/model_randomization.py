"""Model-parameter randomization: maps of a model whose blocks are re-initialised, compared with
the original model's maps (Sanity Checks §4; Fig. 2–5, 8–18, 20, 21, 26–35).

Every stage's maps explain the class the authors' code explains: the argmax of the *current*
model (option: the true label). Maps are compared with the original model's maps of the same
images by the similarity metrics; one tidy row per (stage, method, metric, image).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from torch import Tensor

from replication.attribution import postprocess
from replication.experiments.common import Explainer, ImageSet
from replication.experiments.sanity_checks.randomization import (RandomizationOptions, Stage,
                                                                 cascading, explained_classes,
                                                                 independent)
from replication.metrics.similarity import compare
from replication.models import ModelCard

# The paper's methods in its figures' row order, with the labels its figures use.
METHOD_LABELS = {
    "gradient": "Gradient", "smoothgrad": "Gradient-SG", "input_x_gradient": "Gradient⊙Input",
    "guided_backprop": "Guided Backprop", "gradcam": "GradCAM", "guided_gradcam": "Guided GradCAM",
    "integrated_gradients": "Integrated Gradients", "ig_smoothgrad": "IG-SmoothGrad",
}
MODES = ("cascading", "independent")


@dataclasses.dataclass(frozen=True)
class SimilaritySettings:
    """Which similarity metrics, and the map convention: 3-D maps (ImageNet) use the papers'
    99th-percentile visualisations; 2-D maps (MNIST) use |E|/max|E| (``percentile=None``)."""

    metrics: tuple[str, ...]
    percentile: float | None = 99.0
    ssim_data_range: float = 2.0
    hog_correlation: str = "spearman"
    convention: str = "authors_code"  # a name for the rows, when several are compared

    def options(self) -> dict:
        return {"percentile": self.percentile, "data_range": self.ssim_data_range,
                "correlation": self.hog_correlation}


def visualisations(maps: Tensor, percentile: float | None) -> dict[str, np.ndarray]:
    """The two map renderings of the paper's figures, (N, H, W) float16."""
    return {"grayscale": postprocess.grayscale(maps, percentile)[:, 0].numpy().astype(np.float16),
            "diverging": postprocess.diverging(maps, percentile)[:, 0].numpy().astype(np.float16)}


def _rows(values: dict[str, np.ndarray], **fields) -> list[dict]:
    return [{**fields, "metric": metric, "image": image, "value": float(value)}
            for metric, per_image in values.items() for image, value in enumerate(per_image)]


def explain_all(explainer: Explainer, card: ModelCard, images: ImageSet, targets: Tensor,
                methods: dict[str, dict]) -> dict[str, Tensor]:
    return {name: explainer(card, name, params, images.images, targets)
            for name, params in methods.items()}


def run_randomization(card: ModelCard, images: ImageSet, methods: dict[str, dict], mode: str,
                      options: RandomizationOptions,
                      similarity: SimilaritySettings | Sequence[SimilaritySettings], *,
                      explainer: Explainer, target: str = "predicted",
                      gallery: Sequence[int] = (), gallery_methods: Iterable[str] | None = None,
                      ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Similarity of every stage's maps to the original maps, and the gallery renderings.

    ``similarity`` may list several conventions (each row names its ``convention``); the
    galleries use the first. ``gallery`` are indices into ``images`` whose maps are kept (for
    the paper's galleries), for ``gallery_methods`` (default: all). Returns the tidy table and a
    dict of arrays keyed ``"<stage index>/<method>/<grayscale|diverging>"`` plus ``"images"``.
    """
    conventions = [similarity] if isinstance(similarity, SimilaritySettings) else list(similarity)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    gallery = list(gallery)
    kept = set(methods if gallery_methods is None else gallery_methods)
    original_targets = explained_classes(card.model, images.images, target, images.labels)
    reference = explain_all(explainer, card, images, original_targets, methods)
    arrays: dict[str, np.ndarray] = {}
    rows: list[dict] = []

    def record(stage_index: int, stage_label: str, maps: dict[str, Tensor], targets: Tensor) -> None:
        changed = (targets != original_targets).numpy()
        for name, stage_maps in maps.items():
            for settings in conventions:
                values = compare(reference[name], stage_maps, settings.metrics, **settings.options())
                rows.extend(_rows(values, mode=mode, stage_index=stage_index, stage=stage_label,
                                  method=name, convention=settings.convention))
            if gallery and name in kept:
                percentile = conventions[0].percentile
                for style, array in visualisations(stage_maps[gallery], percentile).items():
                    arrays[f"{stage_index}/{name}/{style}"] = array
        rows.extend({"mode": mode, "stage_index": stage_index, "stage": stage_label,
                     "method": "", "convention": "", "metric": "explained_class_changed",
                     "image": i, "value": float(c)} for i, c in enumerate(changed))

    stages: Iterable[Stage] = (cascading if mode == "cascading" else independent)(card, options)
    if mode == "independent":  # the original is the reference of every independent stage
        record(0, "Original", reference, original_targets)
    for stage in stages:
        if stage.label == "Original":
            record(stage.index, stage.label, reference, original_targets)
            continue
        stage_card = dataclasses.replace(card, model=stage.model)
        targets = explained_classes(stage.model, images.images, target, images.labels)
        index = stage.index if mode == "cascading" else stage.index + 1
        record(index, stage.label, explain_all(explainer, stage_card, images, targets, methods),
               targets)
    if gallery:
        pixels = card.preprocessing.denormalize(images.images[gallery]).clamp(0, 1)
        arrays["images"] = pixels.permute(0, 2, 3, 1).numpy().astype(np.float16)
    table = pd.DataFrame(rows, columns=["mode", "stage_index", "stage", "method", "convention",
                                        "metric", "image", "value"])
    table.insert(0, "model", card.name)
    return table, arrays


def summarize_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and population SD over images (ddof 0, the authors' np.std), NaNs counted."""
    keys = [k for k in ("model", "mode", "stage_index", "stage", "method", "convention", "metric")
            if k in table.columns]
    grouped = table.groupby(keys, sort=False, dropna=False)["value"]
    summary = grouped.agg(mean="mean", sd=lambda v: float(np.nanstd(v.to_numpy())),
                          n=lambda v: int(v.notna().sum()), n_nan=lambda v: int(v.isna().sum()))
    return summary.reset_index()


def stage_order(table: pd.DataFrame) -> list[str]:
    return list(table.sort_values("stage_index").drop_duplicates("stage_index")["stage"])

