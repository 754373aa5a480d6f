"""The option study (the MPRT debates): cascading randomization of the ImageNet model under
each batch-norm option, compared under each map convention; the claims stage judges C1–C6 on
each combination (``claims.bn_study_verdicts``) and the table shows which verdicts survive.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from replication.experiments.common import stage_explainer
from replication.experiments.sanity_checks.model_randomization import run_randomization
from replication.experiments.sanity_checks.setups import imagenet_images
from replication.fileio import concat_tables, write_table
from replication.models import create_model
from replication.plotting import markdown_table

STUDY_METRICS = ("spearman_abs", "spearman_diverging")


def run(ctx) -> None:
    """`sanity_option_study`: results/sanity_checks/bn_study.csv."""
    study = ctx.settings("sanity_checks.bn_study")
    randomization = ctx.settings("sanity_checks.randomization")
    card = create_model(ctx.settings("sanity_checks.imagenet.model"))
    images = imagenet_images(ctx, card, study.images)
    configured = ctx.settings("sanity_checks.imagenet.methods")
    methods = {m: configured[m] for m in study.methods}
    base = ctx.settings("sanity_checks.similarity.imagenet")
    conventions = {f"percentile_{p}": dataclasses.replace(base, metrics=STUDY_METRICS,
                                                          percentile=p)
                   for p in study.percentiles}
    explainer = stage_explainer(ctx, ctx.settings("sanity_checks.imagenet.batch_size"))
    tables = []
    for batchnorm in study.batchnorm:
        options = dataclasses.replace(randomization, batchnorm=batchnorm)
        table, _ = run_randomization(card, images, methods, "cascading", options, conventions,
                                     explainer=explainer,
                                     target=ctx.settings("sanity_checks.target"))
        table.insert(0, "batchnorm", batchnorm)
        tables.append(table)
    write_table(concat_tables(tables), ctx.output("table"))


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
