"""Accuracy of ImageNet models on a prepared image folder."""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader

from replication.data.tensors import ImageNetImages
from replication.models import ModelCard


@torch.no_grad()
def imagenet_accuracy(card: ModelCard, folder: str | os.PathLike, batch_size: int = 50,
                      limit: int | None = None) -> dict:
    """Top-1 and top-5 accuracy of ``card`` on the images of ``folder`` (labels.csv)."""
    dataset = ImageNetImages(folder, card.preprocessing.transform())
    if limit is not None:
        dataset.rows = dataset.rows[:limit]
    model = card.model.eval()
    top1 = top5 = 0
    for images, labels in DataLoader(dataset, batch_size, num_workers=0):
        best = model(images).topk(5, dim=1).indices
        top1 += int((best[:, 0] == labels).sum())
        top5 += int((best == labels[:, None]).any(dim=1).sum())
    n = len(dataset)
    return {"model": card.name, "n_images": n, "top1": top1 / n, "top5": top5 / n}
