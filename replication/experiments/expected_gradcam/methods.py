"""The configured methods and metrics every experiment uses: ``expected_gradcam.methods`` built
into engine methods, and the experiments' ``metrics`` scored per image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor, nn

from replication.attribution import Attribution, create_method, postprocess
from replication.errors import ConfigError
from replication.experiments.expected_gradcam.loading import Loaded, count
from replication.experiments.expected_gradcam.settings import (USES_REFERENCES, MetricSpec,
                                                               engine_name, engine_parameters)
from replication.models.base import ModelCard

# The gradient-weighted CAMs among which claim C3 ranks Expected Grad-CAM's infidelity.
GRADIENT_CAMS = ("gradcam", "gradcam_pp", "smooth_gradcam_pp", "integrated_gradcam", "xgradcam",
                 "layercam", "hirescam", "expected_gradcam")
REFERENCE_METHOD = "gradcam"


def configured_methods(ctx, model: str) -> dict[str, dict[str, Any]]:
    """``expected_gradcam.methods`` for ``model``, each entry with the section's
    ``internal_batch_size`` unless it sets its own (every configured method is a CAM, which
    takes one): on a GPU, many model inputs per pass."""
    batch = ctx.settings("expected_gradcam.internal_batch_size", model=model)
    return {name: {"internal_batch_size": batch, **entry}
            for name, entry in ctx.settings("expected_gradcam.methods", model=model).items()}


def build_method(card: ModelCard | nn.Module, name: str, entry: Mapping[str, Any] | None,
                 references: Tensor | None) -> Attribution:
    """The configured method ``name`` (its entry of ``methods``, possibly changed by the
    experiment). For Expected Grad-CAM(++), ``references: data`` (the default) is the reference
    set D; other values ('black', 'zeros', 'input', a tensor) go to the engine."""
    params = engine_parameters(name, entry)
    engine = engine_name(name, entry)
    if engine in USES_REFERENCES:
        chosen = params.pop("references", "data")
        if isinstance(chosen, str) and chosen == "data":
            if references is None:
                raise ConfigError(f"{name} needs the reference set D (references: data)")
            chosen = references
        params["references"] = chosen
    return create_method(engine, card, **params)


def upsampled(maps: Tensor, images: Tensor) -> Tensor:
    """Layer-resolution maps bilinearly upsampled to the images (what the metrics see)."""
    return postprocess.upsample(maps, tuple(images.shape[-2:]))


def metric_rows(loaded: Loaded, method: str, attribution: Attribution, specs: list[MetricSpec],
                x: Tensor, targets: Tensor, maps: Tensor, *, seed: int,
                batch_size: int) -> list[dict]:
    """One row (model, method, image, metric, value) per configured metric and image, on the
    first images of ``x`` each metric scores (its ``images``). ``maps`` are ``attribution``'s
    of ``x`` at input resolution; the stage's seed and batch size unless a metric sets its own."""

    def explain(batch: Tensor, batch_targets: Tensor) -> Tensor:
        return upsampled(attribution.attribute(batch, batch_targets), batch)

    rows = []
    for spec in specs:
        n = count(spec.images, len(x))
        if method in spec.skip_methods or n == 0:
            continue
        options = dict(spec.options)
        for key, value in (("seed", seed), ("batch_size", batch_size)):
            if key in spec.metric.options():
                options.setdefault(key, value)
        values = np.asarray(spec.metric(model=loaded.card.model, inputs=x[:n], targets=targets[:n],
                                        maps=maps[:n], explain=explain, **options),
                            dtype=np.float64)
        rows += [{"model": loaded.card.name, "method": method, "image": loaded.images.names[i],
                  "metric": spec.name, "value": float(v)} for i, v in enumerate(values)]
    return rows
