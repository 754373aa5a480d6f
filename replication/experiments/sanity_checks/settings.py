"""The schema of params.yaml's ``sanity_checks`` section (see ``replication.settings``).

Base values are the paper's (the authors' code where the paper is silent); paper_notes/
sanity_checks.md names every deviation. Method parameters are checked against the attribution
engine's registry, which is imported only when a section is built, so importing this module
stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

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
class Gallery(Settings):
    """The paper's demo images (Fig. 1–3, 10–18), by ImageNet image source."""

    ilsvrc2012_val: tuple[str, ...]
    sample: tuple[str, ...]


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
class ImageNetExperiment(Settings):
    model: str
    images: Count            # null: every image; ILSVRC2012 val: `per_class` of each class
    classes: tuple[str, ...]
    per_class: PositiveInt
    gallery: Gallery
    guided_backprop_examples: NonNegativeInt  # Fig. 8–9
    independent: Independent
    batch_size: PositiveInt
    methods: Methods

    def __post_init__(self) -> None:
        from replication.models import available_models

        if self.model not in available_models():
            raise ConfigError(f"params.yaml sanity_checks.imagenet.model is {self.model!r}; "
                              f"choose one of {available_models()}")
        check_methods(self.methods, "sanity_checks.imagenet.methods")
        if self.guided_backprop_examples and "guided_backprop" not in self.methods:
            raise ConfigError("params.yaml sanity_checks.imagenet.guided_backprop_examples needs "
                              "guided_backprop among the methods (or set it to 0)")


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
class Calibration(Settings):
    images: NonNegativeInt
    methods: tuple[str, ...]  # of sanity_checks.imagenet.methods


@settings
class BnStudy(Settings):
    batchnorm: tuple[BatchNorm, ...]
    percentiles: tuple[Percentile, ...]
    methods: tuple[str, ...]  # of sanity_checks.imagenet.methods
    images: NonNegativeInt


@settings
class Toys(Settings):
    image: str                       # a file of the ImageNet sample
    filter_seeds: PositiveInt        # random 3×3 filters of the one-layer conv net
    noise_scales: tuple[NonNegative, ...]
    noise_locations: tuple[float, ...]
    imagenet_images: NonNegativeInt
    fashion_images: NonNegativeInt


@settings
class SanityChecks(Settings):
    target: Literal["predicted", "label"]  # the explained class (predicted: the authors')
    randomization: RandomizationOptions
    similarity: SimilarityByMaps
    imagenet: ImageNetExperiment
    mnist: MnistExperiment
    data_randomization: DataRandomization
    training_seeds: TrainingSeeds
    bootstrap_resamples: PositiveInt  # the claims' bootstrap intervals (data randomization)
    calibration: Calibration
    bn_study: BnStudy
    toys: Toys

    def __post_init__(self) -> None:
        for key, study in (("calibration", self.calibration), ("bn_study", self.bn_study)):
            missing = [m for m in study.methods if m not in self.imagenet.methods]
            if missing:
                raise ConfigError(f"params.yaml sanity_checks.{key}.methods names {missing}, "
                                  "which sanity_checks.imagenet.methods does not configure; "
                                  f"choose from {list(self.imagenet.methods)}")


__all__ = ["BnStudy", "Calibration",
           "DataRandomization", "Gallery", "ImageNetExperiment", "Independent",
           "MnistExperiment", "SanityChecks", "SimilarityByMaps",
           "SimilaritySettings", "Toys", "TrainingSeeds", "check_methods"]
