"""How the ParchGrad experiments configure the method and read its maps (notes §2.4, §2.5).

Hooked convs (``hooks``): ``"default"`` is the card's ``parchgrad_convs`` (the authors' default
hooks for their models, the analogue for Lite0); a number r hooks the last int(r·L) convs in
``named_modules`` order, the authors' ``--layer-ratio`` (it includes convs inside residual
blocks, where variance conservation is not a global scale).

Reductions to one value per pixel follow the authors' code (``authors_pixel_map``): mean over
RGB of |map| for Gradient, Gradient⊙Input and SmoothGrad, |mean over RGB| for IG.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from replication.attribution import ChannelStatistics, Explainer
from replication.attribution.channel_statistics import conv_names
from replication.cost import Cost, method_passes
from replication.errors import ConfigError
from replication.experiments.common import ImageSet
from replication.experiments.parchgrad.settings import BaseMethodSettings
from replication.models.base import ModelCard


@dataclass(frozen=True)
class MethodOptions:
    """What every experiment shares about running ParchGrad: the Shapiro filter's threshold
    (None: off), the rule for 1×1 spatial maps and the seed of SmoothGrad's noise."""

    shapiro_threshold: float | None
    spatial_1x1: str
    seed: int

    @classmethod
    def of(cls, ctx) -> "MethodOptions":
        return cls(ctx.settings("parchgrad.shapiro_threshold"),
                   ctx.settings("parchgrad.spatial_1x1"), ctx.settings("seed"))


def hooked_convs(card: ModelCard, hooks: str | float) -> list[str]:
    """The convs ParchGrad hooks: ``"default"`` (the card's) or the last int(r·L) convs."""
    if hooks == "default":
        if not card.parchgrad_convs:
            raise ConfigError(f"{card.name} declares no ParchGrad convs")
        return list(card.parchgrad_convs)
    convs = conv_names(card.model)
    count = int(float(hooks) * len(convs))
    if count < 1:
        raise ConfigError(f"layer ratio {hooks!r} hooks no conv of {card.name} "
                          f"({len(convs)} convs); choose r in (0, 1] with int(r·{len(convs)}) ≥ 1")
    return convs[-count:]


def hooks_label(hooks: str | float) -> str:
    return "default" if hooks == "default" else f"r={float(hooks):g}"


def base_params(base: str, settings: BaseMethodSettings | None, seed: int) -> dict:
    """Hyper-parameters of a base method (IG steps, SmoothGrad samples) from the settings."""
    if base == "integrated_gradients":
        # The authors' IG: zeros in model-input space, the trapezoid rule over steps + 1
        # points α = i/steps (their 25 steps: 26 points).
        return {"steps": settings.ig_steps + 1, "baseline": "zeros", "integration": "trapezoid"}
    if base == "smoothgrad":
        # The authors' SmoothGrad averages |gradient| over the noisy copies.
        return {"n_samples": settings.smoothgrad_samples,
                "noise_level": float(settings.noise_level), "absolute": True, "seed": seed}
    return {}


def method_label(base: str, q: float | None, vc: bool = True) -> str:
    if q is None:
        return base
    return f"parchgrad({base}, q={q:g}{'' if vc else ', no VC'})"


def method_spec(base: str, options: MethodOptions, statistics: ChannelStatistics | None = None,
                q: float | None = None, convs: Sequence[str] | None = None, vc: bool = True,
                shapiro: bool = True, settings: BaseMethodSettings | None = None
                ) -> tuple[str, dict]:
    """(engine name, params) of ``base``, or of ParchGrad over it when q is given (γ = ∞).

    The Shapiro filter uses ``options.shapiro_threshold`` unless ``shapiro`` is False;
    ``settings`` holds the base's hyper-parameters (IG, SmoothGrad).
    """
    params = base_params(base, settings, options.seed)
    if q is None:
        return base, params
    if statistics is None:
        raise ConfigError("ParchGrad needs channel statistics")
    return "parchgrad", {"statistics": statistics, "base": base, "base_params": params,
                         "convs": list(convs) if convs is not None else None,
                         "channel_portion": float(q), "variance_conservation": bool(vc),
                         "shapiro_threshold": options.shapiro_threshold if shapiro else None,
                         "spatial_1x1": options.spatial_1x1}


def authors_pixel_map(maps: Tensor, base: str) -> Tensor:
    """(B, 1, H, W) ≥ 0 as the authors reduced maps: |mean_RGB| for IG, mean_RGB |·| otherwise."""
    if base == "integrated_gradients":
        return maps.mean(1, keepdim=True).abs()
    return maps.abs().mean(1, keepdim=True)


def explain(explainer: Explainer, card: ModelCard, name: str, params: dict,
            images: ImageSet) -> Tensor:
    """Raw maps of ``images`` for their labels (the authors explained the ground truth)."""
    return explainer(card, name, params, images.images, images.labels).detach().cpu()


def gradient_pixel_map(explainer: Explainer, card: ModelCard, images: ImageSet,
                       options: MethodOptions, statistics: ChannelStatistics | None = None,
                       q: float | None = None, convs: Sequence[str] | None = None,
                       vc: bool = True) -> Tensor:
    """The authors' |map| of Gradient, or of ParchGrad(Gradient) when q is given."""
    name, params = method_spec("gradient", options, statistics, q, convs, vc)
    return authors_pixel_map(explain(explainer, card, name, params, images), "gradient")


def flat(maps: Tensor) -> np.ndarray:
    return maps.detach().double().flatten(1).cpu().numpy()


def image_rows(card: ModelCard, images: ImageSet) -> list[dict]:
    """The identifying columns of each image's rows (model, image, label)."""
    return [{"model": card.name, "image": images.names[i], "label": int(images.labels[i])}
            for i in range(len(images))]


# --------------------------------------------------------------------------- cost (no weights)

@functools.lru_cache(maxsize=None)
def counting_card(model: str) -> ModelCard:
    """A card to count passes with: the architecture, random weights (counting needs none)."""
    from replication.models import create_model

    return create_model(model) if model.startswith("mnist") else create_model(model,
                                                                               pretrained=False)


def map_cost(ctx, entry: str, base: str, maps: int, images: int, what: str,
             settings: BaseMethodSettings | None = None) -> Cost:
    """The passes of ``maps`` maps per image of ``base`` on ``images`` images of catalogue entry
    ``entry`` (ParchGrad over a base costs the base's passes: its hooks add none)."""
    model = ctx.settings("parchgrad.models")[entry].model
    counted = method_passes(counting_card(model), base, base_params(base, settings, 0),
                            maps * images)
    return Cost(model, what, counted.forward_backward, counted.forward)
