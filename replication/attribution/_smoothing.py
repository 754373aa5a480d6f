"""Noise wrappers over any base method: SmoothGrad, SmoothGrad², VarGrad, IG-SmoothGrad.

The noise follows the papers' convention (Smilkov et al. 2017; the Sanity Checks code):
σ = ``noise_level`` × (max(x) − min(x)) of each image, in model-input space. Captum's
``NoiseTunnel`` takes an absolute σ instead, a trap the notes document.
"""

from __future__ import annotations

import torch
from torch import Tensor

from replication.attribution._base import (DEFAULT_INTERNAL_BATCH, Attribution, ModelLike, Passes,
                                           accumulate_samples, create_method, image_generators,
                                           non_negative, positive_int, register_method)


def image_noise(inputs: Tensor, generators: list[torch.Generator], image: Tensor) -> Tensor:
    """One standard-normal draw of the image's shape per row, from that image's stream."""
    return torch.stack([torch.randn(inputs.shape[1:], generator=generators[i], device=inputs.device,
                                    dtype=inputs.dtype) for i in image.tolist()])


@register_method
class SmoothGrad(Attribution):
    """E_ε[base(x + ε)], ε ~ N(0, σ²), σ = noise_level · (max x − min x) (Smilkov et al. 2017).

    ``absolute=True`` averages |base(x + ε)| instead (the ParchGrad authors' SmoothGrad)."""

    name = "smoothgrad"
    label = "SmoothGrad"
    statistic = "mean"

    def __init__(self, model: ModelLike, *, base: str = "gradient", base_params: dict | None = None,
                 n_samples: int = 50, noise_level: float = 0.15, absolute: bool = False,
                 seed: int = 0, internal_batch_size: int = DEFAULT_INTERNAL_BATCH):
        super().__init__(model)
        self.base: Attribution = create_method(base, model, **dict(base_params or {}))
        self.absolute = bool(absolute)
        self.n_samples = positive_int(self.name, "n_samples", n_samples)
        self.noise_level = non_negative(self.name, "noise_level", noise_level)
        self.seed = int(seed)
        self.internal_batch_size = positive_int(self.name, "internal_batch_size", internal_batch_size)

    def passes(self) -> Passes:
        base = self.base.passes()
        return Passes(self.n_samples * base.forward_backward, self.n_samples * base.forward)

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        flat = inputs.flatten(1)
        sigma = self.noise_level * (flat.amax(1) - flat.amin(1))
        generators = image_generators(inputs, self.seed)

        def noisy_maps(image: Tensor, _sample: Tensor) -> tuple[Tensor, ...]:
            image = image.to(inputs.device)
            noisy = inputs[image] + sigma[image].view(-1, 1, 1, 1) * image_noise(inputs, generators, image)
            maps = self.base._attribute(noisy, targets[image])
            maps = maps.abs() if self.absolute else maps
            if self.statistic == "mean":
                return (maps,)
            return (maps * maps,) if self.statistic == "second_moment" else (maps, maps * maps)

        rows = max(1, self.internal_batch_size // self.base.samples_per_image())
        sums = accumulate_samples(len(inputs), self.n_samples, rows, noisy_maps)
        moments = [total / self.n_samples for total in sums]
        if self.statistic == "variance":
            return (moments[1] - moments[0] ** 2).clamp_min(0.0)
        return moments[0]


@register_method
class SmoothGradSquared(SmoothGrad):
    """E_ε[base(x + ε)²] (SmoothGrad², Hooker et al. 2019; PAIR's ``magnitude=True``)."""

    name = "smoothgrad_sq"
    label = "SmoothGrad²"
    statistic = "second_moment"


@register_method
class VarGrad(SmoothGrad):
    """Var_ε[base(x + ε)] (Adebayo et al. 2018, App. A.7), the population variance."""

    name = "vargrad"
    label = "VarGrad"
    statistic = "variance"


@register_method
class IntegratedGradientsSmoothGrad(SmoothGrad):
    """SmoothGrad over Integrated Gradients: noise added to x, then IG from the baseline."""

    name = "ig_smoothgrad"
    label = "IG-SmoothGrad"

    def __init__(self, model: ModelLike, *, n_samples: int = 50, noise_level: float = 0.15,
                 steps: int = 50, baseline: str | float | Tensor = "zeros", seed: int = 0,
                 internal_batch_size: int = DEFAULT_INTERNAL_BATCH):
        super().__init__(model, base="integrated_gradients",
                         base_params={"steps": steps, "baseline": baseline,
                                      "internal_batch_size": internal_batch_size},
                         n_samples=n_samples, noise_level=noise_level, seed=seed,
                         internal_batch_size=internal_batch_size)
