"""What ParchGrad needs to split a conv's channels into class-relevant (H) and the rest (L).

The statistics are computed once per model over a statistics set (the ``parchgrad_statistics``
stage); the ParchGrad attribution method only reads them. Two modes, as in the authors' code:

- ``class``: per conv, ``log_p[c, k]`` = log p-value of the one-sided test "GAP of channel c is
  larger on class k than on the other classes". Kept as float64 log-p: with thousands of
  samples the p-values underflow float32 to exact zeros, which the authors' code then ties.
- ``instance``: per conv, the mean and standard deviation of each channel's GAP over the set;
  the test is a z-test of the explained image's own GAP (for sets with one image per class,
  where a class test is degenerate).

``shapiro_p`` is the Shapiro–Wilk p-value of each channel's GAP over the set (the authors keep
channels with p < 0.05, i.e. *non*-normal ones; optional).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from replication.errors import ConfigError, DataError, missing_input
from replication.fileio import atomic_open

Mode = Literal["class", "instance"]
MODES = ("class", "instance")


@dataclass
class LayerStatistics:
    """Statistics of one conv's output channels (C of them)."""

    log_p: Tensor | None = None      # (C, num_classes) float64, class mode
    gap_mean: Tensor | None = None   # (C,) instance mode
    gap_std: Tensor | None = None    # (C,) instance mode
    shapiro_p: Tensor | None = None  # (C,) optional Shapiro–Wilk filter

    @property
    def channels(self) -> int:
        for value in (self.log_p, self.gap_mean, self.shapiro_p):
            if value is not None:
                return int(value.shape[0])
        raise DataError("layer statistics hold no tensor")

    def tensors(self) -> dict[str, Tensor]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class ChannelStatistics:
    """Per hooked conv (module name) statistics, and how they were made (``meta``)."""

    mode: Mode
    layers: dict[str, LayerStatistics]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown statistics mode {self.mode!r}; choose one of {list(MODES)}")
        needed = ("log_p",) if self.mode == "class" else ("gap_mean", "gap_std")
        for name, layer in self.layers.items():
            missing = [k for k in needed if getattr(layer, k) is None]
            if missing:
                raise DataError(f"{self.mode}-mode statistics of layer {name} lack {missing}")

    def layer(self, name: str) -> LayerStatistics:
        if name not in self.layers:
            raise ConfigError(f"no ParchGrad statistics for layer {name!r}; the statistics "
                              f"cover {sorted(self.layers)}")
        return self.layers[name]

    def save(self, path: str | os.PathLike) -> None:
        payload = {"mode": self.mode, "meta": self.meta,
                   "layers": {n: layer.tensors() for n, layer in self.layers.items()}}
        with atomic_open(path) as handle:
            torch.save(payload, handle)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ChannelStatistics":
        path = Path(path)
        if not path.is_file():
            raise missing_input(path, "the ParchGrad channel statistics")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        layers = {n: LayerStatistics(**t) for n, t in payload["layers"].items()}
        return cls(payload["mode"], layers, payload.get("meta", {}))
