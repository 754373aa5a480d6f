"""What the repaired randomisation tests share (``smooth_mprt``, ``efficient_mprt``).

Which model states they visit, the class each state explains, the engine call that explains a
batch, and Quantus's post-processing of a map (normalise, then absolute value).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from replication.attribution import create_method, model_device, postprocess
from replication.errors import ConfigError
from replication.randomization import RandomizationOptions
from replication.randomization.reinit import (ORIGINAL, Stage, cascading, explained_classes,
                                              independent, parameter_module_blocks)
from replication.models.base import ModelCard

LayerOrder = Literal["bottom_up", "top_down", "independent"]
Blocks = Literal["card", "modules"]
MapForm = Literal["raw", "input"]
Targets = Tensor | Sequence[int] | Literal["predicted"]
# (images, targets) of a chunk -> (the engine's inputs, their targets, maps -> one map per image)
Expand = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]]

LAYER_ORDERS: tuple[str, ...] = ("bottom_up", "top_down", "independent")
BLOCK_SOURCES: tuple[str, ...] = ("card", "modules")
MAP_FORMS: tuple[str, ...] = ("raw", "input")

# Quantus's randomisation (``get_random_layer_generator``, seed 42): ``reset_parameters()`` of
# every module that has one, each re-seeded with seed + 1. Pass it with blocks="modules".
QUANTUS_RANDOMIZATION = RandomizationOptions(batchnorm="reset_parameters", draws="quantus",
                                             seed=42)


def choose(name: str, value: Any, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{name} must be one of {list(options)}; got {value!r}")
    return value


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    return value


def check_call(card: ModelCard, images: Tensor, method: str,
               method_params: Mapping[str, Any] | None, batch_size: int) -> dict[str, Any]:
    """Fail on a bad argument before any model is randomised; the method's parameters."""
    if not isinstance(card, ModelCard):
        raise ConfigError(f"card must be a ModelCard (replication.models.create_model); "
                          f"got {type(card).__name__}")
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim != 4 \
            or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty float tensor (batch, channels, height, "
                         f"width); got {shape}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images hold NaN or infinite values")
    positive_int("batch_size", batch_size)
    params = dict(method_params or {})
    create_method(method, card, **params)  # unknown method or parameter: ConfigError here
    return params


def randomization_card(card: ModelCard, blocks: Blocks, order: LayerOrder) -> ModelCard:
    """``card`` with the blocks in the order they are randomised: the card's blocks or
    Quantus's modules (``blocks``), output first for ``top_down``, input first otherwise
    (Quantus lists ``bottom_up`` and ``independent`` in ``named_modules()`` order)."""
    choose("blocks", blocks, BLOCK_SOURCES)
    choose("layer_order", order, LAYER_ORDERS)
    chosen = (list(card.randomization_blocks) if blocks == "card"
              else parameter_module_blocks(card.model))
    if order != "top_down":
        chosen.reverse()
    return dataclasses.replace(card, randomization_blocks=chosen)


def randomized_stages(card: ModelCard, order: LayerOrder,
                      options: RandomizationOptions | None) -> Iterator[Stage]:
    """The randomised model states of ``card`` (blocks already ordered): cascading for
    ``bottom_up``/``top_down``, one block at a time for ``independent``; no "Original"."""
    stages = independent(card, options) if order == "independent" else cascading(card, options)
    return (stage for stage in stages if stage.label != ORIGINAL)


def check_targets(targets: Targets, n_images: int) -> None:
    if isinstance(targets, str):
        if targets != "predicted":
            raise ConfigError(f"targets must be class indices or 'predicted' (each model "
                              f"state's own top class); got {targets!r}")
        return
    count = len(torch.as_tensor(targets).reshape(-1))
    if count != n_images:
        raise ValueError(f"{n_images} images but {count} targets")


def stage_targets(model: torch.nn.Module, images: Tensor, targets: Targets) -> Tensor:
    """The classes one model state explains: the given ones (as Quantus), or that state's own
    top class for ``"predicted"`` (the Sanity Checks authors)."""
    if isinstance(targets, str):
        return explained_classes(model, images, "predicted")
    return explained_classes(model, images, "label", targets)


def on_model_device(card: ModelCard, images: Tensor) -> Tensor:
    return images.detach().to(model_device(card.model))


def input_maps(maps: Tensor, inputs: Tensor) -> Tensor:
    """(B, 1, H, W): one channel at the inputs' resolution, as ``quantus.explain`` hands maps to
    its metrics (the signed sum over channels, its default ``reduce_axes``); layer-resolution
    maps (CAMs) are upsampled bilinearly first (``postprocess.upsample``, the engine's
    ``Explainer``; Quantus leaves the interpolation to the caller)."""
    maps = postprocess.upsample(maps, tuple(inputs.shape[-2:]))
    return postprocess.reduce_channels(maps, "sum")


def explain_chunks(card: ModelCard, method: str, params: Mapping[str, Any], images: Tensor,
                   targets: Tensor, batch_size: int, expand: Expand | None = None,
                   maps: MapForm = "raw") -> Tensor:
    """Engine maps of ``images``, ``batch_size`` images per engine call. ``expand`` maps a
    chunk (images, targets) to the engine's inputs and a function of its maps (smoothing).
    ``maps``: the engine's raw maps, or ``"input"``: ``input_maps`` of them."""
    choose("maps", maps, MAP_FORMS)
    explainer = create_method(method, card, **params)

    def explained(inputs: Tensor, classes: Tensor) -> Tensor:
        raw = explainer.attribute(inputs, classes)
        return input_maps(raw, inputs) if maps == "input" else raw

    outputs = []
    for start in range(0, len(images), batch_size):
        chunk, classes = images[start:start + batch_size], targets[start:start + batch_size]
        if expand is None:
            outputs.append(explained(chunk, classes))
        else:
            inputs, input_classes, reduce = expand(chunk, classes)
            outputs.append(reduce(explained(inputs, input_classes)))
    return torch.cat(outputs)


def second_moment_normalise(maps: np.ndarray) -> np.ndarray:
    """Each map divided by √(mean of its squares) (Binder et al. 2022; Quantus's
    ``normalise_by_average_second_moment_estimate``). An all-zero map is left as it is.

    Quantus applies it to a whole batch at once (one divisor per batch); here each map gets its
    own, so a result does not depend on which images share a batch. A positive factor per map
    leaves rank similarities and histograms of equal-width bins unchanged.
    """
    rows = maps.reshape(len(maps), -1)
    scale = np.sqrt(np.mean(np.square(rows, dtype=np.float64), axis=1))
    scale[scale == 0] = 1.0
    return (rows / scale[:, None]).reshape(maps.shape)


def processed(maps: Tensor, normalise: bool, absolute: bool) -> np.ndarray:
    """Maps (B, …) as numpy (B, values): normalised (``second_moment_normalise``), then their
    absolute values, in Quantus's order. The maps' dtype is kept unless normalised (float64)."""
    rows = maps.detach().cpu().numpy().reshape(len(maps), -1)
    if normalise:
        rows = second_moment_normalise(rows)
    return np.abs(rows) if absolute else rows


def finite_number(name: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name} must be a finite number ≥ {minimum}; got {value!r}")
    return float(value)
