"""The null calibration of App. B: real gradient-family maps of the original ImageNet model
against random masks, and masks against masks, computed (not copied); the table puts the
paper's numbers beside ours.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from replication.experiments.common import imagenet_card, stage_explainer
from replication.experiments.sanity_checks.setups import (CURVE_IMAGES, curve_set, image_source,
                                                          skip_unrun_model)
from replication.fileio import write_json, write_table
from replication.metrics.similarity import (CALIBRATION_METRICS, calibration_summary,
                                            null_calibration_values)
from replication.models import create_model
from replication.plotting import markdown_table
from replication.randomization.reinit import explained_classes

# App. B, as printed in the paper: (no-ABS, ABS, HOG, SSIM), the order of CALIBRATION_METRICS.
PAPER_CALIBRATION = {
    "gradient vs gaussian": (-0.00049, 0.00032, -0.0016, 0.00027),
    "integrated_gradients vs gaussian": (0.00084, 0.00059, 0.0048, 0.00018),
    "input_x_gradient vs gaussian": (0.00081, 0.00099, -0.0024, 0.00023),
    "uniform vs uniform": (0.00016, -0.0015, 0.078, 0.00076),
    "gaussian vs gaussian (rescaled)": (0.00018, 0.00043, -0.0013, 0.00023),
}


def run(ctx) -> None:
    """`sanity_calibration`: one ImageNet model's null calibration, per image (App. B: "50
    ImageNet validation images", the first of the paper's curve images)."""
    model = ctx.item["model"]
    if skip_unrun_model(ctx, model, ctx.settings("sanity_checks.imagenet.run_models")):
        return
    study = ctx.settings("sanity_checks.calibration").for_model(model)
    methods = ctx.settings("sanity_checks.imagenet.methods", model=model)
    card = imagenet_card(ctx, model)
    images = curve_set(ctx.input("images"), card, study.images)
    explainer = stage_explainer(ctx, ctx.settings("sanity_checks.imagenet.batch_size",
                                                  model=model))
    explainer.place(card)
    targets = explained_classes(card.model, images.images, ctx.settings("sanity_checks.target"),
                                images.labels)
    maps = {name: explainer(card, name, methods[name], images.images, targets)
            for name in study.methods}
    options = ctx.settings("sanity_checks.similarity.imagenet").options()
    del options["percentile"]  # the masks are compared raw
    table = null_calibration_values(maps, seed=ctx.settings("seed"), **options)
    table.insert(0, "model", card.name)
    write_table(table, ctx.output("table"))
    write_json(ctx.output("metrics"), {"model": card.name, **image_source(images),
                                       "methods": {m: methods[m] for m in study.methods},
                                       "seconds": ctx.seconds})


def cost(ctx) -> list:
    """One map per method and calibration image, and the explained classes."""
    from replication.cost import Cost, method_passes

    model = ctx.item["model"]
    if model not in ctx.settings("sanity_checks.imagenet.run_models"):
        return []
    study = ctx.settings("sanity_checks.calibration").for_model(model)
    methods = ctx.settings("sanity_checks.imagenet.methods", model=model)
    card = create_model(model, pretrained=False)
    images = min(study.images, CURVE_IMAGES)
    return [*(method_passes(card, name, methods[name], images) for name in study.methods),
            Cost(model, "explained classes", 0, images)]


# --- the table ----------------------------------------------------------------------------------

def calibration_table(values: pd.DataFrame) -> pd.DataFrame:
    """Ours (the per-image values summarized) beside App. B's numbers, one row per
    comparison."""
    rows = []
    for comparison, group in calibration_summary(values).groupby("comparison", sort=False):
        row = {"comparison": comparison, "images": int(group["n"].max())}
        for metric in CALIBRATION_METRICS:
            match = group[group["metric"] == metric]
            row[f"{metric} (ours)"] = float(match["mean"].iloc[0]) if len(match) else np.nan
        paper = PAPER_CALIBRATION.get(_paper_key(comparison))
        for metric, value in zip(CALIBRATION_METRICS, paper or (np.nan,) * 4):
            row[f"{metric} (paper)"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def _paper_key(comparison: str) -> str:
    text = comparison.lower()
    if "uniform" in text:
        return "uniform vs uniform"
    if text.count("gaussian") >= 2:
        return "gaussian vs gaussian (rescaled)"
    for method in ("integrated_gradients", "input_x_gradient", "gradient"):
        if method in text:
            return f"{method} vs gaussian"
    return comparison


def draw_table(context, values: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The App. B table: (the CSV's frame, the Markdown text)."""
    table = calibration_table(values)
    return table, ("Null calibration (App. B): real gradient-family maps of the original model "
                   f"vs random masks, and masks vs masks; {context.note}.\n\n"
                   + markdown_table(table))
