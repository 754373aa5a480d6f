"""What every paper's experiments share: image sets, trained models, the stage's device and
the engine's batch loop on it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from replication.attribution import Explainer, model_device
from replication.data import imagenet
from replication.data.tensors import ImageNetImages, mnist_tensors
from replication.devices import resolve_device
from replication.errors import DataError
from replication.models import ModelCard, create_model


@dataclass
class ImageSet:
    """Images in model-input space (N, C, H, W), their labels and names (file or test index)."""

    images: Tensor
    labels: Tensor
    names: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        indices = list(indices)
        return ImageSet(self.images[indices], self.labels[indices],
                        [self.names[i] for i in indices], self.source, list(self.notes))

    def index(self, name: str) -> int:
        if name not in self.names:
            raise DataError(f"image {name!r} is not in the set ({self.source}); it holds "
                            f"{self.names[:5]} …")
        return self.names.index(name)


def imagenet_set(folder: str | os.PathLike, card: ModelCard, count: int | None, seed: int, *,
                 include: Sequence[str] = (), exclude: Sequence[str] = (),
                 source: str = "") -> ImageSet:
    """``include`` (file names, in order) then a seeded random choice of the other images, up to
    ``count`` in all (``None``: every image), through ``card``'s preprocessing."""
    if count is not None and count < 0:
        raise ValueError(f"an image count must be >= 0 (or None: all); got {count}")
    rows = imagenet.read_labels(folder)
    files = [r["file"] for r in rows]
    missing = [f for f in include if f not in files]
    if missing:
        raise DataError(f"{folder} has no image {missing[0]!r}; check the image names in params.yaml")
    chosen = [files.index(f) for f in include]
    blocked = set(chosen) | {files.index(f) for f in exclude if f in files}
    others = [i for i in np.random.default_rng(seed).permutation(len(files)) if i not in blocked]
    total = len(files) - len(blocked) + len(chosen) if count is None else count
    chosen += [int(i) for i in others[:max(0, total - len(chosen))]]
    dataset = ImageNetImages(folder, card.preprocessing.transform(), chosen)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([rows[i]["class_index"] for i in chosen])
    return ImageSet(images, labels, [files[i] for i in chosen], source or str(folder))


def mnist_set(folder: str | os.PathLike, count: int, split: str = "test",
              offset: int = 0) -> ImageSet:
    """The first ``count`` images of a split from ``offset`` (the authors' test bed: the first
    test images), pixels in [0, 1]."""
    if count < 0 or offset < 0:  # a negative slice end would silently take almost every image
        raise ValueError(f"count and offset must be >= 0; got {count}, {offset}")
    pixels, labels = mnist_tensors(folder, split)
    rows = slice(offset, offset + count)
    names = [f"{split}[{i}]" for i in range(offset, offset + min(count, len(labels) - offset))]
    return ImageSet(pixels[rows], labels[rows], names, f"{Path(folder).name} {split}")


def trained_mnist_model(checkpoint: str | os.PathLike, arch: str) -> ModelCard:
    """The model card of ``arch`` (``cnn``/``mlp``) with a checkpoint of the train stage."""
    path = Path(checkpoint)
    if not path.is_file():
        raise DataError(f"{path} is missing: run `dvc repro` to train the MNIST models first")
    card = create_model({"cnn": "mnist_cnn", "mlp": "mnist_mlp"}[arch])
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    card.model.load_state_dict(state)
    card.model.eval()
    return card


def imagenet_card(ctx, name: str) -> ModelCard:
    """ImageNet model ``name`` for a stage, loaded once, on the stage's device. Where its
    pretrained weights cannot be obtained and the stage's settings allow stand-ins
    (``stand_in_weights``), a seeded stand-in replaces them, and the stage's metrics say so."""
    key = ("imagenet_card", name)
    if key not in ctx.cache:
        card = create_model(name, stand_in=ctx.settings("stand_in_weights"))
        card.model.eval().to(stage_device(ctx))
        if card.stand_in:
            ctx.stand_in = True
        ctx.cache[key] = card
    return ctx.cache[key]


@torch.no_grad()
def predicted_classes(model: torch.nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """The model's top class of each image (on the CPU), batches run where the model is."""
    model.eval()
    device = model_device(model)
    return torch.cat([model(images[i:i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def stage_device(ctx) -> torch.device:
    """The stage's device (``device`` in params.yaml), resolved once per stage."""
    if "device" not in ctx.cache:
        ctx.cache["device"] = resolve_device(ctx.settings("device"))
    return ctx.cache["device"]


def stage_explainer(ctx, batch_size: int) -> Explainer:
    """The engine's batch loop on the stage's device; a long call shows a bar named after the
    stage and the method."""
    return Explainer(stage_device(ctx), batch_size=batch_size, progress=ctx.label)
