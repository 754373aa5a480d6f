"""Attribution over a set of images: the one batch loop every experiment uses.

A plain loop on one device, not a Lightning predict loop: Lightning's predict runs under
``inference_mode`` unless told otherwise, moves the module back to the CPU after every call
(so every later forward of a metric ran on the CPU) and its signal connector kept computing
after SIGTERM. Here the model is moved to the device once and stays there; the batches go to
it and the maps come back to the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from replication.attribution import postprocess
from replication.attribution._base import Attribution, ModelLike, create_method
from replication.models.base import ModelCard


def model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


class Explainer:
    """Maps of many images, ``batch_size`` at a time, on ``device`` (the model is moved there
    on first use and stays). ``progress`` names a tqdm bar on stderr (with the method's name) for
    a long call."""

    def __init__(self, device: torch.device | str = "cpu", batch_size: int = 16,
                 progress: str | None = None):
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.progress = progress

    def place(self, card: ModelLike) -> None:
        """Move ``card``'s model to the device (once; a no-op when it is there)."""
        model = card.model if isinstance(card, ModelCard) else card
        if model_device(model) != self.device:
            model.to(self.device)

    def _batches(self, total: int, description: str | None) -> Iterator[slice]:
        starts = range(0, total, self.batch_size)
        if description:
            from replication.progress import progress

            starts = progress(starts, description, unit="batch")
        for start in starts:
            yield slice(start, min(start + self.batch_size, total))

    @torch.no_grad()
    def raw(self, attribution: Attribution, images: Tensor, targets: Tensor) -> Tensor:
        """Raw maps (layer resolution for CAMs) of ``images`` for ``targets``, on the CPU."""
        self.place(attribution.model)
        maps = [attribution.attribute(images[rows].to(self.device), targets[rows].to(self.device))
                .cpu() for rows in self._batches(len(images), self.progress and
                                                 f"{self.progress} {attribution.name}")]
        if not maps:
            raise ValueError("no images to explain")
        return torch.cat(maps)

    def __call__(self, card: ModelLike, method: str | Attribution,
                 params: Mapping[str, Any] | None, images: Tensor, targets: Tensor, *,
                 input_resolution: bool = True) -> Tensor:
        """Raw maps of ``method`` (a name configured with ``params``, or a configured method) for
        ``targets``; layer-resolution maps upsampled (bilinear) to the input size when
        ``input_resolution``."""
        attribution = (method if isinstance(method, Attribution)
                       else create_method(method, card, **dict(params or {})))
        maps = self.raw(attribution, images, targets)
        if input_resolution and maps.shape[-2:] != images.shape[-2:]:
            maps = postprocess.upsample(maps, tuple(images.shape[-2:]))
        return maps
