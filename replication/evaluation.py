"""Accuracy of ImageNet models on a prepared image folder."""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader

from replication.data.tensors import ImageNetImages
from replication.metrics.stats import wilson_interval
from replication.models import ModelCard
from replication.progress import progress


@torch.no_grad()
def imagenet_accuracy(card: ModelCard, folder: str | os.PathLike, batch_size: int = 50,
                      limit: int | None = None) -> dict:
    """Top-1 and top-5 accuracy of ``card`` on the images of ``folder`` (labels.csv)."""
    dataset = ImageNetImages(folder, card.preprocessing.transform())
    if limit is not None:
        dataset.rows = dataset.rows[:limit]
    model = card.model.eval()
    device = next(model.parameters()).device
    top1 = top5 = 0
    loader = DataLoader(dataset, batch_size, num_workers=0)
    for images, labels in progress(loader, f"{card.name} accuracy", unit="batch"):
        best = model(images.to(device)).topk(5, dim=1).indices.cpu()
        top1 += int((best[:, 0] == labels).sum())
        top5 += int((best == labels[:, None]).any(dim=1).sum())
    n = len(dataset)
    return {"model": card.name, "n_images": n,
            "top1": top1 / n, "top1_ci": wilson_interval(top1, n).as_json(),
            "top5": top5 / n, "top5_ci": wilson_interval(top5, n).as_json()}


def run_accuracy_stage(ctx) -> None:
    """The `imagenet_accuracy` stage: top-1/top-5 of each configured model, one JSON each."""
    import logging

    from replication.data import imagenet
    from replication.devices import resolve_device
    from replication.fileio import atomic_directory, write_json
    from replication.models import create_model
    from replication.models.imagenet import stand_in_stamped

    section = ctx.settings("imagenet")
    device = resolve_device(ctx.settings("device"))
    folder, note = imagenet.evaluation_folder(section.source, ctx.input("sample"),
                                              ctx.input("ilsvrc2012"))
    with atomic_directory(ctx.output("out")) as tmp:
        for name in section.models:
            card = create_model(name, stand_in=ctx.settings("stand_in_weights"))
            card.model.to(device)
            result = imagenet_accuracy(card, folder, limit=section.accuracy_images)
            result.update(images=str(folder), fallback_note=note)
            if card.stand_in:  # stamped per model: the other files' weights are real
                result = stand_in_stamped(result)
            logging.getLogger("replication").info("%s: top-1 %.4f on %d images", name,
                                                  result["top1"], result["n_images"])
            write_json(tmp / f"{name}.json", result)


def accuracy_cost(ctx) -> list:
    """One forward per evaluated image and model (the sample holds 1,000; ILSVRC2012 50,000)."""
    from replication.cost import Cost

    section = ctx.settings("imagenet")
    available = 1_000 if section.source == "sample" else 50_000
    images = min(section.accuracy_images or available, available)
    return [Cost(name, f"top-1/top-5 on {images:,} images", 0, images) for name in section.models]
