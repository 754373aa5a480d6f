"""Figures and tables of figures/expected_gradcam/: the ``FIGURES`` table drives the
egc_figures stage, each entry drawn from the stage tables only.

Numbered in the order of the paper's abstract (saturation, baseline sensitivity, faithfulness,
robustness, infidelity, complexity, substitute, qualitative) after the hero panel, as listed in
paper_notes/expected_gradcam.md §3 (a test keeps the two, and each claim's ``figure_file``, in
step). To add a figure: a drawing function beside its experiment and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replication import plotting
from replication.experiments.expected_gradcam import (baselines, comparison, localisation,
                                                      saturation, smoothing, special_cases)
from replication.experiments.expected_gradcam.claims import directions_of
from replication.experiments.expected_gradcam.drawing import Table, View, panel_models, profile_note
from replication.fileio import atomic_directory, read_arrays, read_table


@dataclass(frozen=True)
class Figure:
    """One figure (.png, .pdf) or table (.csv, .md) of figures/expected_gradcam/.

    ``draw(*sources, view)`` gets the egc_figures inputs named by ``sources`` (tables, or the
    arrays of an .npz) and returns a figure, a ``Table`` or None (nothing to draw). A stem with
    ``{model}`` is drawn once per model of its first source (an .npz of panels), with
    ``model=``. The entry is skipped when a source is missing or empty.
    """

    stem: str
    draw: Callable[..., Any]
    sources: tuple[str, ...]
    claims: tuple[str, ...] = ()  # the claims (claims/expected_gradcam.yaml ids) it shows


FIGURES = [
    Figure("fig01_qualitative_{model}", comparison.qualitative_figure, ("panels",)),
    Figure("fig02_internal_saturation", saturation.saturation_figure, ("curves", "alpha_star"),
           ("EGC-C1",)),
    Figure("fig03_saturation_topk_channels", saturation.topk_figure, ("topk", "alpha_star"),
           ("EGC-C1",)),
    Figure("fig04_baseline_sensitivity", baselines.baseline_figure, ("pairs",), ("EGC-C6",)),
    Figure("fig05_insertion_deletion", comparison.insertion_deletion_figure, ("summary",),
           ("EGC-C2",)),
    Figure("fig06_infidelity", comparison.infidelity_figure, ("summary",), ("EGC-C3",)),
    Figure("fig07_max_sensitivity", comparison.max_sensitivity_figure, ("summary",),
           ("EGC-C4",)),
    Figure("fig08_road_complexity", comparison.road_complexity_figure, ("summary",),
           ("EGC-C2",)),
    Figure("fig09_noise_levels_{model}", smoothing.noise_figure, ("sigma_panels",), ("EGC-C5",)),
    Figure("fig10_complexity_vs_sigma", smoothing.sigma_figure, ("sigma_sweep",), ("EGC-C5",)),
    Figure("fig11_samples_stability", smoothing.stability_figure, ("stability",)),
    Figure("fig12_raw_coarse_maps_{model}", comparison.raw_maps_figure, ("panels",)),
    Figure("table01_comparison", comparison.comparison_table, ("summary",),
           ("EGC-C2", "EGC-C3", "EGC-C4")),
    Figure("table02_saturation", saturation.saturation_table, ("alpha_star", "topk"),
           ("EGC-C1",)),
    Figure("table03_baseline_sensitivity", baselines.baseline_table, ("pairs",), ("EGC-C6",)),
    Figure("table04_sigma_sweep", smoothing.sigma_table, ("sigma_sweep",), ("EGC-C5",)),
    Figure("table05_samples_stability", smoothing.stability_table, ("stability",)),
    Figure("table06_expected_gradcam_pp", comparison.expected_gradcam_pp_table, ("scores",),
           ("EGC-C8",)),
    Figure("table07_special_cases", special_cases.special_table, ("special_cases",),
           ("EGC-C9",)),
    Figure("table08_localisation", localisation.localisation_table, ("localisation",),
           ("EGC-C7",)),
]


def read_sources(paths: Mapping[str, Path]) -> dict[str, Any]:
    """Each input: a table (.csv) or the arrays of an .npz; empty when missing."""
    return {name: read_arrays(path, missing="empty") if path.suffix == ".npz"
            else read_table(path, missing="empty") for name, path in paths.items()}


def tables_note(summary: Any, profile: str) -> str:
    models = sorted(set(summary["model"])) if len(summary) else []
    return (f"Our measurements {profile_note(models, profile)}; the paper's numbers are not "
            "available (its body is not public), so no paper column.")


def draw_figures(sources: Mapping[str, Any], view: View, folder: Path) -> list[Path]:
    """Every entry of ``FIGURES`` whose sources have data, written to ``folder``."""
    plotting.use_style()
    written: list[Path] = []
    for entry in FIGURES:
        inputs = [sources[name] for name in entry.sources]
        if any(not len(table) for table in inputs):
            continue
        per_model = "{model}" in entry.stem
        for model in panel_models(inputs[0]) if per_model else [None]:
            drawn = entry.draw(*inputs, view, **({"model": model} if per_model else {}))
            stem = folder / entry.stem.format(model=model)
            if isinstance(drawn, Table):
                note = view.note if drawn.note is None else drawn.note
                written += plotting.write_table(drawn.frame, stem, drawn.title, note)
            elif drawn is not None:
                written += plotting.save_figure(drawn, stem)
    return written


def run(ctx) -> None:
    """The egc_figures stage: every figure and table of figures/expected_gradcam/."""
    sources = read_sources({name: ctx.input(name) for name in ctx.stage.deps})
    profile = ctx.settings("profile")
    view = View(profile, ctx.settings("expected_gradcam.labels"),
                ctx.settings("expected_gradcam.bootstrap"), ctx.settings("seed"),
                directions_of(sources["summary"]), tables_note(sources["summary"], profile))
    if ctx.settings("stand_in_weights"):
        plotting.stamp_figures("stand-in weights: every number is meaningless")
    with atomic_directory(ctx.output("figures")) as folder:
        draw_figures(sources, view, folder)
