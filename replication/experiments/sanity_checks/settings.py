"""The schema of params.yaml's ``sanity_checks`` section (see ``replication.settings``).

Base values are the paper's (the authors' code where the paper is silent); paper_notes/
sanity_checks.md names every deviation. Method parameters are checked against the attribution
engine's registry, which is imported only when a section is built, so importing this module
stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Annotated, Any, Literal

from replication.config import PerModelSettings
from replication.errors import ConfigError
from replication.randomization import BatchNorm, RandomizationOptions
from replication.settings import (Count, NonNegative, NonNegativeInt, Positive, PositiveInt,
                                  Range, Seed, Settings, settings)

# A map's visualisation: the papers' percentile clipping (99), or null: |E|/max|E| (MNIST).
Percentile = Annotated[float | None, Range(gt=0, le=100)]
Methods = dict[str, dict[str, Any]]  # engine method name -> its parameters


@settings
class SimilaritySettings(Settings):
    """The similarity metrics of one kind of map and the map convention they compare."""

    metrics: tuple[str, ...]
    percentile: Percentile
    ssim_data_range: Positive = 2.0  # the authors' skimage call had the float default 2
    hog_correlation: Literal["spearman", "pearson"] = "spearman"  # the authors' code

    def __post_init__(self) -> None:
        from replication.metrics.similarity import SIMILARITY_METRICS

        unknown = [m for m in self.metrics if m not in SIMILARITY_METRICS]
        if unknown or not self.metrics:
            raise ConfigError(f"similarity metrics {list(self.metrics)}: choose one or more of "
                              f"{sorted(SIMILARITY_METRICS)}")

    def options(self) -> dict:
        """The keyword options of ``metrics.similarity.compare``."""
        return {"percentile": self.percentile, "data_range": self.ssim_data_range,
                "correlation": self.hog_correlation}


@settings
class SimilarityByMaps(Settings):
    imagenet: SimilaritySettings  # 3-D maps: the papers' 99th-percentile visualisations
    mnist: SimilaritySettings     # 2-D maps: |E|/max|E| and E/max|E|, no clipping


@settings
class Independent(Settings):
    images: Annotated[int | None, Range(ge=1)]  # the first N of the setup's images (null: all)


@settings
class ImageNetIndependent(Independent):
    """Independent randomization of an ImageNet model: the first ``images`` curve images, and
    per method the first ``method_images[method]`` of them (a method not named: all)."""

    method_images: dict[str, NonNegativeInt]


def check_methods(methods: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Every method is an engine method and every parameter one it takes."""
    from replication.attribution import method_parameters

    for name, params in methods.items():
        try:
            valid = method_parameters(name)
        except ConfigError as err:
            raise ConfigError(f"params.yaml {where}.{name}: {err}") from None
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ConfigError(f"params.yaml {where}.{name}: {name} has no parameter "
                              f"{', '.join(map(repr, unknown))}; its parameters are "
                              f"{sorted(valid)}")


@settings
class ImageNetExperiment(PerModelSettings):
    """The ImageNet model-randomization experiment, run on each of ``run_models`` (the first is
    the primary model: its values are the claims' values, the others are reported beside
    them). It explains the paper's own images (the ``sanity_images`` stage): its demo images
    (bird, dog, corn) for the galleries, and the first ``images`` of its 200 curve images,
    taken round-robin over the authors' 10 classes so that every prefix stays balanced."""

    run_models: tuple[str, ...]
    demos: tuple[Literal["bird", "dog", "corn"], ...]  # the gallery images (Fig. 1–3, 10–18)
    images: Annotated[int | None, Range(ge=1)]  # curve images (null: all 200)
    method_images: dict[str, NonNegativeInt]    # method -> its first N curve images (≤ images)
    guided_backprop_examples: NonNegativeInt    # Fig. 8–9: the first N curve images
    independent: ImageNetIndependent
    batch_size: PositiveInt
    methods: Methods
    models: dict[str, "ImageNetExperiment"] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from replication.experiments.sanity_checks.stages import IMAGENET_MODELS

        unknown = [m for m in self.run_models if m not in IMAGENET_MODELS]
        if unknown or not self.run_models or len(set(self.run_models)) < len(self.run_models):
            raise ConfigError(f"params.yaml sanity_checks.imagenet.run_models is "
                              f"{list(self.run_models)}; name each model once, from "
                              f"{list(IMAGENET_MODELS)} (the stages' model matrix)")
        check_methods(self.methods, "sanity_checks.imagenet.methods")
        for key, caps in (("method_images", self.method_images),
                          ("independent.method_images", self.independent.method_images)):
            extra = [m for m in caps if m not in self.methods]
            if extra:
                raise ConfigError(f"params.yaml sanity_checks.imagenet.{key} names {extra}, "
                                  "which sanity_checks.imagenet.methods does not configure; "
                                  f"choose from {list(self.methods)}")
        if self.guided_backprop_examples and "guided_backprop" not in self.methods:
            raise ConfigError("params.yaml sanity_checks.imagenet.guided_backprop_examples needs "
                              "guided_backprop among the methods (or set it to 0)")

    @property
    def primary(self) -> str:
        return self.run_models[0]

    def curve_images(self, mode: str) -> int | None:
        """How many curve images a mode explains (None: all)."""
        return self.images if mode == "cascading" else self.independent.images

    def method_counts(self, mode: str, available: int) -> dict[str, int]:
        """Method -> how many of ``available`` curve images it explains in ``mode``."""
        caps = self.method_images if mode == "cascading" else self.independent.method_images
        return {m: min(available, caps.get(m, available)) for m in self.methods}


@settings
class MnistExperiment(Settings):
    images: NonNegativeInt   # the first test images
    independent: Independent
    batch_size: PositiveInt
    methods: Methods         # the MLPs skip the CAMs (they have no convolution)

    def __post_init__(self) -> None:
        check_methods(self.methods, "sanity_checks.mnist.methods")


@settings
class DataRandomization(Settings):
    images: NonNegativeInt   # the first test images
    example_class: Annotated[int, Range(ge=0, le=9)]  # the class of the example panels
    batch_size: PositiveInt


@settings
class TrainingSeeds(Settings):
    """The data-randomization pairs retrained with further training seeds (issue 14 §4)."""

    seeds: PositiveInt                       # training seeds in all: `seed`, `seed` + 1, …
    archs: tuple[Literal["cnn", "mlp"], ...]  # the architectures whose pairs are retrained


@settings
class Calibration(PerModelSettings):
    """App. B's null calibration on each ImageNet model: the first ``images`` curve images."""

    images: PositiveInt
    methods: tuple[str, ...]  # of sanity_checks.imagenet.methods
    models: dict[str, "Calibration"] = field(default_factory=dict)


@settings
class BnStudy(Settings):
    batchnorm: tuple[BatchNorm, ...]
    percentiles: tuple[Percentile, ...]
    methods: tuple[str, ...]  # of sanity_checks.imagenet.methods
    images: PositiveInt       # the first N curve images, on the primary ImageNet model


@settings
class Toys(Settings):
    """Fig. 7 explains the paper's bird; Fig. 19 the first curve images and Fashion-MNIST."""

    filter_seeds: PositiveInt        # random 3×3 filters of the one-layer conv net
    noise_scales: tuple[NonNegative, ...]
    noise_locations: tuple[float, ...]
    imagenet_images: NonNegativeInt
    fashion_images: NonNegativeInt


# --- beyond the paper: the repaired model-randomization tests (repaired_mprt.py) ---------------

MnistSetup = Literal["cnn-mnist", "mlp-mnist", "cnn-fashion_mnist", "mlp-fashion_mnist"]


@settings
class SmoothMprt(Settings):
    """Smooth MPRT (Hedström et al. 2023; Quantus ``SmoothMPRT``)."""

    noise_magnitude: NonNegative  # σ = magnitude · (max − min) of each image (Quantus: 0.1)
    layer_order: Literal["bottom_up", "top_down"]  # Quantus's sMPRT: bottom_up (input first)
    skip: tuple[str, ...]  # methods sMPRT does not explain (already noise-averaged ones)


@settings
class EfficientMprt(Settings):
    """Efficient MPRT (Hedström et al. 2023; Quantus ``EfficientMPRT``)."""

    n_bins: PositiveInt  # equal-width bins of a map's histogram (Quantus: 100)


@settings
class RepairedMnist(Settings):
    setups: tuple[MnistSetup, ...]
    images: PositiveInt       # the first test images
    methods: tuple[str, ...]  # of sanity_checks.mnist.methods (with their parameters)
    nr_samples: PositiveInt   # sMPRT: copies per map, the clean image included (1: plain MPRT)
    batch_size: PositiveInt   # images per engine call (sMPRT: copies included)


@settings
class RepairedImageNet(Settings):
    models: tuple[str, ...]
    images_from: Literal["paper", "sample"]  # paper: the authors' 200 curve images
    images: PositiveInt       # a seeded choice of that many
    methods: tuple[str, ...]  # of sanity_checks.imagenet.methods (with their parameters)
    nr_samples: PositiveInt
    batch_size: PositiveInt

    def __post_init__(self) -> None:
        from replication.models import available_models

        unknown = [m for m in self.models if m not in available_models()]
        if unknown or not self.models:
            raise ConfigError(f"params.yaml sanity_checks.repaired_mprt.imagenet.models is "
                              f"{list(self.models)}; choose one or more of {available_models()}")


@settings
class RepairedMprt(Settings):
    """The paper's MPRT beside sMPRT and eMPRT, per setup (beyond the paper)."""

    score: Literal["mean", "last"]  # MPRT / sMPRT per image: mean over the randomised layers
                                    # (Quantus's average correlation) | the last (all randomised)
    maps: Literal["input", "raw"]   # what sMPRT / eMPRT compare: one channel at the input's
                                    # resolution (quantus.explain's maps) | the engine's raw maps
    smprt: SmoothMprt
    emprt: EfficientMprt
    mnist: RepairedMnist
    imagenet: RepairedImageNet

    def check(self, mnist_methods: Methods, imagenet_methods: Methods) -> None:
        """Every method is one the paper's setups configure; ``smprt.skip`` names methods."""
        check_methods({name: {} for name in self.smprt.skip}, "sanity_checks.repaired_mprt.smprt.skip")
        for key, chosen, configured in (("mnist", self.mnist.methods, mnist_methods),
                                        ("imagenet", self.imagenet.methods, imagenet_methods)):
            missing = [m for m in chosen if m not in configured]
            if missing or not chosen:
                raise ConfigError(f"params.yaml sanity_checks.repaired_mprt.{key}.methods is "
                                  f"{list(chosen)}: choose one or more of sanity_checks.{key}."
                                  f"methods, {list(configured)}")
        if not self.mnist.setups:
            raise ConfigError("params.yaml sanity_checks.repaired_mprt.mnist.setups is empty; "
                              f"choose one or more of {list(MnistSetup.__args__)}")


@settings
class Bootstrap(Settings):
    n_resamples: PositiveInt
    confidence: Annotated[float, Range(gt=0, lt=1)]


@settings
class ClaimsSettings(Settings):
    """The claims' intervals: each claim's whole statistic bootstrapped over its images."""

    bootstrap: Bootstrap


@settings
class SanityChecks(Settings):
    target: Literal["predicted", "label"]  # the explained class (predicted: the authors')
    randomization: RandomizationOptions
    similarity: SimilarityByMaps
    imagenet: ImageNetExperiment
    mnist: MnistExperiment
    data_randomization: DataRandomization
    training_seeds: TrainingSeeds
    calibration: Calibration
    bn_study: BnStudy
    toys: Toys
    repaired_mprt: RepairedMprt  # beyond the paper
    claims: ClaimsSettings

    def __post_init__(self) -> None:
        self.repaired_mprt.check(self.mnist.methods, self.imagenet.methods)
        for key, study in (("calibration", self.calibration), ("bn_study", self.bn_study)):
            missing = [m for m in study.methods if m not in self.imagenet.methods]
            if missing:
                raise ConfigError(f"params.yaml sanity_checks.{key}.methods names {missing}, "
                                  "which sanity_checks.imagenet.methods does not configure; "
                                  f"choose from {list(self.imagenet.methods)}")


__all__ = ["BnStudy", "Bootstrap", "Calibration", "ClaimsSettings",
           "DataRandomization", "EfficientMprt", "ImageNetExperiment",
           "ImageNetIndependent", "Independent", "MnistExperiment", "RepairedImageNet",
           "RepairedMnist", "RepairedMprt", "SanityChecks", "SimilarityByMaps",
           "SimilaritySettings", "SmoothMprt", "Toys", "TrainingSeeds", "check_methods"]
