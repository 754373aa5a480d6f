"""The option study (the MPRT debates): cascading randomization of the ImageNet model under
each batch-norm option, compared under each map convention; the claims stage judges C1–C6 on
each combination (``claims.bn_study_verdicts``) and the table shows which verdicts survive.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from replication.experiments.common import imagenet_card, stage_explainer
from replication.experiments.sanity_checks.model_randomization import run_randomization
from replication.experiments.sanity_checks.setups import CURVE_IMAGES, curve_set, image_source
from replication.fileio import concat_tables, write_json, write_table
from replication.models import create_model
from replication.plotting import markdown_table

STUDY_METRICS = ("spearman_abs", "spearman_diverging")


def run(ctx) -> None:
    """`sanity_option_study`: results/sanity_checks/bn_study.csv, on the primary ImageNet model
    (the first of ``run_models``; the option study is a table of point estimates, not a claim,
    so the other architectures do not pay for it)."""
    study = ctx.settings("sanity_checks.bn_study")
    randomization = ctx.settings("sanity_checks.randomization")
    model = ctx.settings("sanity_checks.imagenet.run_models")[0]
    card = imagenet_card(ctx, model)
    images = curve_set(ctx.input("images"), card, study.images)
    configured = ctx.settings("sanity_checks.imagenet.methods", model=model)
    methods = {m: configured[m] for m in study.methods}
    base = ctx.settings("sanity_checks.similarity.imagenet")
    conventions = {f"percentile_{p}": dataclasses.replace(base, metrics=STUDY_METRICS,
                                                          percentile=p)
                   for p in study.percentiles}
    explainer = stage_explainer(ctx, ctx.settings("sanity_checks.imagenet.batch_size",
                                                  model=model))
    tables = []
    for batchnorm in study.batchnorm:
        options = dataclasses.replace(randomization, batchnorm=batchnorm)
        table, _ = run_randomization(card, images, methods, "cascading", options, conventions,
                                     explainer=explainer,
                                     target=ctx.settings("sanity_checks.target"))
        table.insert(0, "batchnorm", batchnorm)
        tables.append(table)
    write_table(concat_tables(tables), ctx.output("table"))
    write_json(ctx.output("metrics"), {"model": card.name, **image_source(images),
                                       "batchnorm": list(study.batchnorm), "methods": methods,
                                       "seconds": ctx.seconds})


def cost(ctx) -> list:
    """Cascading randomization under each batch-norm option: every method's maps at every
    stage, and the explained classes."""
    from replication.cost import Cost, method_passes

    study = ctx.settings("sanity_checks.bn_study")
    model = ctx.settings("sanity_checks.imagenet.run_models")[0]
    methods = ctx.settings("sanity_checks.imagenet.methods", model=model)
    card = create_model(model, pretrained=False)
    images, runs = min(study.images, CURVE_IMAGES), len(study.batchnorm)
    stages = len(card.randomization_blocks) + 1
    costs = [method_passes(card, m, methods[m], images) for m in study.methods]
    costs.append(Cost(model, "explained classes", 0, images))
    return [Cost(c.model, f"{c.what} × {stages} stages × {runs} options",
                 c.forward_backward * stages * runs, c.forward * stages * runs) for c in costs]


def draw_table(context, verdicts: pd.DataFrame) -> tuple[pd.DataFrame, str] | None:
    """Each claim's value and verdict per (batch-norm option, convention): (the CSV's frame,
    the Markdown text)."""
    if not len(verdicts):
        return None
    wide = verdicts.assign(cell=verdicts.apply(
        lambda r: f"{r['value']:.3g} ({'✓' if r['verdict'] == 'reproduced' else '✗'})", axis=1)
    ).pivot_table(index="claim", columns=["batchnorm", "convention"], values="cell",
                  aggfunc="first")
    wide.columns = [f"{b} / {c}" for b, c in wide.columns]
    wide = wide.reset_index()
    return verdicts, ("How the model-randomization verdicts move with the batch-norm handling "
                      "and the map convention (value, ✓ = the claim holds); "
                      f"{context.note}.\n\n" + markdown_table(wide))
