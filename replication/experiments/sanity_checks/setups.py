"""The models and images the Sanity Checks experiments explain, from a stage's settings.

Setups: ``imagenet-<model>`` (each ImageNet model of ``sanity_checks.imagenet.run_models`` on
the paper's own images) and the four MNIST / Fashion-MNIST models ``<cnn|mlp>-<mnist|
fashion_mnist>`` trained by the train stage.

The ImageNet images are the paper's, in every profile (``datasets/sanity_checks_imagenet``,
the `sanity_images` stage): the 200 curve images of Fig. 4–5, taken round-robin over the
authors' 10 classes so that the first N stay balanced, and the demo images of the galleries
(bird, dog, corn: Fig. 1–3, 10–18), which are not among the curve images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from replication.data.sanity_images import balanced_curve_images, demo_images
from replication.experiments.common import ImageSet, imagenet_set
from replication.fileio import write_json, write_npz, write_table
from replication.models import ModelCard

CAM_METHODS = ("gradcam", "guided_gradcam")  # an MLP has no convolution to take a CAM of
# How many curve images there are, for counting a stage's passes before any data exists: the
# authors' 10 lists hold 201 entries, one image listed twice.
CURVE_IMAGES = 200
CURVE_SOURCE = "sanity_checks_imagenet: the paper's curve images (round-robin over its 10 classes)"
DEMO_SOURCE = "sanity_checks_imagenet: the paper's demo images"


def curve_set(folder: str | Path, card: ModelCard, count: int | None) -> ImageSet:
    """The first ``count`` (None: all 200) of the paper's curve images, through ``card``'s
    preprocessing."""
    names = balanced_curve_images(folder)[:count]
    return _named(folder, card, names, CURVE_SOURCE)


def demo_set(folder: str | Path, card: ModelCard, roles: Sequence[str]) -> ImageSet:
    """The paper's demo images of ``roles`` (bird, dog, corn), in that order."""
    demos = demo_images(folder)
    return _named(folder, card, [demos[role] for role in roles], DEMO_SOURCE)


def _named(folder: str | Path, card: ModelCard, names: list[str], source: str) -> ImageSet:
    if not names:
        size, channels = card.preprocessing.input_size, card.preprocessing.channels
        return ImageSet(torch.empty(0, channels, size, size), torch.empty(0, dtype=torch.long),
                        [], source)
    # every image is named, so the seed of imagenet_set's random fill is never used
    return imagenet_set(folder, card, len(names), 0, include=names, source=source)


def joined(first: ImageSet, second: ImageSet) -> ImageSet:
    """``first``'s images, then ``second``'s."""
    return ImageSet(torch.cat([first.images, second.images]),
                    torch.cat([first.labels, second.labels]), [*first.names, *second.names],
                    f"{first.source} + {second.source}", [*first.notes, *second.notes])


def image_source(images: ImageSet) -> dict:
    """What a metrics file records of the images a stage explained."""
    return {"image_source": images.source, "images": len(images), "image_names": images.names}


def skip_unrun_model(ctx, model: str, run_models: tuple[str, ...]) -> bool:
    """For a matrix item whose model the profile does not run: write every output empty (a
    table with no rows, an empty map archive, a metrics file that says why) and return True."""
    if model in run_models:
        return False
    reason = (f"{model} is not among sanity_checks.imagenet.run_models of this profile "
              f"({', '.join(run_models)})")
    for name, out in ctx.stage.outs.items():
        path = ctx.output(name)
        if path.suffix == ".csv":
            write_table(pd.DataFrame(), path)
        elif path.suffix == ".npz":
            write_npz(path, {})
        else:
            write_json(path, {"model": model, **ctx.item, "not_run": reason})
    return True


def methods_for(arch: str, methods: dict[str, dict]) -> dict[str, dict]:
    """The configured methods an architecture can run (an MLP skips the CAMs)."""
    if arch == "mlp":
        return {name: params for name, params in methods.items() if name not in CAM_METHODS}
    return dict(methods)
