"""What every Expected Grad-CAM experiment loads: each model of ``run_models`` on the stage's
device, its evaluated images and its reference set D.

ImageNet models: ``data.imagenet.images`` images of the configured source (the sample or
ILSVRC2012 validation), a seeded choice; D = ``reference_images`` other images of the same
folder, disjoint from them (ILSVRC2012 *train* images, the notes' D, are not available offline:
our substitute). MNIST: the first test images; D = training images from ``reference_offset``
(after the validation split). The predicted class is explained everywhere.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from replication.data import imagenet
from replication.experiments.common import (ImageSet, imagenet_card, imagenet_set, mnist_set,
                                            predicted_classes, stage_device, trained_mnist_model)
from replication.models import ModelCard

log = logging.getLogger("replication")

MNIST_ARCHS = {"mnist_cnn": "cnn"}  # models trained by the train stage (the rest: the zoo's)


@dataclass
class Loaded:
    """One model of ``run_models`` with its evaluated images and its reference set D."""

    name: str
    card: ModelCard
    images: ImageSet
    references: ImageSet
    description: dict

    def first(self, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` evaluated images (null: all) and the classes the model predicts for
        them: what an experiment explains (image counts are prefixes, so results nest). A count
        of 0 gives none: the experiment skips the model."""
        x = self.images.images[:count(n, len(self.images))]
        if not len(x):
            return x, torch.zeros(0, dtype=torch.long)
        return x, predicted_classes(self.card.model, x)


def count(value: int | None, available: int) -> int:
    """An image count of the settings: ``None`` is all ``available``; larger counts are capped."""
    return available if value is None else min(value, available)


def run_models(ctx) -> Iterator[Loaded]:
    """Every model of ``expected_gradcam.run_models``, loaded in turn (``threads`` applied)."""
    threads = ctx.settings("expected_gradcam.threads")
    if threads is not None:  # one thread is much faster than two on an oversubscribed CPU
        torch.set_num_threads(threads)
    for name in ctx.settings("expected_gradcam.run_models"):
        yield load(ctx, name)


def load(ctx, name: str) -> Loaded:
    data = ctx.settings("expected_gradcam.data", model=name)
    seed = ctx.settings("seed")
    if name in MNIST_ARCHS:
        card = trained_mnist_model(ctx.input("mnist_checkpoint"), MNIST_ARCHS[name])
        options = data.mnist
        images = mnist_set(ctx.input("mnist"), options.images, "test")
        references = mnist_set(ctx.input("mnist"), options.reference_images, "train",
                               options.reference_offset)
        description = {"images": f"first {len(images)} MNIST test images",
                       "references": f"{len(references)} MNIST training images from index "
                                     f"{options.reference_offset} (after the validation split)",
                       "checkpoint": str(ctx.input("mnist_checkpoint"))}
    else:
        card = imagenet_card(ctx, name)
        folder, note = imagenet.evaluation_folder(ctx.settings("imagenet.source"),
                                                  ctx.input("imagenet_sample"),
                                                  ctx.input("ilsvrc2012"))
        images = imagenet_set(folder, card, data.imagenet.images, seed)
        references = imagenet_set(folder, card, data.imagenet.reference_images, seed + 1,
                                  exclude=images.names)
        description = {"images": f"{len(images)} images of {folder} (seed {seed})",
                       "references": f"{len(references)} other images of {folder}, disjoint "
                                     "from the evaluated ones (ILSVRC2012 train images are not "
                                     "available offline)",
                       "fallback_note": note}
    card.model.eval()
    device = stage_device(ctx)
    card.model.to(device)
    description["model"] = name
    return Loaded(name, card, on(images, device), on(references, device), description)


def on(images: ImageSet, device: torch.device) -> ImageSet:
    """The image set with its images on ``device`` (where the model is)."""
    return dataclasses.replace(images, images=images.images.to(device))


def reference_draws(n_images: int, pool: int, draws: int, seed: int) -> np.ndarray:
    """(n_images, draws) indices into D, seeded per image index (our choice)."""
    return np.stack([np.random.default_rng([seed, i]).integers(0, pool, draws)
                     for i in range(n_images)]) if n_images else np.zeros((0, draws), int)


def display_pixels(card: ModelCard, images: torch.Tensor) -> np.ndarray:
    """Images as uint8 (N, H, W, C) for panels (the model's normalisation undone)."""
    pixels = card.preprocessing.denormalize(images.cpu()).clamp(0, 1)
    return (pixels.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def seconds_since(ctx, start: float, experiment: str, loaded: Loaded) -> float:
    """Seconds one model took in a stage since ``start`` (``ctx.seconds`` then), logged."""
    seconds = round(ctx.seconds - start, 1)
    log.info("expected_gradcam %s: %s in %.1f s", experiment, loaded.name, seconds)
    return seconds
