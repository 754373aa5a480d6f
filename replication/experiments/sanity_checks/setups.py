"""The models and images the Sanity Checks experiments explain, from a stage's settings.

Setups: ``imagenet`` (the profile's ImageNet model on its image set) and the four MNIST /
Fashion-MNIST models ``<cnn|mlp>-<mnist|fashion_mnist>`` trained by the train stage.
"""

from __future__ import annotations

import numpy as np

from replication.data import imagenet
from replication.errors import ConfigError
from replication.experiments.common import ImageSet, imagenet_set
from replication.models import ModelCard

CAM_METHODS = ("gradcam", "guided_gradcam")  # an MLP has no convolution to take a CAM of


def imagenet_images(ctx, card: ModelCard, count: int | None) -> ImageSet:
    """The profile's ImageNet image set: the source's gallery images first, then a seeded
    choice: of ``per_class`` images of each of ``classes`` on ILSVRC2012 validation (the
    authors' 10 × 20 design), of any images on the one-per-class sample. ``count`` images
    (None: all); the stage's inputs ``sample`` and ``ilsvrc2012`` are the two folders."""
    seed = ctx.settings("seed")
    folder, note = imagenet.evaluation_folder(ctx.settings("imagenet.source"),
                                              ctx.input("sample"), ctx.input("ilsvrc2012"))
    source = "sample" if folder == ctx.input("sample") else "ilsvrc2012_val"
    gallery = list(getattr(ctx.settings("sanity_checks.imagenet.gallery"), source))[:count]
    classes = ctx.settings("sanity_checks.imagenet.classes")
    exclude: list[str] = []
    if source == "ilsvrc2012_val" and classes:
        rows = imagenet.read_labels(folder)
        rng = np.random.default_rng(seed)
        per_class = ctx.settings("sanity_checks.imagenet.per_class")
        wanted = []
        for name in classes:
            files = [r["file"] for r in rows if r["class_name"] == name]
            if not files:
                raise ConfigError(f"sanity_checks.imagenet.classes: no class named {name!r}")
            wanted += list(rng.choice(files, min(per_class, len(files)), replace=False))
        exclude = [r["file"] for r in rows if r["file"] not in set(wanted) | set(gallery)]
    images = imagenet_set(folder, card, count, seed, include=gallery, exclude=exclude,
                          source=source)
    if note:
        images.notes.append(note)
    return images


def methods_for(arch: str, methods: dict[str, dict]) -> dict[str, dict]:
    """The configured methods an architecture can run (an MLP skips the CAMs)."""
    if arch == "mlp":
        return {name: params for name, params in methods.items() if name not in CAM_METHODS}
    return dict(methods)

