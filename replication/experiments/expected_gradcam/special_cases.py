"""The reductions of notes §1.5 measured on real images (claim C9) and the layer-EG
completeness gaps; their table. Raw coarse maps, the engine called directly: exactness, not
batching, is under test.

- ``gradcam``: Expected Grad-CAM (D, σ = 0, α = 1) vs Grad-CAM;
- ``integrated_gradcam``: Expected Grad-CAM (black baseline, σ = 0, α grid of ``steps``) vs
  Integrated Grad-CAM (``form="path_weights"``, black baseline, same steps);
- ``gradcam_pp``: Expected Grad-CAM++ (ours; σ = 0, α = 1) vs Grad-CAM++;
- ``configured:<name>`` for each name in ``diagnose``: the configured method (its own
  parameters) vs Grad-CAM (Grad-CAM++ for Expected Grad-CAM++), a diagnostic: ≈ 0 means it
  coincides with that CAM on this model (e.g. ``eg_weights`` when the layer is followed by
  global pooling and a linear head, where ∂y_c/∂A is the same at every input);
- ``completeness_black``: layer-EG, black baseline, σ = 0, α grid: Σ Φ vs y_c(x) − y_c(x');
- ``completeness_data``: layer-EG, D (its first ``completeness_pool`` images), σ = 0,
  α ~ U(0, 1): Σ Φ vs y_c(x) − mean_D y_c(x') (Monte-Carlo error included).

``difference`` is max |a − b| per image (|Σ Φ − Δy| for completeness), ``scale`` max |b|
(|Δy|), ``relative`` their ratio. The completeness gaps are approximate by construction (the
path is straight in input space, not at the layer; notes §1.5 item 5) and are reported, not
required to vanish. Reduction 3 (SmoothGrad-CAM) needs the engine's own noise draws and is
covered by the engine's tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from replication.attribution import Attribution, create_method
from replication.experiments.expected_gradcam.drawing import Table, View
from replication.experiments.expected_gradcam.loading import (Loaded, count, run_models,
                                                              seconds_since)
from replication.experiments.expected_gradcam.methods import build_method, configured_methods
from replication.experiments.expected_gradcam.settings import SpecialCases, engine_name
from replication.fileio import concat_tables, json_safe, write_json, write_table

REDUCTION_CASES = ("gradcam", "integrated_gradcam", "gradcam_pp")
COLUMNS = ["model", "case", "image", "difference", "scale", "relative"]


@torch.no_grad()
def logits_of(model: nn.Module, inputs: Tensor, batch_size: int = 64) -> Tensor:
    return torch.cat([model(inputs[i:i + batch_size]).double()
                      for i in range(0, len(inputs), batch_size)])


def method_pairs(loaded: Loaded, settings: SpecialCases, methods: Mapping[str, Any],
                 batch: int) -> dict[str, tuple[Attribution, Attribution]]:
    """Each case: (our method, the CAM it should reduce to); ``batch`` model inputs per pass."""
    card, references = loaded.card, loaded.references.images
    reduce = {"sigma": 0.0, "alpha": 1.0, "n_samples": settings.n_samples,
              "internal_batch_size": batch}
    pairs = {
        "gradcam": (build_method(card, "expected_gradcam", reduce, references),
                    create_method("gradcam", card)),
        "integrated_gradcam": (
            build_method(card, "expected_gradcam", {"references": "black", "sigma": 0.0,
                                                    "alpha": "grid", "n_samples": settings.steps,
                                                    "internal_batch_size": batch}, references),
            create_method("integrated_gradcam", card, steps=settings.steps, baseline="black",
                          form="path_weights", internal_batch_size=batch)),
        "gradcam_pp": (build_method(card, "expected_gradcam_pp", reduce, references),
                       create_method("gradcam_pp", card)),
    }
    for name in settings.diagnose:
        base = "gradcam_pp" if engine_name(name, methods[name]) == "expected_gradcam_pp" else "gradcam"
        pairs[f"configured:{name}"] = (build_method(card, name, methods[name], references),
                                       create_method(base, card))
    return pairs


def special_cases(loaded: Loaded, settings: SpecialCases, methods: Mapping[str, Any],
                  batch: int) -> pd.DataFrame:
    """Every case of the module docstring on the first ``settings.images`` images, ``batch``
    model inputs per pass inside the methods."""
    card = loaded.card
    model = card.model.eval()
    x, targets = loaded.first(settings.images)
    rows = []
    if not len(x):  # a count of 0: not run on this model
        return pd.DataFrame(rows, columns=COLUMNS)

    def add(case: str, difference: Tensor, scale: Tensor) -> None:
        for i in range(len(x)):
            d, s = float(difference[i]), float(scale[i])
            rows.append({"model": card.name, "case": case, "image": loaded.images.names[i],
                         "difference": d, "scale": s, "relative": d / max(s, 1e-12)})

    for case, (ours, theirs) in method_pairs(loaded, settings, methods, batch).items():
        a, b = ours.attribute(x, targets).double(), theirs.attribute(x, targets).double()
        add(case, (a - b).abs().flatten(1).amax(1), b.abs().flatten(1).amax(1))
    on_device = targets.to(x.device)
    y = logits_of(model, x).gather(1, on_device[:, None]).squeeze(1)
    layer_eg = {"variant": "layer_eg", "relu": False, "sigma": 0.0,
                "n_samples": settings.completeness_samples, "internal_batch_size": batch}
    black = build_method(card, "expected_gradcam",
                         {**layer_eg, "references": "black", "alpha": "grid"}, None)
    total = black.attribute(x, targets).double().flatten(1).sum(1)
    y_black = logits_of(model, card.preprocessing.normalize(torch.zeros_like(x[:1])))[0, on_device]
    add("completeness_black", (total - (y - y_black)).abs(), (y - y_black).abs())
    references = loaded.references.images
    pool = references[:count(settings.completeness_pool, len(references))]
    if len(pool):
        data = build_method(card, "expected_gradcam", {**layer_eg, "alpha": "uniform"}, pool)
        total = data.attribute(x, targets).double().flatten(1).sum(1)
        y_pool = logits_of(model, pool)[:, on_device].mean(0)
        add("completeness_data", (total - (y - y_pool)).abs(), (y - y_pool).abs())
    return pd.DataFrame(rows, columns=COLUMNS)


def run(ctx) -> None:
    """The egc_special_cases stage: the reductions on real images and the completeness gaps."""
    tables, summary = [], {"models": {}}
    for loaded in run_models(ctx):
        start = ctx.seconds
        table = special_cases(loaded,
                              ctx.settings("expected_gradcam.special_cases", model=loaded.name),
                              configured_methods(ctx, loaded.name),
                              ctx.settings("expected_gradcam.internal_batch_size",
                                           model=loaded.name))
        tables.append(table)
        summary["models"][loaded.name] = {
            **loaded.description, "seconds": seconds_since(ctx, start, "special_cases", loaded),
            "max_relative": table.groupby("case")["relative"].max().to_dict()}
    write_table(concat_tables(tables), ctx.output("special_cases"))
    write_json(ctx.output("metrics"), json_safe(summary))


def special_table(special: pd.DataFrame, view: View) -> Table:
    frame = (special.groupby(["model", "case"], sort=False)
             .agg(n=("image", "size"), max_difference=("difference", "max"),
                  max_relative=("relative", "max"), median_relative=("relative", "median"))
             .reset_index())
    return Table(frame, "Special cases on real images")
