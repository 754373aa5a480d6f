"""Explicit post-processing of raw attribution maps (batch first, torch, on the maps' device).

``attribute`` returns raw maps; every step that turns them into what a figure or a metric uses
is one of these functions, named where it is applied. The two visualisations of the Sanity
Checks paper follow PAIR ``saliency`` (``VisualizeImageGrayscale`` / ``VisualizeImageDiverging``),
the library the authors used:

- grayscale: Σ_c |E|, then ``(m − min) / (p99 − min)`` clipped to [0, 1] (the top ~1 % tie at 1);
- diverging: Σ_c E, span = |p99|, then ``(m + span) / (2 span)`` clipped to [−1, 1].

For 2-D maps (MNIST, one channel) the authors used ``|E| / max|E|`` and ``E / max|E|`` instead:
``grayscale(maps, percentile=None)`` and ``diverging(maps, percentile=None)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from replication.errors import ConfigError

EPS = 1e-12
Reduction = Literal["sum", "mean", "abs_sum", "abs_mean", "max_abs"]


def _check(maps: Tensor) -> Tensor:
    if maps.ndim != 4:
        raise ValueError(f"maps must be (batch, channels, height, width); got shape {tuple(maps.shape)}")
    return maps


def non_finite_images(batch: Tensor) -> Tensor:
    """(B,) bool: which images (or maps) of ``batch`` hold a NaN or ±inf anywhere."""
    return ~torch.isfinite(batch).flatten(1).all(1)


def reduce_channels(maps: Tensor, how: Reduction = "sum") -> Tensor:
    """(B, C, H, W) → (B, 1, H, W)."""
    maps = _check(maps)
    if how == "sum":
        return maps.sum(1, keepdim=True)
    if how == "mean":
        return maps.mean(1, keepdim=True)
    if how == "abs_sum":
        return maps.abs().sum(1, keepdim=True)
    if how == "abs_mean":
        return maps.abs().mean(1, keepdim=True)
    if how == "max_abs":
        return maps.abs().amax(1, keepdim=True)
    raise ConfigError(f"unknown channel reduction {how!r}; choose one of "
                      "['sum', 'mean', 'abs_sum', 'abs_mean', 'max_abs']")


def absolute(maps: Tensor) -> Tensor:
    return maps.abs()


def _per_image_quantile(flat: Tensor, q: float) -> Tensor:
    """Linear-interpolated quantile of each row (numpy's default ``percentile`` method)."""
    # torch.quantile takes float32/float64 only; float64 maps keep double precision, so the
    # 99th-percentile clip (and which pixels tie at 1.0) matches numpy on the same map.
    work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
    return torch.quantile(work, q, dim=1, keepdim=True).to(flat.dtype)


def grayscale(maps: Tensor, percentile: float | None = 99.0) -> Tensor:
    """The papers' absolute-value visualisation, (B, 1, H, W) in [0, 1]."""
    summed = reduce_channels(maps, "abs_sum")
    flat = summed.flatten(1)
    if percentile is None:
        scaled = flat / flat.amax(1, keepdim=True).clamp_min(EPS)
    else:
        vmin = flat.amin(1, keepdim=True)
        vmax = _per_image_quantile(flat, percentile / 100.0)
        scaled = ((flat - vmin) / (vmax - vmin).clamp_min(EPS)).clamp(0.0, 1.0)
    return scaled.view_as(summed)


def diverging(maps: Tensor, percentile: float | None = 99.0) -> Tensor:
    """The papers' signed visualisation, (B, 1, H, W); 0.5 is zero for 3-D maps, 0 for 2-D."""
    summed = reduce_channels(maps, "sum")
    flat = summed.flatten(1)
    if percentile is None:
        scaled = flat / flat.abs().amax(1, keepdim=True).clamp_min(EPS)
    else:
        span = _per_image_quantile(flat, percentile / 100.0).abs().clamp_min(EPS)
        scaled = ((flat + span) / (2 * span)).clamp(-1.0, 1.0)
    return scaled.view_as(summed)


def minmax(maps: Tensor) -> Tensor:
    """Each image's map scaled to [0, 1] over all its channels and pixels (constant → 0)."""
    flat = _check(maps).flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - low) / (high - low).clamp_min(EPS)).view_as(maps)


def normalize_by_max(maps: Tensor) -> Tensor:
    """Divide each map by its largest |value| (Quantus' ``normalise_by_max``)."""
    flat = _check(maps).flatten(1)
    return (flat / flat.abs().amax(1, keepdim=True).clamp_min(EPS)).view_as(maps)


def upsample(maps: Tensor, size: tuple[int, int] | int, mode: str = "bilinear") -> Tensor:
    """Resize maps to ``size``; bilinear without corner alignment, as OpenCV and TF resize."""
    if isinstance(size, int):
        size = (size, size)
    maps = _check(maps)
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if mode == "nearest":
        return F.interpolate(maps, size=size, mode="nearest")
    return F.interpolate(maps, size=size, mode=mode, align_corners=False)
