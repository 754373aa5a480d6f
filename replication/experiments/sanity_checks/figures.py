"""Every figure of Sanity Checks for Saliency Maps (arXiv v3 numbering), drawn from the tables
and map renderings the stages wrote; plus the App. B calibration table, the option study and,
beyond the paper, the repaired randomization tests (``beyond_*``: ``repaired_mprt``).

``FIGURES`` is the inventory (paper_notes/sanity_checks.md §3 lists the same stems; a test
checks both and each claim's ``figure_file``): the file stem, the drawing function (in the
experiment's module), the sources it is drawn from, and the claims it shows. A source is
``<input>`` or ``<input>/<file>`` of the `sanity_figures` stage, ``{model}`` standing for the
primary ImageNet model (the first of ``sanity_checks.imagenet.run_models``); ``.csv`` sources arrive as
frames, ``.npz`` sources as dicts of arrays. A drawing function takes the figure's context
(``note``: the model note of every title; ``claims``: the figure's claims), the sources in
order and the entry's options, and returns a figure, a table ``(frame, markdown)`` written as
``<stem>.csv`` and ``<stem>.md``, or None when the profile's data cannot show it.

Every profile explains the paper's own images; where the primary model is not the paper's (the
quick profile runs EfficientNet-Lite0 instead of Inception v3), every title says so, and a run
on stand-in weights is stamped on every figure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replication.claims import Claim, read_claims
from replication.experiments.sanity_checks import (calibration, data_randomization,
                                                   model_randomization, one_layer_net,
                                                   option_study, repaired_mprt, toys)
from replication.fileio import (atomic_directory, atomic_write_text, read_arrays, read_table,
                                write_table)
from replication.models.imagenet import STAND_IN_NOTE
from replication.plotting import save_figure, stamp_figures, use_style
from replication.progress import progress

log = logging.getLogger("replication")

PAPER_MODEL = "inception_v3"
NOT_DRAWN = {
    "fig36": "Fig. 36 (AlexNet, cascading randomization of a 'perturbation method'): the paper "
             "gives no details of the method and AlexNet weights are not available offline.",
    "bone_age": "App. B's Inception v4 on RSNA bone-age radiographs: neither the data nor the "
                "model is public.",
}


@dataclass(frozen=True)
class Figure:
    stem: str
    draw: Callable[..., Any]
    sources: tuple[str, ...]
    claims: tuple[str, ...] = ()  # claim ids, or id families ("C11": C11-Gradient, …)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FigureContext:
    note: str            # the model, and the profile where it is not the paper's
    claims: list[Claim]  # the figure's claims


def _imagenet(mode: str) -> tuple[str, str]:
    return f"randomization/imagenet-{{model}}-{mode}.csv", f"maps/imagenet-{{model}}-{mode}.npz"


def _mnist(setup: str, mode: str) -> tuple[str, str]:
    return f"randomization/{setup}-{mode}.csv", f"maps/{setup}-{mode}.npz"


def _gallery(stem: str, mode: str, role: str, style: str, title: str,
             claims: tuple[str, ...] = ()) -> Figure:
    return Figure(stem, model_randomization.draw_imagenet_gallery, _imagenet(mode), claims,
                  {"role": role, "style": style, "title": title})


def _data(stem: str, setup: str, claim: str) -> Figure:
    number = int(stem[3:5])
    return Figure(stem, data_randomization.draw_true_vs_random,
                  (f"data_randomization/{setup}.csv", f"maps/{setup}-data.npz"), (claim,),
                  {"title": f"Fig. {number}"})


def _mnist_gallery(number: str, setup: str, mode: str, style: str) -> Figure:
    return Figure(f"fig{number}_{setup}_{mode}_{style}", model_randomization.draw_mnist_gallery,
                  _mnist(setup, mode), (), {"style": style, "title": f"Fig. {number}"})


REPAIRED_MPRT = ("repaired_mprt/mnist.csv", "repaired_mprt/imagenet.csv")  # beyond the paper
MNIST_CASCADING = tuple(f"randomization/{setup}-cascading.csv"
                        for setup in model_randomization.MNIST_TITLES)

FIGURES = (
    Figure("fig01_methods_and_edge_detector", model_randomization.draw_methods_and_edges,
           ("maps/imagenet-{model}-cascading.npz",)),
    _gallery("fig02_cascading_bird", "cascading", "bird", "grayscale",
             "Fig. 2 — cascading randomization", ("C4",)),
    _gallery("fig03_independent_bird", "independent", "bird", "grayscale",
             "Fig. 3 — independent randomization", ("C6",)),
    Figure("fig04_cascading_rank_correlation", model_randomization.draw_rank_correlation,
           ("randomization/imagenet-{model}-cascading.csv",
            "randomization/cnn-fashion_mnist-cascading.csv",
            "randomization/mlp-mnist-cascading.csv"), ("C1", "C2")),
    Figure("fig05_cascading_ssim_hog", model_randomization.draw_ssim_hog,
           ("randomization/imagenet-{model}-cascading.csv",), ("C2-SSIM",)),
    _data("fig06_data_randomization_cnn_mnist", "cnn-mnist", "C11"),
    Figure("fig07_one_layer_conv_net", one_layer_net.draw_one_layer_net, ("maps/toys.npz",),
           ("C18",)),
    Figure("fig08_guided_backprop_cascading", model_randomization.draw_guided_backprop,
           _imagenet("cascading"), (), {"style": "grayscale", "title": "Fig. 8"}),
    Figure("fig09_guided_backprop_cascading_diverging", model_randomization.draw_guided_backprop,
           _imagenet("cascading"), (), {"style": "diverging", "title": "Fig. 9"}),
    _gallery("fig10_cascading_bird_grayscale", "cascading", "bird", "grayscale",
             "Fig. 10 — cascading, bird, ABS"),
    _gallery("fig11_cascading_bird_diverging", "cascading", "bird", "diverging",
             "Fig. 11 — cascading, bird, diverging"),
    _gallery("fig12_independent_bird_diverging", "independent", "bird", "diverging",
             "Fig. 12 — independent, bird, diverging"),
    _gallery("fig13_cascading_dog_grayscale", "cascading", "dog", "grayscale",
             "Fig. 13 — cascading, dog, ABS"),
    _gallery("fig14_cascading_dog_diverging", "cascading", "dog", "diverging",
             "Fig. 14 — cascading, dog, diverging"),
    _gallery("fig15_independent_dog", "independent", "dog", "grayscale",
             "Fig. 15 — independent, dog"),
    _gallery("fig16_cascading_corn_grayscale", "cascading", "corn", "grayscale",
             "Fig. 16 — cascading, corn, ABS"),
    _gallery("fig17_cascading_corn_diverging", "cascading", "corn", "diverging",
             "Fig. 17 — cascading, corn, diverging"),
    _gallery("fig18_independent_corn", "independent", "corn", "grayscale",
             "Fig. 18 — independent, corn"),
    Figure("fig19_input_times_random_gradient", toys.draw_input_times_random,
           ("toys/input_times_random.csv",)),
    Figure("fig20_mnist_cascading", model_randomization.draw_mnist_curves, MNIST_CASCADING, (),
           {"title": "Fig. 20 — cascading randomization of the MNIST / Fashion-MNIST models"}),
    Figure("fig21_mnist_independent", model_randomization.draw_mnist_curves,
           ("randomization/cnn-mnist-independent.csv",
            "randomization/cnn-fashion_mnist-independent.csv"), (),
           {"title": "Fig. 21 — independent randomization of the MNIST / Fashion-MNIST CNNs"}),
    _data("fig22_data_randomization_cnn_mnist", "cnn-mnist", "C11"),
    _data("fig23_data_randomization_mlp_mnist", "mlp-mnist", "C13"),
    _data("fig24_data_randomization_cnn_fashion_mnist", "cnn-fashion_mnist", "C12"),
    _data("fig25_data_randomization_mlp_fashion_mnist", "mlp-fashion_mnist", "C13F"),
    _mnist_gallery("26", "cnn-fashion_mnist", "cascading", "grayscale"),
    _mnist_gallery("27", "cnn-fashion_mnist", "cascading", "diverging"),
    _mnist_gallery("28", "cnn-fashion_mnist", "independent", "grayscale"),
    _mnist_gallery("29", "cnn-fashion_mnist", "independent", "diverging"),
    _mnist_gallery("30", "cnn-mnist", "cascading", "grayscale"),
    _mnist_gallery("31", "cnn-mnist", "cascading", "diverging"),
    _mnist_gallery("32", "cnn-mnist", "independent", "grayscale"),
    _mnist_gallery("33", "cnn-mnist", "independent", "diverging"),
    _mnist_gallery("34", "mlp-mnist", "cascading", "diverging"),
    _mnist_gallery("34b", "mlp-mnist", "cascading", "grayscale"),
    _mnist_gallery("35", "mlp-fashion_mnist", "cascading", "diverging"),
    _mnist_gallery("35b", "mlp-fashion_mnist", "cascading", "grayscale"),
    Figure("fig37_one_layer_conv_net", one_layer_net.draw_one_layer_net_grayscale,
           ("maps/toys.npz",)),
    Figure("table_calibration", calibration.draw_table, ("calibration/{model}.csv",), ("C7",)),
    Figure("table_option_study", option_study.draw_table, ("verdicts",)),
    Figure("beyond_repaired_mprt_rankings", repaired_mprt.draw_rankings, REPAIRED_MPRT),
    Figure("beyond_repaired_mprt_table", repaired_mprt.draw_table, REPAIRED_MPRT),
    Figure("table_border_diagnostic", data_randomization.draw_border_table,
           tuple(f"data_randomization/{setup}.csv" for setup in model_randomization.MNIST_TITLES),
           ("C13", "C13F")),
    Figure("table_seed_spread", data_randomization.draw_seed_spread, ("seed_spread",),
           ("C11", "C12", "C13", "C13F")),
)


def model_note(model: str, profile: str) -> str:
    if model == PAPER_MODEL:
        return "Inception v3"
    return f"{model} ({profile} profile; the paper: Inception v3)"


def of_family(claim_id: str, families: tuple[str, ...]) -> bool:
    return any(claim_id == f or claim_id.startswith(f + "-") for f in families)


def run(ctx) -> None:
    """`sanity_figures`: every figure and table of ``FIGURES``, then NOT_DRAWN.md."""
    use_style()
    model = ctx.settings("sanity_checks.imagenet.run_models")[0]
    note = model_note(model, ctx.settings("profile"))
    stand_in = ctx.settings("stand_in_weights")
    if stand_in:
        note += f"; {STAND_IN_NOTE}"
    claims = read_claims(ctx.input("claims"))
    stamp_figures(STAND_IN_NOTE if stand_in else None)
    try:
        _draw_all(ctx, model, note, claims)
    finally:
        stamp_figures(None)


def _draw_all(ctx, model: str, note: str, claims: list[Claim]) -> None:
    with atomic_directory(ctx.output("out")) as out:
        for figure in progress(FIGURES, "sanity_figures", unit="figure"):
            paths = [_source_path(ctx, source.format(model=model)) for source in figure.sources]
            missing = [str(p) for p in paths if not p.exists()]
            if missing:
                log.warning("%s: not drawn, %s missing", figure.stem, ", ".join(missing))
                continue
            context = FigureContext(note, [c for c in claims if of_family(c.id, figure.claims)])
            drawn = figure.draw(context, *map(_load, paths), **figure.options)
            if drawn is None:
                log.warning("%s: the profile's data cannot show it; not drawn", figure.stem)
            elif isinstance(drawn, tuple):
                frame, markdown = drawn
                write_table(frame, out / f"{figure.stem}.csv")
                atomic_write_text(out / f"{figure.stem}.md", markdown)
            else:
                save_figure(drawn, out / figure.stem)
        atomic_write_text(out / "NOT_DRAWN.md", "Figures this repository cannot draw:\n\n"
                          + "".join(f"- {text}\n" for text in NOT_DRAWN.values()))


def _source_path(ctx, source: str) -> Path:
    name, _, file = source.partition("/")
    return ctx.input(name) / file if file else ctx.input(name)


def _load(path: Path) -> Any:
    return read_arrays(path) if path.suffix == ".npz" else read_table(path)
