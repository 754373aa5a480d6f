"""The one device setting (``device`` in params.yaml): where models, maps and metrics run."""

from __future__ import annotations

import torch

from replication.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for, but PyTorch sees no CUDA device here; "
                          "set device: auto (or cpu) in params.yaml")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} was asked for, but MPS is not available here")
    return device


def lightning_devices(device: torch.device) -> dict:
    """Trainer arguments that place training on ``device`` alone (one process, one device:
    several devices would need the maps gathered across ranks, which no stage does)."""
    if device.type == "cpu":
        return {"accelerator": "cpu", "devices": 1}
    accelerator = "gpu" if device.type == "cuda" else device.type
    return {"accelerator": accelerator, "devices": [device.index or 0]}
