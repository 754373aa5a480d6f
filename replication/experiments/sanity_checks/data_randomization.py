"""The data randomization test (Sanity Checks §6; Fig. 6, 22–25): maps of a model trained on the
true labels against maps of the same architecture trained on permuted labels, for the same test
images. Each model explains its own top class (the authors' pattern; option: the true label).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import Tensor

from replication.attribution import postprocess
from replication.experiments.common import Explainer, ImageSet
from replication.experiments.sanity_checks.model_randomization import (SimilaritySettings,
                                                                       visualisations)
from replication.experiments.sanity_checks.randomization import explained_classes
from replication.metrics.similarity import compare
from replication.models import ModelCard

log = logging.getLogger("replication")

NONZERO_METRIC = "spearman_abs_nonzero_pixels"


def spearman_on_nonzero_pixels(reference: Tensor, other: Tensor, inputs: Tensor,
                               percentile: float | None) -> np.ndarray:
    """Spearman ABS over the pixels where the input is not exactly zero (our C16 diagnostic:
    on MNIST, IG from a zero baseline and Gradient⊙Input are exactly zero on the background
    whatever the model, which alone pushes their ABS correlation towards 1)."""
    a = postprocess.grayscale(reference, percentile)[:, 0].flatten(1).numpy()
    b = postprocess.grayscale(other, percentile)[:, 0].flatten(1).numpy()
    mask = (inputs.abs().sum(1) > 0).flatten(1).numpy()
    values = []
    for row_a, row_b, keep in zip(a, b, mask):
        if keep.sum() < 3 or np.ptp(row_a[keep]) == 0 or np.ptp(row_b[keep]) == 0:
            values.append(np.nan)
        else:
            values.append(spearmanr(row_a[keep], row_b[keep]).statistic)
    return np.asarray(values, dtype=np.float64)


def run_data_randomization(true_model: ModelCard, random_model: ModelCard, images: ImageSet,
                           methods: dict[str, dict], similarity: SimilaritySettings, *,
                           explainer: Explainer, target: str = "predicted",
                           example: int | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Tidy similarity rows (method, metric, image, value) and the renderings of ``example``."""
    true_targets = explained_classes(true_model.model, images.images, target, images.labels)
    random_targets = explained_classes(random_model.model, images.images, target, images.labels)
    rows, arrays = [], {}
    for name, params in methods.items():
        true_maps = explainer(true_model, name, params, images.images, true_targets)
        random_maps = explainer(random_model, name, params, images.images, random_targets)
        values = compare(true_maps, random_maps, similarity.metrics, **similarity.options())
        values[NONZERO_METRIC] = spearman_on_nonzero_pixels(true_maps, random_maps, images.images,
                                                            similarity.percentile)
        rows += [{"method": name, "metric": metric, "image": i, "value": float(v)}
                 for metric, per_image in values.items() for i, v in enumerate(per_image)]
        if example is not None:
            for labels, maps in (("true", true_maps), ("random", random_maps)):
                for style, array in visualisations(maps[[example]], similarity.percentile).items():
                    arrays[f"{labels}/{name}/{style}"] = array
    if example is not None:
        arrays["images"] = images.images[[example]].permute(0, 2, 3, 1).numpy().astype(np.float16)
    table = pd.DataFrame(rows, columns=["method", "metric", "image", "value"])
    agreement = (true_targets == random_targets).float().mean().item()
    table.attrs["explained_class_agreement"] = agreement
    return table, arrays


def first_image_of_class(images: ImageSet, label: int) -> int:
    """Index of the first image with ``label`` (the paper's digit-0 example); the first image,
    with a warning, when a small subset (the smoke profile's) holds none of that class."""
    matches = torch.nonzero(images.labels == label)
    if len(matches) == 0:
        log.warning("no image of class %d among the %d evaluated test images: the example panel "
                    "shows the first image (class %d) instead", label, len(images),
                    int(images.labels[0]))
        return 0
    return int(matches[0])