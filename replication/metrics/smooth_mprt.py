"""Smooth MPRT (sMPRT; Hedström et al. 2023, "Sanity Checks Revisited", Quantus ``SmoothMPRT``).

Beyond the Sanity Checks paper: the model-parameter randomisation test with denoised
explanations. Every explanation is the mean of the method's maps of ``nr_samples`` copies of
the image, ``nr_samples − 1`` with Gaussian noise of SD ``noise_magnitude · (max x − min x)``
(per image, in model-input space) and the last one clean, so ``nr_samples=1`` is the plain
MPRT. The denoised map of each randomised model state is compared with the original model's,
layer by layer (cascading from the input, ``bottom_up``, by default as Quantus; ``top_down``
as the paper; ``independent`` one layer at a time): each map is normalised by its second moment,
made absolute, and compared with ``similarity`` (Spearman by default).

Direction: lower is better (``HIGHER_IS_BETTER``). A low similarity means the explanation
changes when the parameters it should depend on are randomised, i.e. it passes the sanity check;
a similarity near 1 means the explanation ignores the model.

Differences from Quantus 0.6.0, none of which changes a score with the defaults:

- Noise comes from one generator per image (``image_generators``: seeded from ``seed`` and the
  image), so a result does not depend on the batching, and every model state sees the same noise
  (common random numbers). Quantus draws from NumPy's global generator, per batch, and the
  original model's reference map from other draws than its layer-0 map (its ``"original"``
  entry measures that noise, and ``return_average_correlation`` averages it in with the layers,
  as it skips a key ``"orig"`` that does not exist). Here the reference is the original map.
- The second-moment normalisation divides each map by its own factor, Quantus one factor per
  batch; neither changes a rank similarity.
- Maps are averaged in float64 (Quantus adds ``map / nr_samples`` in float32).

The engine explains ``nr_samples × (L + 1)`` images per image for L randomised states
(``explanations_per_image``): the method's own passes come on top (``Attribution.passes``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
import torch
from torch import Tensor

from replication.attribution._base import image_generators
from replication.errors import ConfigError
from replication.randomization import RandomizationOptions
from replication.randomization.reinit import stage_card
from replication.metrics._mprt import (QUANTUS_RANDOMIZATION, Blocks, LayerOrder, MapForm,
                                       Targets, check_call, check_targets, choose,
                                       explain_chunks, finite_number, on_model_device,
                                       positive_int, processed, randomization_card,
                                       randomized_stages, stage_targets)
from replication.metrics.similarity import pearson_rows, spearman_rows
from replication.models.base import ModelCard

HIGHER_IS_BETTER: Final = False
BETTER: Final = ("lower: the denoised explanation of a randomised model is less similar to the "
                 "original model's, so the explanation depends on the model's parameters")

__all__ = ["BETTER", "HIGHER_IS_BETTER", "QUANTUS_RANDOMIZATION", "SIMILARITIES",
           "SmoothMPRTResult", "noisy_copies", "smooth_explanations", "smooth_mprt"]

SIMILARITIES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "spearman": spearman_rows,  # Quantus correlation_spearman (average ranks for ties)
    "pearson": pearson_rows,    # Quantus correlation_pearson
}


@dataclass(frozen=True)
class SmoothMPRTResult:
    """``similarity[i, l]``: image i, the original model's denoised map against state l's (the
    model with ``layers[l]`` randomised, cascading: with every layer before it too). NaN where
    a map is constant. ``explanations_per_image``: maps the engine computed per image."""

    layers: tuple[str, ...]
    similarity: np.ndarray
    explanations_per_image: int
    higher_is_better: ClassVar[bool] = HIGHER_IS_BETTER

    @property
    def last(self) -> np.ndarray:
        """(B,) the last state's similarity: the fully randomised model under a cascading
        order (Quantus ``return_last_correlation``)."""
        return self.similarity[:, -1]

    @property
    def average(self) -> np.ndarray:
        """(B,) mean over the randomised states. Quantus's ``return_average_correlation`` also
        averages in its "original" entry, which is 1 with common noise: (1 + L·average)/(L + 1)."""
        return self.similarity.mean(axis=1)


def noisy_copies(images: Tensor, nr_samples: int, noise_magnitude: float, seed: int) -> Tensor:
    """(B, nr_samples, C, H, W): per image, ``nr_samples − 1`` copies with N(0, σ²) noise,
    σ = ``noise_magnitude`` · (max − min of the image), from the image's own generator
    (``image_generators(images, seed)``), then the clean image (Quantus's last sample)."""
    span = images.amax(dim=(1, 2, 3)) - images.amin(dim=(1, 2, 3))
    sigma = (noise_magnitude * span).view(-1, 1, 1, 1, 1)
    noise = torch.stack([torch.randn((nr_samples - 1, *images.shape[1:]), generator=g,
                                     device=images.device, dtype=images.dtype)
                         for g in image_generators(images, seed)])
    return torch.cat([images[:, None] + sigma * noise, images[:, None]], dim=1)


def smooth_explanations(card: ModelCard, method: str, images: Tensor, targets: Tensor, *,
                        method_params: Mapping[str, Any] | None = None, nr_samples: int = 50,
                        noise_magnitude: float = 0.1, seed: int = 0,
                        batch_size: int = 4, maps: MapForm = "raw") -> Tensor:
    """(B, …) float64: per image, the mean of the method's maps (``maps``: raw, or
    ``_mprt.input_maps``) of its ``noisy_copies``, ``batch_size`` images (× ``nr_samples``
    copies) per engine call."""

    def expand(chunk: Tensor, classes: Tensor):
        copies = noisy_copies(chunk, nr_samples, noise_magnitude, seed)
        return (copies.flatten(0, 1), classes.repeat_interleave(nr_samples),
                lambda maps: maps.view(len(chunk), nr_samples, *maps.shape[1:]).double().mean(1))

    return explain_chunks(card, method, dict(method_params or {}), images, targets, batch_size,
                          expand, maps)


def smooth_mprt(card: ModelCard, images: Tensor, targets: Targets, method: str, *,
                method_params: Mapping[str, Any] | None = None, nr_samples: int = 50,
                noise_magnitude: float = 0.1, layer_order: LayerOrder = "bottom_up",
                similarity: str = "spearman", absolute: bool = True, normalise: bool = True,
                randomization: RandomizationOptions | None = None, blocks: Blocks = "card",
                seed: int = 0, batch_size: int = 4, maps: MapForm = "raw") -> SmoothMPRTResult:
    """Smooth MPRT of ``method`` (engine name, ``method_params``) on ``card`` for ``images``
    (B, C, H, W) in model-input space.

    ``targets``: class indices explained under every model state (Quantus), or
    ``"predicted"``: each state's own top class (the Sanity Checks authors).
    ``layer_order``: ``"bottom_up"`` (Quantus's sMPRT default), ``"top_down"`` or
    ``"independent"``. ``blocks``: the card's ``randomization_blocks`` or ``"modules"``, every
    module with ``reset_parameters`` (Quantus's layers). ``randomization``: how a block is
    re-drawn (``RandomizationOptions``, the project's default when None;
    ``QUANTUS_RANDOMIZATION`` with ``blocks="modules"`` re-draws Quantus's weights).
    ``seed``: the noise. ``similarity``: ``"spearman"`` or ``"pearson"``.
    ``absolute``/``normalise``: Quantus's ``abs``/``normalise`` (both on by default).
    ``maps``: the engine's raw maps (the default) or ``"input"``: one channel at the input's
    resolution, as ``quantus.explain`` returns them (``_mprt.input_maps``).
    """
    params = check_call(card, images, method, method_params, batch_size)
    check_targets(targets, len(images))
    positive_int("nr_samples", nr_samples)
    finite_number("noise_magnitude", noise_magnitude)
    choose("similarity", similarity, tuple(SIMILARITIES))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer; got {seed!r}")
    ordered = randomization_card(card, blocks, layer_order)
    images = on_model_device(card, images)
    compare = SIMILARITIES[similarity]
    options = dict(method_params=params, nr_samples=nr_samples, noise_magnitude=noise_magnitude,
                   seed=seed, batch_size=batch_size, maps=maps)

    def explained(state: ModelCard) -> np.ndarray:
        classes = stage_targets(state.model, images, targets)
        denoised = smooth_explanations(state, method, images, classes, **options)
        return processed(denoised, normalise, absolute)

    reference = explained(card)
    layers, columns = [], []
    for stage in randomized_stages(ordered, layer_order, randomization):
        layers.append(stage.label)
        columns.append(compare(reference, explained(stage_card(ordered, stage))))
    return SmoothMPRTResult(tuple(layers), np.stack(columns, axis=1),
                            nr_samples * (len(layers) + 1))
