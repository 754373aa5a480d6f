"""torch datasets over the prepared data folders."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from replication.data import imagenet, mnist


def mnist_tensors(folder: str | os.PathLike, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels / 255 in [0, 1] as (N, 1, 28, 28) float32, and int64 labels."""
    images, labels = mnist.load(folder, split)
    pixels = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return pixels, torch.from_numpy(labels)


def permuted_labels(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation of the labels: class counts kept, the image–label link broken."""
    generator = torch.Generator().manual_seed(seed)
    return labels[torch.randperm(len(labels), generator=generator)]


def tensor_dataset(pixels: torch.Tensor, labels: torch.Tensor) -> TensorDataset:
    return TensorDataset(pixels, labels)


class ImageNetImages(Dataset):
    """A prepared ImageNet folder (images/ + labels.csv) through a model's preprocessing."""

    def __init__(self, folder: str | os.PathLike, transform, indices: list[int] | None = None):
        rows = imagenet.read_labels(folder)
        self.rows = rows if indices is None else [rows[i] for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = self.rows[index]
        with Image.open(row["path"]) as image:
            return self.transform(image.convert("RGB")), row["class_index"]
