"""The schema of params.yaml's `expected_gradcam` section (see replication.settings).

The base values are the paper profile's (VGG-16 and ResNet-50); ``quick`` and ``smoke`` state
what they change, and ``models: {name: {…}}`` holds a model's own overrides of the section
(``replication.config`` says which layer wins). Every choice here is ours [I]: the paper's values
are unknown [U]. The checks that need the engine or the metric registry (method parameters,
metric options) import them when a section is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from replication.config import PerModelSettings
from replication.errors import ConfigError
from replication.settings import (Count, NonNegative, NonNegativeInt, PositiveInt, Range, Seed,
                                  Settings, closest, convert, settings)

# A method entry's engine method is its ``method:`` key, else its own name, so one engine method
# can be configured twice (``expected_gradcam_layer: {method: expected_gradcam, …}``).
ENGINE_KEY = "method"
# Engine methods that draw references: ``references: data`` in their entry means the set D.
USES_REFERENCES = ("expected_gradcam", "expected_gradcam_pp")
# A metric entry's keys that are ours; the others are the metric function's keyword options.
METRIC_KEYS = ("images", "skip_methods", "function")


@settings
class Bootstrap(Settings):
    n_resamples: PositiveInt
    confidence: Annotated[float, Range(gt=0, lt=1)]
    alpha: Annotated[float, Range(gt=0, lt=1)]  # significance level of ``significantly_better``


@settings
class Claims(Settings):
    models: tuple[str, ...]             # a claim value is the least favourable over these models
    architectures: tuple[str, ...]      # each also judged alone (the report's per-model columns)
    method: str                         # the configured method judged as "Expected Grad-CAM"
    substitute_models: tuple[str, ...]  # C8's models


@settings
class ImageNetData(Settings):
    images: Count            # evaluated images: a seeded choice of the configured source
    reference_images: Count  # D: other images of the same source, disjoint from them


@settings
class MnistData(Settings):
    images: NonNegativeInt            # the first test images
    reference_images: NonNegativeInt  # D: training images from reference_offset
    reference_offset: NonNegativeInt


@settings
class Data(Settings):
    imagenet: ImageNetData
    mnist: MnistData


@dataclass(frozen=True)
class MetricSpec:
    """One configured metric: the registry entry, our keys and the function's options."""

    name: str
    metric: Any  # replication.metrics.faithfulness.Metric
    images: int | None
    skip_methods: tuple[str, ...]
    options: dict[str, Any]


def metric_spec(name: str, entry: Mapping[str, Any] | None, where: str) -> MetricSpec:
    """The metric ``name`` configured by ``entry``: its keys are ours (``METRIC_KEYS``) or the
    metric function's keyword options (an unknown key names the valid ones)."""
    from replication.metrics.faithfulness import get_metric

    entry = dict(entry or {})
    try:
        metric = get_metric(convert(str, entry.get("function", name), f"{where}.function"))
        images = convert(Count, entry.get("images"), f"{where}.images")
        skip = convert(tuple[str, ...], entry.get("skip_methods", []), f"{where}.skip_methods")
    except ConfigError as err:  # raised again by the section's check, which names the section
        raise ValueError(str(err).removeprefix("params.yaml ")) from None
    valid = [*METRIC_KEYS, *metric.options()]
    for key in entry:
        if key not in valid:
            raise ValueError(f"{where}.{key}: unknown option of {metric.fn.__name__}; "
                             f"{closest(key, valid)}")
    if entry.get("n_steps") is not None and entry.get("step") is not None:
        raise ValueError(f"{where} sets both n_steps ({entry['n_steps']}) and step "
                         f"({entry['step']}): they are alternatives; set the other to null")
    options = {k: v for k, v in entry.items() if k not in METRIC_KEYS}
    return MetricSpec(name, metric, images, skip, options)


def metric_specs(metrics: Mapping[str, Mapping[str, Any]], where: str) -> list[MetricSpec]:
    return [metric_spec(name, entry, f"{where}.{name}") for name, entry in metrics.items()]


@settings
class Comparison(Settings):
    """Exp. 1: every method × every metric, per image."""

    methods: tuple[str, ...]
    images: Count                    # maps, and the metrics without their own count
    method_images: dict[str, Count]  # a cap per method (the per-channel CAMs are costly)
    panel_images: NonNegativeInt     # raw maps kept for the qualitative figures
    metrics: dict[str, dict[str, Any]]  # name → our keys and the metric's keyword options

    def __post_init__(self) -> None:
        metric_specs(self.metrics, "metrics")

    def method_cap(self, method: str) -> int | None:
        """The images ``method`` runs on at most: its ``method_images``; none named, all."""
        return self.method_images[method] if method in self.method_images else None


@settings
class Saturation(Settings):
    """Exp. 2: internal saturation along the straight path and the top-k channel study."""

    method: str                  # the configured Expected Grad-CAM whose weights are ranked
    images: Count
    alphas: Annotated[int, Range(ge=2)]  # grid size on [0, 1]
    baselines: tuple[Literal["black", "data"], ...]
    data_draws: PositiveInt      # images of D per image for the data baseline
    threshold: Annotated[float, Range(ge=-1, le=1)]  # α* = min{α : s(α) ≥ threshold}
    fractions: tuple[Annotated[float, Range(gt=0, le=1)], ...]  # top-k channel fractions (none:
                                 # no top-k study)
    batch_size: PositiveInt


@settings
class Smoothing(Settings):
    """Exp. 3: σ sweep and M sweep of configured Expected Grad-CAMs."""

    methods: tuple[str, ...]
    sigmas: tuple[NonNegative, ...]
    images: Count
    panel_images: NonNegativeInt
    metrics: dict[str, dict[str, Any]]
    samples: tuple[PositiveInt, ...]  # the M values of the stability sweep
    stability_images: Count
    seeds: tuple[Seed, ...]           # two seeds whose maps are correlated

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("methods is empty: name at least one configured Expected Grad-CAM")
        if len(self.seeds) != 2 or self.seeds[0] == self.seeds[1]:
            raise ValueError(f"smoothing.seeds must be two different seeds; got {list(self.seeds)}")
        metric_specs(self.metrics, "metrics")


@settings
class Localisation(Settings):
    """Claim C7 (notes §4): the share of each map's energy inside the image's ILSVRC2012
    validation boxes, for the ground-truth class (our choice of metric [I])."""

    methods: tuple[str, ...]  # configured methods scored (C7 compares claims.method, Grad-CAM)
    images: Count             # the first evaluated images (all have boxes when any has)

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("methods is empty: name at least gradcam and the claim method")


BaselineKind = Literal["zeros", "black", "white", "blur", "uniform_noise", "data"]


@settings
class IntegratedGradCAMBaselines(Settings):
    baselines: tuple[BaselineKind, ...]  # its other parameters: methods.integrated_gradcam


@settings
class ReferenceChoice(Settings):
    """One reference configuration of Expected Grad-CAM: a pool of D (or a fixed baseline)."""

    pool: Literal["all", "first_half", "second_half", "black", "zeros", "input"]
    seed: Seed


@settings
class Baselines(Settings):
    """Exp. 4: how much maps change with the baseline parameter."""

    methods: tuple[str, ...]   # configured Expected Grad-CAMs compared with Integrated Grad-CAM
    images: Count
    blur_sigma: Annotated[float, Range(gt=0)]  # pixels
    integrated_gradcam: IntegratedGradCAMBaselines
    configs: dict[str, ReferenceChoice]  # each Expected Grad-CAM runs with each of these

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("methods is empty: name at least one configured Expected Grad-CAM")


@settings
class SpecialCases(Settings):
    """The reductions of notes §1.5 on real images (claim C9) and the completeness gaps."""

    images: Count
    n_samples: PositiveInt             # draws of the σ = 0, α = 1 reductions
    steps: PositiveInt                 # the α grid of the Integrated Grad-CAM reduction
    completeness_samples: PositiveInt
    completeness_pool: Count           # the first images of D for completeness_data
    diagnose: tuple[str, ...]          # configured methods compared with Grad-CAM(++)


@settings
class ExpectedGradCAM(PerModelSettings):
    run_models: tuple[str, ...]  # the models every stage explains, in this order
    threads: Annotated[int | None, Range(ge=1)]  # torch threads (null: torch's default)
    batch_size: PositiveInt          # images per batch of the Explainer
    metric_batch_size: PositiveInt   # perturbed copies per forward in the metrics
    internal_batch_size: PositiveInt  # model inputs per pass inside a method (its default)
    bootstrap: Bootstrap
    claims: Claims
    data: Data
    labels: dict[str, str]  # display names of configured variants (engine methods have theirs)
    methods: dict[str, dict[str, Any]]  # engine parameters of each configured method
    comparison: Comparison
    saturation: Saturation
    smoothing: Smoothing
    baselines: Baselines
    special_cases: SpecialCases
    localisation: Localisation
    models: dict[str, ExpectedGradCAM] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.run_models:
            raise ValueError("run_models is empty: name at least one model")
        for name, entry in self.methods.items():
            check_method(name, entry)
            if engine_name(name, entry) != name and name not in self.labels:
                raise ValueError(f"methods.{name} configures {engine_name(name, entry)!r}: give "
                                 f"it a display name in labels.{name}")
        named = {"comparison.methods": self.comparison.methods,
                 "comparison.method_images": tuple(self.comparison.method_images),
                 "labels": tuple(self.labels),
                 "smoothing.methods": self.smoothing.methods,
                 "baselines.methods": self.baselines.methods,
                 "saturation.method": (self.saturation.method,),
                 "special_cases.diagnose": self.special_cases.diagnose,
                 "localisation.methods": self.localisation.methods,
                 "claims.method": (self.claims.method,),
                 "baselines (Integrated Grad-CAM's parameters)": ("integrated_gradcam",)}
        for where, names in named.items():
            for name in names:
                if name not in self.methods:
                    raise ValueError(f"{where} names {name!r}, which methods does not configure; "
                                     f"{closest(name, list(self.methods))}")
        swept = {"smoothing.methods": self.smoothing.methods,
                 "baselines.methods": self.baselines.methods,
                 "saturation.method": (self.saturation.method,)}
        for where, names in swept.items():
            for name in names:
                if engine_name(name, self.methods[name]) not in USES_REFERENCES:
                    raise ValueError(f"{where}: {name!r} is not an Expected Grad-CAM method (its "
                                     f"engine method is {engine_name(name, self.methods[name])!r})")


def engine_name(name: str, entry: Mapping[str, Any] | None) -> str:
    """The engine method behind the configured method ``name``."""
    return str((entry or {}).get(ENGINE_KEY, name))


def engine_parameters(name: str, entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """The configured method's engine parameters (without ``method:``)."""
    return {k: v for k, v in (entry or {}).items() if k != ENGINE_KEY}


def check_method(name: str, entry: Mapping[str, Any] | None) -> None:
    """Every parameter of a configured method must be one of its engine method's."""
    from replication.attribution import method_parameters

    engine = engine_name(name, entry)
    try:
        valid = method_parameters(engine)
    except ConfigError as err:
        raise ValueError(f"methods.{name}: {err}") from None
    for key in engine_parameters(name, entry):
        if key not in valid:
            raise ValueError(f"methods.{name}.{key}: {engine} has no such parameter; "
                             f"{closest(key, list(valid))}")


__all__ = ["Baselines", "Bootstrap", "Claims", "Comparison", "Data", "ExpectedGradCAM",
           "ImageNetData", "Localisation", "MetricSpec", "MnistData", "ReferenceChoice", "Saturation",
           "Smoothing", "SpecialCases", "USES_REFERENCES", "check_method", "engine_name",
           "engine_parameters", "metric_spec", "metric_specs"]
