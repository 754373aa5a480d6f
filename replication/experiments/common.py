"""What every paper's experiments share: image sets, trained models, explaining a set of images
through the engine's Lightning loop, and atomic tables.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from replication.attribution import create_method, postprocess
from replication.attribution.dataset import AttributionModule
from replication.data import imagenet
from replication.data.tensors import ImageNetImages, mnist_tensors
from replication.errors import DataError
from replication.fileio import atomic_write_text
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


@torch.no_grad()
def predicted_classes(model: torch.nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    model.eval()
    return torch.cat([model(images[i:i + batch_size]).argmax(1)
                      for i in range(0, len(images), batch_size)])


class Explainer:
    """Maps of a set of images through the engine's Lightning predict loop, one Trainer reused
    for every call (``inference_mode=False``; ``accelerator``/``devices`` scale it)."""

    def __init__(self, accelerator: str = "cpu", devices: int | str = 1, batch_size: int = 16):
        self.batch_size = batch_size
        self.trainer = L.Trainer(accelerator=accelerator, devices=devices, inference_mode=False,
                                 logger=False, enable_checkpointing=False,
                                 enable_model_summary=False, enable_progress_bar=False)

    def __call__(self, card: ModelCard, method: str, params: dict, images: Tensor,
                 targets: Tensor, *, input_resolution: bool = True) -> Tensor:
        """Raw maps of ``method`` for ``targets``, upsampled (bilinear) to the input size when
        the method returns layer-resolution maps (CAMs) and ``input_resolution``."""
        attribution = create_method(method, card, **params)
        loader = DataLoader(TensorDataset(images, targets), batch_size=self.batch_size)
        outputs = self.trainer.predict(AttributionModule(attribution, targets="label"), loader)
        maps = torch.cat([o["maps"] for o in outputs])
        if input_resolution and maps.shape[-2:] != images.shape[-2:]:
            maps = postprocess.upsample(maps, tuple(images.shape[-2:]))
        return maps


def write_csv(frame: pd.DataFrame, path: str | os.PathLike, float_format: str = "%.6g") -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format=float_format, lineterminator="\n")
    atomic_write_text(path, buffer.getvalue())


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing: run `dvc repro` to produce it")
    return pd.read_csv(path)
