"""Attribution over a dataset as a Lightning predict loop.

Lightning's ``predict`` runs under ``torch.inference_mode`` by default, where no gradient can be
taken; the Trainer here is built with ``inference_mode=False`` (the engine enables gradients
itself). Scaling to several devices is the Trainer's business (``accelerator``, ``devices``,
``strategy``), as for training.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from replication.attribution._base import Attribution, choice

TARGETS = ("label", "predicted")


class AttributionModule(L.LightningModule):
    """Wraps a configured method; each predict step returns maps, targets and labels on the CPU."""

    def __init__(self, method: Attribution, targets: str = "predicted"):
        super().__init__()
        self.method = method
        self.model = method.model  # a submodule, so the Trainer moves it to the device
        self.targets = choice("attribute_dataset", "targets", targets, TARGETS)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        inputs, labels = batch[0], batch[1]
        if self.targets == "predicted":
            with torch.no_grad():
                targets = self.model(inputs).argmax(1)
        else:
            targets = labels
        maps = self.method.attribute(inputs, targets)
        return {"maps": maps.cpu(), "targets": targets.cpu(), "labels": labels.cpu()}


def attribute_dataset(method: Attribution, loader: DataLoader, *, targets: str = "predicted",
                      accelerator: str = "auto", devices: int | str = "auto",
                      progress_bar: bool = False) -> dict[str, Tensor]:
    """Maps of every image of ``loader`` (yielding ``(inputs, labels)``), in loader order.

    ``targets="predicted"`` explains the model's top class (the Sanity Checks protocol);
    ``"label"`` explains the given label. Returns ``maps``, ``targets`` and ``labels``.
    """
    trainer = L.Trainer(accelerator=accelerator, devices=devices, inference_mode=False,
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=progress_bar)
    outputs = trainer.predict(AttributionModule(method, targets), dataloaders=loader)
    return {key: torch.cat([o[key] for o in outputs]) for key in ("maps", "targets", "labels")}
