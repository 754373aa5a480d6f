"""The schema of params.yaml's `parchgrad` section (see replication.settings).

Base values are the authors' (ResNet-18 / VGG16-BN / EfficientNet-B0 on ILSVRC2012 validation);
the quick and smoke profiles state what they change. Every experiment names the models it
explains in ``images: {model: count}``; a count of 0 drops a model (profiles merge mappings key
by key, so a profile removes a base model that way).
"""

from __future__ import annotations

from typing import Annotated, Literal

from replication.errors import ConfigError
from replication.settings import (NonNegative, NonNegativeInt, PositiveInt, Probability, Range,
                                  Seed, Settings, settings)

StatisticsSet = Literal["mnist_train", "fashion_mnist_train", "imagenet_sample",
                        "ilsvrc2012_val", "ilsvrc2012_train"]
ImageSource = Literal["mnist", "fashion_mnist", "imagenet"]
Base = Literal["gradient", "input_x_gradient", "integrated_gradients", "smoothgrad"]
ChannelPortion = Annotated[float, Range(gt=0, le=1)]  # q: the fraction of channels kept in H
# The convs ParchGrad hooks: "default" (the model card's) or a layer ratio r (the last int(r·L)
# convs, the authors' --layer-ratio).
Hooks = Literal["default"] | Annotated[float, Range(gt=0, le=1)]
ImageCounts = dict[str, NonNegativeInt]  # model -> images explained (0: the model is dropped)


@settings
class ModelEntry(Settings):
    """A model the ParchGrad stages may load: its weights, statistics set and explained images."""

    model: str  # a model-zoo name (replication.models)
    checkpoint: str | None = None  # a train-stage checkpoint under models/ (mnist_cnn only)
    statistics_set: StatisticsSet  # ilsvrc2012_val falls back to imagenet_sample when absent
    images: ImageSource

    def __post_init__(self) -> None:
        if self.checkpoint is not None and self.model != "mnist_cnn":
            raise ConfigError(f"params.yaml parchgrad.models: a checkpoint ({self.checkpoint}) "
                              f"is supported for mnist_cnn only, not {self.model}")


@settings
class ExplainerSettings(Settings):
    batch_size: PositiveInt  # images per attribution batch


@settings
class StatisticsSettings(Settings):
    """The offline channel statistics (``parchgrad_statistics``)."""

    models: tuple[str, ...]
    equal_var: bool  # true: the authors' pooled Student t-test; false: Welch
    pvalue_precision: Literal["float64", "float32"]  # float32: the authors' tied zeros
    shapiro: bool
    shapiro_max_samples: Annotated[int | None, Range(ge=3)]  # null: every image, as the authors
    authors_bug: bool  # also write <model>-authors-bug.pt for class-wise sets (C12)
    # {model: N}: N images of the model's set drawn with `seed` (the budget; null: every image)
    subset: dict[str, PositiveInt] | None
    batch_size: PositiveInt
    q_for_ties: ChannelPortion  # the q at which the summary counts float32 ties


@settings
class Checkerboard(Settings):
    strides: tuple[PositiveInt, ...]
    scales: tuple[Annotated[float, Range(gt=0)], ...]
    seed: Seed
    stride_on: Literal["both", "first", "second"]


@settings
class VarianceIdentity(Settings):
    seeds: PositiveInt
    gammas: tuple[Annotated[float, Range(gt=0)], ...]  # .inf: pruning


@settings
class ToysSettings(Settings):
    """E1 toy sums (C1), E7 checkerboard (C13), the variance identity (C2)."""

    toy_seed: Seed  # the authors' 21
    seeds: PositiveInt  # the seed sweep: seeds 0 … seeds − 1
    readings: tuple[Literal["code_uniform", "text_normal_std", "text_normal_var"], ...]
    checkerboard: Checkerboard
    variance_identity: VarianceIdentity


@settings
class VCSettings(Settings):
    """E2: zero pruning vs variance conservation (C4, C7)."""

    images: ImageCounts
    hooks: tuple[Hooks, ...]
    channel_portions: tuple[ChannelPortion, ...]
    cutoff: Annotated[float, Range(gt=0, lt=1.4142135623730951)]  # fraction of Nyquist
    panels: NonNegativeInt  # images kept as map panels


@settings
class QSweepSettings(Settings):
    """E0 panels and E6 channel-portion sweep (C3, C9)."""

    images: ImageCounts
    hooks: Hooks
    channel_portions: tuple[ChannelPortion, ...]
    panels: NonNegativeInt


@settings
class BaseMethodSettings(Settings):
    """Hyper-parameters of the base methods ParchGrad wraps."""

    ig_steps: PositiveInt  # intervals: the authors' IG sums steps + 1 points (trapezoid)
    smoothgrad_samples: PositiveInt
    noise_level: NonNegative


@settings
class FaithfulnessSettings(BaseMethodSettings):
    """E5: pixel removal (MoRF/LeRF AOPC, log-odds), Gini sparsity (C8)."""

    images: ImageCounts
    hooks: Hooks
    bases: tuple[Base, ...]
    channel_portions: tuple[ChannelPortion, ...]
    ratios: tuple[Probability, ...]  # fractions of pixels removed
    batch_size: PositiveInt  # copies scored per forward
    bootstrap_resamples: PositiveInt


@settings
class CostsSettings(BaseMethodSettings):
    """E3: the method comparison table with passes and seconds per map (C10)."""

    images: ImageCounts
    # Score-CAM / Ablation-CAM: one forward per channel (0: passes counted, not timed)
    perturbation_images: NonNegativeInt
    repeats: PositiveInt  # the other methods: the fastest of `repeats` timings
    paired_repeats: Annotated[int, Range(ge=2)]  # C10b: Gradient / ParchGrad timed alternately
    hooks: Hooks
    channel_portion: ChannelPortion


@settings
class StatisticsChecksSettings(Settings):
    """C11 (Shapiro fractions), C12 (the authors' statistics bug), dead channels."""

    images: ImageCounts
    bug_models: tuple[str, ...]  # each needs an image count above 0
    hooks: Hooks
    channel_portions: tuple[ChannelPortion, ...]  # C12
    channel_portion: ChannelPortion  # dead channels

    def __post_init__(self) -> None:
        uncounted = [m for m in self.bug_models if not self.images.get(m)]
        if uncounted:
            raise ConfigError(f"params.yaml parchgrad.statistics_checks.images has no count for "
                              f"the bug models {uncounted}: give each an image count above 0")


@settings
class BBoxSettings(Settings):
    """E4: box energy mu_in / mu_in_w (C5, C6); needs ILSVRC2012 validation and its boxes
    (datasets/ilsvrc2012_val/boxes.csv, prepared from the box archive in data/)."""

    images: ImageCounts
    hooks: tuple[Hooks, ...]
    channel_portions: tuple[ChannelPortion, ...]
    pairings: tuple[Literal["correct", "authors"], ...]  # authors: their index mismatch


@settings
class BBoxClaims(Settings):
    resnet: str  # C5's model
    effnet: str  # C6's model
    hooks: str  # a hooks label of the tables: default or r=<ratio>
    q: ChannelPortion


@settings
class ClaimsSettings(Settings):
    """Which rows of the tables each claim value is read from."""

    sequential_model: str  # C4
    skip_model: str  # C7
    skip_hooks: str  # C7: a hooks label (default or r=<ratio>)
    sweep_models: tuple[str, ...]  # C9: every model whose sweep must fall monotonically
    faithfulness_model: str  # C8
    faithfulness_q: ChannelPortion
    cost_model: str  # C10
    shapiro_model: str  # C11
    bug_model: str  # C12
    bbox: BBoxClaims  # C5, C6
    # The ImageNet architectures every ImageNet claim is also judged on (its per_model values);
    # those a profile does not run are skipped.
    architectures: tuple[str, ...]
    bootstrap_resamples: PositiveInt  # every claim's 95% interval


@settings
class ParchGrad(Settings):
    explainer: ExplainerSettings
    # Corrected (default) vs authors-compatible: authors_bug runs on the bug-compatible class
    # statistics; spatial_1x1 authors_abs is the authors' |S| on 1×1 maps.
    statistics_variant: Literal["corrected", "authors_bug"]
    shapiro_threshold: Probability | None  # the authors' filter keeps p < 0.05; null: off
    spatial_1x1: Literal["energy", "authors_abs"]
    models: dict[str, ModelEntry]
    statistics: StatisticsSettings
    toys: ToysSettings
    vc: VCSettings
    q_sweep: QSweepSettings
    faithfulness: FaithfulnessSettings
    costs: CostsSettings
    statistics_checks: StatisticsChecksSettings
    bbox: BBoxSettings
    claims: ClaimsSettings

    def __post_init__(self) -> None:
        named = {"statistics.models": self.statistics.models,
                 "claims.architectures": self.claims.architectures,
                 "claims.sweep_models": self.claims.sweep_models,
                 "statistics.subset": tuple(self.statistics.subset or {}),
                 "statistics_checks.bug_models": self.statistics_checks.bug_models}
        named.update({f"{key}.images": tuple(getattr(self, key).images) for key in
                      ("vc", "q_sweep", "faithfulness", "costs", "statistics_checks", "bbox")})
        for where, models in named.items():
            unknown = [m for m in models if m not in self.models]
            if unknown:
                raise ConfigError(f"params.yaml parchgrad.{where} names {unknown}, which "
                                  "parchgrad.models does not describe; it has "
                                  f"{sorted(self.models)}")


__all__ = ["Base", "BaseMethodSettings", "ChannelPortion", "Hooks", "ImageCounts", "ModelEntry",
           "ParchGrad"]
