"""The schema of params.yaml: ``Params`` and the sections that are not a paper's.

Each paper's section class lives with its code (``replication.experiments.<paper>.settings``);
this module only assembles them. It imports no heavy library, so checking the file is quick.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from replication.config import PerModelSettings
from replication.data.fetch import Network
from replication.errors import ConfigError
from replication.experiments.expected_gradcam.settings import ExpectedGradCAM
from replication.experiments.parchgrad.settings import ParchGrad
from replication.experiments.sanity_checks.settings import SanityChecks
from replication.settings import (Count, NonNegative, NonNegativeInt, Positive, PositiveInt,
                                  Range, Seed, Settings, settings)

# Where stages run: "auto" picks CUDA when available, else the CPU.
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")


def check_device(value: str, where: str = "device") -> str:
    base, _, index = value.partition(":")
    if base not in DEVICE_NAMES or (index and not (base == "cuda" and index.isdigit())):
        raise ConfigError(f"params.yaml {where} is {value!r}; use one of {list(DEVICE_NAMES)} "
                          "or cuda:<index>")
    return value


@settings
class ArchiveDigests(Settings):
    """The SHA-256 every supplied ILSVRC2012 archive must have (the published digests; a dry
    run passes its synthetic archives' here). ``boxes: null``: no digest is published for the
    box archive, so it is checked for its content only."""

    val: str
    devkit: str
    boxes: str | None = None

    def __post_init__(self) -> None:
        for name in ("val", "devkit", "boxes"):
            value = getattr(self, name)
            if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef"
                                                               for c in value)):
                raise ConfigError(f"params.yaml data.ilsvrc2012.{name} is {value!r}; it must be a "
                                  "SHA-256: 64 lower-case hex digits")


@settings
class DataSettings(Settings):
    validation_size: Annotated[int, Range(ge=0, le=60_000)]
    network: Network
    ilsvrc2012: ArchiveDigests


@settings
class ImageNetSettings(Settings):
    source: Literal["sample", "ilsvrc2012_val"]
    models: tuple[str, ...]
    accuracy_images: Count


@settings
class TrainRun(Settings):
    """One training run of the data-randomization matrix (true or permuted labels). Its length
    is ``epochs`` passes over the training images or ``steps`` optimiser steps: set one, the
    other null."""

    epochs: Annotated[int | None, Range(ge=1)]
    steps: Annotated[int | None, Range(ge=1)] = None
    batch_size: PositiveInt
    lr: Positive
    subset: Annotated[int | None, Range(ge=1)] = None  # the first N of the 55,000 (null: all)
    schedule: Literal["constant", "cosine", "onecycle"] = "constant"
    warmup: Annotated[float, Range(gt=0, lt=1)] = 0.3  # onecycle: fraction of steps rising

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ConfigError(f"a training run is epochs or steps long: set one and the other to "
                              f"null (got epochs {self.epochs}, steps {self.steps})")


@settings
class TrainSettings(PerModelSettings):
    """The `train` section; ``models: {mnist_cnn | mnist_mlp: {…}}`` holds an architecture's
    own overrides (the quick profile trains the CNN and the MLP with different regimes)."""

    init: Literal["authors_code", "pytorch_default"]
    l2_penalty: NonNegative
    # Which weights the penalty covers: authors_code (CNN conv1, conv2, fc1; MLP none) |
    # paper_text (App. B's weight decay on both: the MLP's fc1-fc3 too); replication.training
    l2_layers: Literal["authors_code", "paper_text"]
    train_acc_images: Count  # train_acc scores the first N images trained on (null: all)
    true_labels: TrainRun
    random_labels: TrainRun
    models: dict[str, "TrainSettings"] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.models) - {"mnist_cnn", "mnist_mlp"})
        if unknown:
            raise ConfigError(f"params.yaml train.models names {unknown}; the trained models are "
                              "mnist_cnn and mnist_mlp")


@settings
class Params(Settings):
    profile: Literal["smoke", "quick", "paper"]
    seed: Seed
    device: str = "auto"
    # Replace pretrained weights that cannot be obtained by seeded random ones (dry runs of the
    # paper profile without internet). Every number is then meaningless, and every metrics
    # file, figure and the report say so. Never on by default.
    stand_in_weights: bool = False
    data: DataSettings
    imagenet: ImageNetSettings
    train: TrainSettings
    sanity_checks: SanityChecks
    parchgrad: ParchGrad
    expected_gradcam: ExpectedGradCAM

    def __post_init__(self) -> None:
        check_device(self.device)


__all__ = ["DataSettings", "ImageNetSettings", "NonNegativeInt", "Params", "TrainRun",
           "TrainSettings", "check_device"]
