"""What each Expected Grad-CAM stage costs before it runs (``python -m replication cost``): the
model passes its settings imply, per model and piece of work. Maps are counted with the engine's
own ``passes()``; metrics with the forwards each scores per image (insertion and deletion: one
per point of the curve; infidelity: one per perturbation plus the clean input; ROAD: one per
percentage plus the clean input; max-sensitivity: the method's passes for each perturbed input
and the clean one). Nothing is computed; the cards are built without weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from replication.cost import Cost
from replication.experiments.expected_gradcam.loading import MNIST_ARCHS, count
from replication.experiments.expected_gradcam.methods import configured_methods
from replication.experiments.expected_gradcam.settings import (USES_REFERENCES, MetricSpec,
                                                               engine_name, engine_parameters,
                                                               metric_specs)
from replication.models import ModelCard, create_model

ILSVRC2012_VAL_IMAGES = 50_000  # an ImageNet image count of null: every validation image


def _cards(ctx) -> Iterator[tuple[ModelCard, int]]:
    """Each model of ``run_models`` (random weights) and the images it evaluates."""
    for name in ctx.settings("expected_gradcam.run_models"):
        data = ctx.settings("expected_gradcam.data", model=name)
        if name in MNIST_ARCHS:
            yield create_model(name), data.mnist.images
        else:
            images = data.imagenet.images
            yield (create_model(name, pretrained=False),
                   ILSVRC2012_VAL_IMAGES if images is None else images)


def passes(card: ModelCard, name: str, entry: Mapping[str, Any] | None) -> tuple[int, int]:
    """(forward+backward, forward) passes of one map of the configured method ``name``."""
    from replication.attribution import create_method

    params = engine_parameters(name, entry)
    if engine_name(name, entry) in USES_REFERENCES:
        params["references"] = "zeros"  # the count does not depend on D
    counted = create_method(engine_name(name, entry), card, **params).passes()
    return counted.forward_backward, counted.forward + counted.head


def metric_forwards(spec: MetricSpec, card: ModelCard) -> int:
    """Forwards one image costs ``spec`` (max-sensitivity: the explanations it re-runs)."""
    from replication.metrics.faithfulness import pixel_counts

    options, name = spec.options, spec.metric.fn.__name__
    size = card.preprocessing.input_size
    if name in ("insertion", "deletion"):
        return len(pixel_counts(size * size, options.get("n_steps"), options.get("step")))
    if name == "infidelity":
        if options.get("perturbation", "patches") == "patches":
            return 1 + (size // options.get("patch_size", 4)) ** 2
        return 1 + options.get("n_samples", 10)
    if name in ("road_morf", "road_lerf"):
        return 1 + len(options.get("percentages", range(10, 100, 10)))
    if name == "max_sensitivity":
        return 1 + options.get("n_samples", 10)
    return 0


def scored(card: ModelCard, method: str, entry: Mapping[str, Any] | None,
           specs: list[MetricSpec], images: int, what: str) -> list[Cost]:
    """The maps of ``images`` images and every metric of ``specs`` on its images."""
    fb, f = passes(card, method, entry)
    costs = [Cost(card.name, f"{what}: {method} maps", fb * images, f * images)]
    for spec in specs:
        n = count(spec.images, images)
        if method in spec.skip_methods or not n:
            continue
        per_image = metric_forwards(spec, card)
        if spec.metric.fn.__name__ == "max_sensitivity":
            costs.append(Cost(card.name, f"{what}: {method} {spec.name}", fb * per_image * n,
                              f * per_image * n))
        elif per_image:
            costs.append(Cost(card.name, f"{what}: {method} {spec.name}", 0, per_image * n))
    return costs


def comparison_cost(ctx) -> list[Cost]:
    costs = []
    for card, available in _cards(ctx):
        settings = ctx.settings("expected_gradcam.comparison", model=card.name)
        methods = configured_methods(ctx, card.name)
        images = count(settings.images, available)
        specs = metric_specs(settings.metrics, "comparison.metrics")
        for method in settings.methods:
            n = count(settings.method_cap(method), images)
            if n:
                costs += scored(card, method, methods[method], specs, n, "comparison")
    return costs


def saturation_cost(ctx) -> list[Cost]:
    costs = []
    for card, available in _cards(ctx):
        settings = ctx.settings("expected_gradcam.saturation", model=card.name)
        methods = configured_methods(ctx, card.name)
        n = count(settings.images, available)
        paths = sum(1 if kind == "black" else settings.data_draws for kind in settings.baselines)
        costs.append(Cost(card.name, "saturation: paths", 0, n * paths * settings.alphas))
        for method in ("gradcam", settings.method):
            fb, f = passes(card, method, methods.get(method))
            costs.append(Cost(card.name, f"saturation: top-k of {method}", fb * n,
                              (f + len(settings.fractions)) * n))
    return costs


def smoothing_cost(ctx) -> list[Cost]:
    costs = []
    for card, available in _cards(ctx):
        settings = ctx.settings("expected_gradcam.smoothing", model=card.name)
        methods = configured_methods(ctx, card.name)
        n, stable = count(settings.images, available), count(settings.stability_images, available)
        specs = metric_specs(settings.metrics, "smoothing.metrics")
        for method in settings.methods:
            for sigma in settings.sigmas:
                costs += scored(card, method, methods[method], specs, n, f"σ = {sigma:g}")
            for samples in settings.samples:
                fb, f = passes(card, method, {**methods[method], "n_samples": samples})
                runs = len(settings.seeds) * stable
                costs.append(Cost(card.name, f"stability: {method} M = {samples}", fb * runs,
                                  f * runs))
    return costs


def baselines_cost(ctx) -> list[Cost]:
    costs = []
    for card, available in _cards(ctx):
        settings = ctx.settings("expected_gradcam.baselines", model=card.name)
        methods = configured_methods(ctx, card.name)
        n = count(settings.images, available)
        runs = {"integrated_gradcam": len(settings.integrated_gradcam.baselines)}
        runs.update({name: len(settings.configs) for name in settings.methods})
        for method, times in runs.items():
            fb, f = passes(card, method, methods[method])
            costs.append(Cost(card.name, f"baselines: {method}", fb * n * times, f * n * times))
    return costs


def special_cases_cost(ctx) -> list[Cost]:
    costs = []
    for card, available in _cards(ctx):
        settings = ctx.settings("expected_gradcam.special_cases", model=card.name)
        methods = configured_methods(ctx, card.name)
        n = count(settings.images, available)
        draws = {"sigma": 0.0, "alpha": 1.0, "n_samples": settings.n_samples}
        layer_eg = {"variant": "layer_eg", "n_samples": settings.completeness_samples}
        pairs = [("expected_gradcam", draws), ("gradcam", {}),
                 ("expected_gradcam", {"alpha": "grid", "n_samples": settings.steps}),
                 ("integrated_gradcam", {"steps": settings.steps, "form": "path_weights"}),
                 ("expected_gradcam_pp", draws), ("gradcam_pp", {}),
                 ("expected_gradcam", layer_eg), ("expected_gradcam", layer_eg)]
        pairs += [(name, methods[name]) for name in settings.diagnose]
        pairs += [("gradcam", {}) for _ in settings.diagnose]
        counted = [passes(card, name, entry) for name, entry in pairs]
        pool = count(settings.completeness_pool, available)  # its logits, once
        costs.append(Cost(card.name, "special cases", n * sum(fb for fb, _ in counted),
                          n * (sum(f for _, f in counted) + 1) + 1 + pool))
    return costs


def localisation_cost(ctx) -> list[Cost]:
    if ctx.settings("imagenet.source") != "ilsvrc2012_val":
        return []  # no boxes: the stage scores nothing
    costs = []
    for card, available in _cards(ctx):
        if card.name in MNIST_ARCHS:
            continue
        settings = ctx.settings("expected_gradcam.localisation", model=card.name)
        methods = configured_methods(ctx, card.name)
        n = count(settings.images, available)
        for method in settings.methods:
            fb, f = passes(card, method, methods[method])
            costs.append(Cost(card.name, f"localisation: {method}", fb * n, f * n))
    return costs
