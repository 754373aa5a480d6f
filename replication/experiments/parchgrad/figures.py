"""Every ParchGrad figure and table (``parchgrad_figures``), drawn from the stage tables and the
panel maps only, in the order of the notes' inventory (paper_notes/parchgrad.md §3).

``FIGURES`` lists each output: its file stem under figures/parchgrad/ (``{model}``: one per
model), the drawing function (in its experiment's module), the result tables it needs (it is
drawn when they exist), the panel maps it reads and the claims (claims/parchgrad.yaml) that
show it. Figures are PNG + PDF (``plotting.save_figure``), tables CSV + Markdown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replication import plotting
from replication.experiments.parchgrad import (bbox, costs, faithfulness, q_sweep,
                                               statistics_checks, toys, vc)
from replication.experiments.parchgrad.display import Sources
from replication.experiments.parchgrad.loading import read_results
from replication.fileio import atomic_directory, read_arrays

# The result folders (stage inputs) the figures are drawn from, and the panel maps.
RESULTS = ("toys", "vc", "q_sweep", "faithfulness", "costs", "statistics_checks", "bbox")
MAPS = ("vc_maps", "q_sweep_maps")


@dataclass(frozen=True)
class Figure:
    stem: str
    draw: Callable[[Sources, Path], list[Path]]
    tables: tuple[str, ...]
    maps: str | None = None  # the experiment whose panel maps it shows
    claims: tuple[str, ...] = ()


FIGURES = (
    Figure("e0_channel_portion_panels_{model}", q_sweep.draw_panels, ("e6_q_sweep",), "q_sweep"),
    Figure("e1_toy_vector_sum", toys.draw_vector_sum,
           ("e1_toy_sums", "e1_toy_vectors", "e1_toy_seed_sweep"),
           claims=("PG-C1", "PG-C1b", "PG-C1c")),
    Figure("e1_toy_summary", toys.draw_summary, ("e1_toy_summary",)),
    Figure("e2_zero_pruning_vs_vc_{model}", vc.draw_panels, ("e2_artifacts", "e2_pairs"), "vc",
           claims=("PG-C7",)),
    Figure("e2_artifacts", vc.draw_artifacts, ("e2_artifacts",)),
    Figure("e2_scale_invariance", vc.draw_scale_invariance, ("e2_artifacts", "e2_pairs"),
           claims=("PG-C4",)),
    Figure("e3_method_comparison", costs.draw_comparison, ("e3_costs",),
           claims=("PG-C10", "PG-C10b")),
    Figure("e4_bbox_energy", bbox.draw_energy, ("e4_bbox", "e4_bbox_status"),
           claims=("PG-C5", "PG-C5b", "PG-C6")),
    Figure("e5_pixel_removal", faithfulness.draw_pixel_removal, ("e5_curves",),
           claims=("PG-C8a", "PG-C8b")),
    Figure("e5_faithfulness_summary", faithfulness.draw_summary, ("e5_summary",),
           claims=("PG-C8c",)),
    Figure("e5_paired_comparisons", faithfulness.draw_paired, ("e5_paired",)),
    Figure("e6_channel_portion_sweep", q_sweep.draw_sweep, ("e6_q_sweep_summary",),
           claims=("PG-C3", "PG-C9")),
    Figure("e7_gradient_scale_checkerboard", toys.draw_checkerboard, ("e7_checkerboard",),
           claims=("PG-C13",)),
    Figure("s1_channel_statistics", statistics_checks.draw_statistics,
           ("s1_shapiro", "s1_bug_selection", "s1_bug_maps"), claims=("PG-C11", "PG-C12")),
    Figure("s1_dead_channels", statistics_checks.draw_dead_channels, ("s1_dead_channels",)),
)


def read_maps(path: Path) -> dict[str, np.ndarray]:
    """The panels of a maps file as float32 (stored float16); none when it is absent."""
    return {key: value.astype(np.float32)
            for key, value in read_arrays(path, missing="empty").items()}


def draw_all(sources: Sources, out: Path) -> list[Path]:
    """Every figure whose tables exist, in ``FIGURES`` order."""
    plotting.use_style()
    written: list[Path] = []
    for figure in FIGURES:
        if all(name in sources.tables for name in figure.tables):
            written += figure.draw(sources, out)
    return written


STAND_IN_STAMP = "stand-in weights: every number is meaningless"


def run(ctx) -> None:
    """Every figure; stamped when the run used stand-in weights (a dry run)."""
    sources = Sources(tables=read_results(ctx.input(name) for name in RESULTS),
                      maps={name.removesuffix("_maps"): read_maps(ctx.input(name))
                            for name in MAPS},
                      profile=ctx.settings("profile"))
    plotting.stamp_figures(STAND_IN_STAMP if ctx.settings("stand_in_weights") else None)
    try:
        with atomic_directory(ctx.output("out")) as out:
            draw_all(sources, out)
    finally:
        plotting.stamp_figures(None)
