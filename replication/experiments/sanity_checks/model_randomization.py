"""Model-parameter randomization: maps of a model whose blocks are re-initialised, compared with
the original model's maps (Sanity Checks §4; Fig. 1–5, 8–18, 20, 21, 26–35).

Every stage's maps explain the class the authors' code explains: the argmax of the *current*
model (option: the true label). Maps are compared with the original model's maps of the same
images by the similarity metrics; one tidy row per (stage, method, metric, image). The figures
label methods as the engine does (the paper's "Gradient-SG" is SmoothGrad).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from skimage.filters import sobel
from torch import Tensor

from replication.attribution import method_label, postprocess
from replication.experiments.common import (Explainer, ImageSet, imagenet_card, mnist_set,
                                            stage_explainer, trained_mnist_model)
from replication.experiments.sanity_checks.settings import MnistExperiment, SimilaritySettings
from replication.randomization import RandomizationOptions
from replication.randomization.reinit import (cascading, explained_classes, independent,
                                              stage_card)
from replication.experiments.sanity_checks.setups import (CURVE_IMAGES, curve_set, demo_set,
                                                          image_source, joined,
                                                          methods_for, skip_unrun_model)
from replication.fileio import write_json, write_npz, write_table
from replication.metrics.similarity import compare
from replication.models import ModelCard, create_model
from replication.plotting import ABS_CMAP, DIVERGING_CMAP, HEAT_CMAP, curves, gallery
from replication.progress import progress

MODES = ("cascading", "independent")
CONVENTION = "authors_code"  # the rows' convention name when one convention is compared
MNIST_TITLES = {"cnn-mnist": "CNN – MNIST", "cnn-fashion_mnist": "CNN – Fashion-MNIST",
                "mlp-mnist": "MLP – MNIST", "mlp-fashion_mnist": "MLP – Fashion-MNIST"}
FIG1_METHODS = ("gradient", "smoothgrad", "guided_backprop", "guided_gradcam",
                "integrated_gradients", "ig_smoothgrad", "input_x_gradient")
RANK_LIMITS = {"spearman_abs": (-0.25, 1.2), "spearman_diverging": (-0.25, 1.2)}
METRIC_LABELS = {"spearman_abs": "Rank correlation (ABS)",
                 "spearman_diverging": "Rank correlation (no ABS)", "ssim": "SSIM",
                 "hog": "HOG similarity"}


def visualisations(maps: Tensor, percentile: float | None) -> dict[str, np.ndarray]:
    """The two map renderings of the paper's figures, (N, H, W) float16."""
    return {"grayscale": postprocess.grayscale(maps, percentile)[:, 0].numpy().astype(np.float16),
            "diverging": postprocess.diverging(maps, percentile)[:, 0].numpy().astype(np.float16)}


def _rows(values: dict[str, np.ndarray], **fields) -> list[dict]:
    return [{**fields, "metric": metric, "image": image, "value": float(value)}
            for metric, per_image in values.items() for image, value in enumerate(per_image)]


def explain_all(explainer: Explainer, card: ModelCard, images: ImageSet, targets: Tensor,
                methods: dict[str, dict], counts: Mapping[str, int]) -> dict[str, Tensor]:
    """Each method's maps of its first ``counts[method]`` images."""
    return {name: explainer(card, name, params, images.images[:counts[name]],
                            targets[:counts[name]])
            for name, params in methods.items() if counts[name]}


def run_randomization(card: ModelCard, images: ImageSet, methods: dict[str, dict], mode: str,
                      options: RandomizationOptions,
                      similarity: SimilaritySettings | Mapping[str, SimilaritySettings], *,
                      explainer: Explainer, target: str = "predicted",
                      gallery: Sequence[int] = (), gallery_methods: Iterable[str] | None = None,
                      method_images: Mapping[str, int] | None = None,
                      ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Similarity of every stage's maps to the original maps, and the gallery renderings.

    ``similarity`` may map several convention names to settings (each row names its
    ``convention``; one settings object is named ``authors_code``); the galleries use the
    first. ``method_images`` limits a method to the first N images (default: all); the
    explained-class rows cover every image. ``gallery`` are indices into ``images`` whose maps
    are kept (for the paper's galleries), for ``gallery_methods`` (default: all). Returns the
    tidy table and a dict of arrays keyed ``"<stage index>/<method>/<grayscale|diverging>"``
    plus ``"images"``.
    """
    conventions = ({CONVENTION: similarity} if isinstance(similarity, SimilaritySettings)
                   else dict(similarity))
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    counts = {m: min(len(images), (method_images or {}).get(m, len(images))) for m in methods}
    gallery = list(gallery)
    kept = {m for m in (methods if gallery_methods is None else gallery_methods)
            if counts.get(m, 0) > max(gallery, default=-1)}
    explainer.place(card)
    original_targets = explained_classes(card.model, images.images, target, images.labels)
    reference = explain_all(explainer, card, images, original_targets, methods, counts)
    arrays: dict[str, np.ndarray] = {}
    rows: list[dict] = []

    def record(stage_index: int, stage_label: str, maps: dict[str, Tensor], targets: Tensor) -> None:
        changed = (targets != original_targets).cpu().numpy()
        for name, stage_maps in maps.items():
            for convention, settings in conventions.items():
                values = compare(reference[name], stage_maps, settings.metrics, **settings.options())
                rows.extend(_rows(values, mode=mode, stage_index=stage_index, stage=stage_label,
                                  method=name, convention=convention))
            if gallery and name in kept:
                percentile = next(iter(conventions.values())).percentile
                for style, array in visualisations(stage_maps[gallery], percentile).items():
                    arrays[f"{stage_index}/{name}/{style}"] = array
        rows.extend({"mode": mode, "stage_index": stage_index, "stage": stage_label,
                     "method": "", "convention": "", "metric": "explained_class_changed",
                     "image": i, "value": float(c)} for i, c in enumerate(changed))

    stages = (cascading if mode == "cascading" else independent)(card, options)
    if mode == "independent":  # the original is the reference of every independent stage
        record(0, "Original", reference, original_targets)
    # stages are yielded one at a time (cascading randomizes one model further), never listed
    total = len(card.randomization_blocks) + (mode == "cascading")
    for stage in progress(stages, f"{card.name} {mode}", total=total, unit="layer"):
        if stage.label == "Original":
            record(stage.index, stage.label, reference, original_targets)
            continue
        targets = explained_classes(stage.model, images.images, target, images.labels)
        index = stage.index if mode == "cascading" else stage.index + 1
        record(index, stage.label, explain_all(explainer, stage_card(card, stage), images,
                                               targets, methods, counts), targets)
    if gallery:
        pixels = card.preprocessing.denormalize(images.images[gallery]).clamp(0, 1)
        arrays["images"] = pixels.permute(0, 2, 3, 1).numpy().astype(np.float16)
    table = pd.DataFrame(rows, columns=["mode", "stage_index", "stage", "method", "convention",
                                        "metric", "image", "value"])
    table.insert(0, "model", card.name)
    return table, arrays


def summarize_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and population SD over images (ddof 0, the authors' np.std), NaNs counted."""
    keys = [k for k in ("model", "mode", "stage_index", "stage", "method", "convention", "metric")
            if k in table.columns]
    grouped = table.groupby(keys, sort=False, dropna=False)["value"]
    summary = grouped.agg(mean="mean", sd=lambda v: float(np.nanstd(v.to_numpy())),
                          n=lambda v: int(v.notna().sum()), n_nan=lambda v: int(v.isna().sum()))
    return summary.reset_index()


# --- the stages ---------------------------------------------------------------------------------

def run_imagenet(ctx) -> None:
    """`sanity_imagenet_randomization`: one ImageNet model, cascading or independent, on the
    paper's images: its demo images (every method, for the galleries; not in the table) and the
    first N of its curve images (each method on its own first N, ``method_images``)."""
    model, mode = ctx.item["model"], ctx.item["mode"]
    section = ctx.settings("sanity_checks.imagenet").for_model(model)
    if skip_unrun_model(ctx, model, section.run_models):
        return
    card = imagenet_card(ctx, model)
    demos = demo_set(ctx.input("images"), card, section.demos)
    measured = curve_set(ctx.input("images"), card, section.curve_images(mode))
    images = joined(demos, measured)
    counts = {m: len(demos) + n for m, n in section.method_counts(mode, len(measured)).items()}
    options = ctx.settings("sanity_checks.randomization")
    target = ctx.settings("sanity_checks.target")
    similarity = ctx.settings("sanity_checks.similarity.imagenet")
    explainer = stage_explainer(ctx, section.batch_size)
    table, arrays = run_randomization(card, images, section.methods, mode, options, similarity,
                                      explainer=explainer, target=target,
                                      gallery=range(len(demos)), method_images=counts)
    table = table[table["image"] >= len(demos)].assign(image=lambda t: t["image"] - len(demos))
    examples = min(section.guided_backprop_examples, len(measured))
    if mode == "cascading" and examples:
        _, extra = run_randomization(card, measured.subset(range(examples)),
                                     {"guided_backprop": section.methods["guided_backprop"]},
                                     mode, options, similarity, explainer=explainer,
                                     target=target, gallery=range(examples))
        arrays.update({f"examples/{key}": value for key, value in extra.items()})
    _write_outputs(ctx, f"imagenet-{model}", card, table,
                   {**arrays, "image_names": np.array(demos.names),
                    "demo_roles": np.array(section.demos)},
                   {**image_source(measured), "demo_images": demos.names,
                    "method_images": {m: n - len(demos) for m, n in counts.items()},
                    "methods": section.methods})


def run_mnist(ctx) -> None:
    """`sanity_mnist_randomization`: one MNIST / Fashion-MNIST model, cascading or independent."""
    arch, dataset = ctx.item["arch"], ctx.item["dataset"]
    section = ctx.settings("sanity_checks.mnist")
    card = trained_mnist_model(ctx.input("model"), arch)
    images = mnist_set(ctx.input("data"), section.images)
    _randomization_stage(ctx, f"{arch}-{dataset}", card, images,
                         methods_for(arch, section.methods), section,
                         ctx.settings("sanity_checks.similarity.mnist"))


def _randomization_stage(ctx, setup: str, card: ModelCard, images: ImageSet,
                         methods: dict[str, dict], section: MnistExperiment,
                         similarity: SimilaritySettings) -> None:
    """One MNIST setup's per-image similarity table, the first image's renderings and a small
    metrics file."""
    mode = ctx.item["mode"]
    if mode == "independent" and section.independent.images is not None:
        images = images.subset(range(min(section.independent.images, len(images))))
    explainer = stage_explainer(ctx, section.batch_size)
    gallery = list(range(min(1, len(images))))
    table, arrays = run_randomization(card, images, methods, mode,
                                      ctx.settings("sanity_checks.randomization"), similarity,
                                      explainer=explainer,
                                      target=ctx.settings("sanity_checks.target"),
                                      gallery=gallery)
    _write_outputs(ctx, setup, card, table,
                   {**arrays, "image_names": np.array(images.names[:len(gallery)])},
                   {"images": len(images), "image_source": images.source, "notes": images.notes,
                    "methods": methods})


def _write_outputs(ctx, setup: str, card: ModelCard, table: pd.DataFrame,
                   arrays: dict[str, np.ndarray], described: dict) -> None:
    """The stage's table, gallery renderings and metrics file (``described``: the images and
    methods, as the setup has them)."""
    mode = ctx.item["mode"]
    table.insert(0, "setup", setup)
    write_table(table, ctx.output("table"))
    write_npz(ctx.output("maps"), arrays)
    write_json(ctx.output("metrics"), {
        "setup": setup, "mode": mode, "model": card.name, **described,
        "randomization": ctx.settings("sanity_checks.randomization").as_params(),
        "target": ctx.settings("sanity_checks.target"),
        "stages": int(table["stage_index"].max()), "seconds": ctx.seconds,
    })


def imagenet_cost(ctx) -> list:
    """The passes of one ImageNet item: every method's maps of its images at every stage (the
    original's included), the explained classes of every stage, the Fig. 8–9 examples."""
    from replication.cost import Cost, method_passes

    model, mode = ctx.item["model"], ctx.item["mode"]
    section = ctx.settings("sanity_checks.imagenet").for_model(model)
    if model not in section.run_models:
        return []
    card = create_model(model, pretrained=False)
    stages = len(card.randomization_blocks) + 1
    demos = len(section.demos)
    curves = min(CURVE_IMAGES, section.curve_images(mode) or CURVE_IMAGES)
    costs = [method_passes(card, name, section.methods[name], demos + n)
             for name, n in section.method_counts(mode, curves).items() if demos + n]
    costs = [Cost(c.model, f"{c.what} × {stages} stages", c.forward_backward * stages,
                  c.forward * stages) for c in costs]
    costs.append(Cost(model, f"explained classes × {stages} stages", 0,
                      (demos + curves) * stages))
    examples = min(section.guided_backprop_examples, curves) if mode == "cascading" else 0
    if examples:
        gbp = method_passes(card, "guided_backprop", section.methods["guided_backprop"], examples)
        costs.append(Cost(model, f"Fig. 8–9 examples × {stages} stages",
                          gbp.forward_backward * stages, (gbp.forward + examples) * stages))
    return costs


# --- figures (drawn from the tables and map renderings above) ----------------------------------

def authors_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The summary of one stage's table under the authors' map convention."""
    summary = summarize_table(table.drop(columns="setup"))
    return summary[summary["convention"].isin([CONVENTION]) | (summary["method"] == "")]


def stage_labels(table: pd.DataFrame) -> dict[int, str]:
    stages = table.drop_duplicates("stage_index").sort_values("stage_index")
    return dict(zip(stages["stage_index"], stages["stage"]))


def table_methods(table: pd.DataFrame) -> list[str]:
    """The methods of a table in their configured order (the paper's figure rows); the rows
    without a method (explained-class changes) read back as NaN."""
    return [m for m in dict.fromkeys(table["method"].dropna()) if m]


def randomization_gallery(arrays: dict[str, np.ndarray], labels: dict[int, str], image: int,
                          style: str, methods: Sequence[str], title: str, prefix: str = ""
                          ) -> plt.Figure:
    """Rows = methods, columns = the image then every stage (Fig. 2, 3, 8–18, 26–35)."""
    picture = arrays[f"{prefix}images"][image].astype(np.float32)
    picture = picture[..., 0] if picture.shape[-1] == 1 else picture
    rows = []
    for method in methods:
        row = [picture]
        for index in labels:
            key = f"{prefix}{index}/{method}/{style}"
            row.append(arrays[key][image].astype(np.float32) if key in arrays else None)
        rows.append(row)
    vrange = (0.0, 1.0) if style == "grayscale" else None
    cmaps = ABS_CMAP if style == "grayscale" else DIVERGING_CMAP
    return gallery(rows, row_labels=[method_label(m) for m in methods],
                   col_labels=["Input", *labels.values()], cmaps=cmaps, vranges=vrange,
                   title=title)


def similarity_panels(summaries: dict[str, pd.DataFrame], metrics: Sequence[str],
                      titles: dict[str, str], ylims: dict[str, tuple]) -> plt.Figure:
    """Rows = metrics, columns = setups: mean ± SD curves per method (Fig. 4, 5, 20, 21)."""
    fig, axes = plt.subplots(len(metrics), len(summaries),
                             figsize=(3.3 * len(summaries), 2.7 * len(metrics)), squeeze=False)
    for c, (setup, summary) in enumerate(summaries.items()):
        order = list(stage_labels(summary).values())
        for r, metric in enumerate(metrics):
            data = summary[(summary["metric"] == metric) & (summary["method"] != "")].copy()
            data["method"] = data["method"].map(method_label)
            curves(data, x="stage", y="mean", hue="method", sd="sd", order=order, ax=axes[r][c],
                   ylim=ylims.get(metric), title=titles[setup] if r == 0 else "",
                   ylabel=METRIC_LABELS.get(metric, metric))
            if order and len(order) > 1:
                axes[r][c].axvline(1, color="black", ls="--", lw=0.8)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.04))
    fig.tight_layout(rect=(0, 0.05, 1, 0.94))
    return fig


def _demo_labels(arrays: dict[str, np.ndarray]) -> list[str]:
    """Each gallery image's label: its role in the paper (bird, dog, corn) and file."""
    names = [str(n) for n in arrays.get("image_names", [])]
    roles = [str(r) for r in arrays.get("demo_roles", [""] * len(names))]
    return [f"{role} ({name})" if role else name for role, name in zip(roles, names)]


def gallery_methods(arrays: dict[str, np.ndarray]) -> list[str]:
    """The methods with gallery renderings, in their configured order."""
    return list(dict.fromkeys(key.split("/")[1] for key in arrays
                              if key.count("/") == 2 and not key.startswith("examples/")))


def draw_methods_and_edges(context, cascade: dict[str, np.ndarray]) -> plt.Figure | None:
    """Fig. 1: the original model's maps (stage 0) beside an edge detector (Sobel)."""
    labels = _demo_labels(cascade)
    if not labels:
        return None
    rows = []
    for image in range(len(labels)):
        picture = cascade["images"][image].astype(np.float32)
        row = [picture] + [cascade[f"0/{m}/grayscale"][image].astype(np.float32)
                           if f"0/{m}/grayscale" in cascade else None for m in FIG1_METHODS]
        rows.append(row + [sobel(picture.mean(-1))])
    return gallery(rows, row_labels=labels,
                   col_labels=["Original", *[method_label(m) for m in FIG1_METHODS],
                               "Edge detector (Sobel)"], cmaps=HEAT_CMAP,
                   title=f"Fig. 1 — saliency maps and an edge detector; {context.note}")


def draw_imagenet_gallery(context, table: pd.DataFrame, arrays: dict[str, np.ndarray], *,
                          role: str, style: str, title: str) -> plt.Figure | None:
    """Fig. 2, 3, 10–18: one demo image, every method × every stage."""
    roles = [str(r) for r in arrays.get("demo_roles", [])]
    if role not in roles:
        return None  # the profile explains other demo images
    image = roles.index(role)
    return randomization_gallery(arrays, stage_labels(table), image, style,
                                 gallery_methods(arrays),
                                 f"{title}; {_demo_labels(arrays)[image]}; {context.note}")


def draw_rank_correlation(context, imagenet: pd.DataFrame, *mnist: pd.DataFrame) -> plt.Figure:
    """Fig. 4: cascading rank correlations of the ImageNet model, CNN–Fashion-MNIST and
    MLP–MNIST."""
    summaries = {"imagenet": authors_summary(imagenet)}
    summaries.update({t["setup"].iloc[0]: authors_summary(t) for t in mnist})
    titles = {k: context.note if k == "imagenet" else MNIST_TITLES[k] for k in summaries}
    fig = similarity_panels(summaries, ["spearman_abs", "spearman_diverging"], titles,
                            RANK_LIMITS)
    fig.suptitle("Fig. 4 — cascading randomization: rank correlation with the original maps "
                 "(mean ± SD over images)", fontsize=8)
    return fig


def draw_ssim_hog(context, imagenet: pd.DataFrame) -> plt.Figure:
    """Fig. 5: cascading SSIM and HOG similarity of the ImageNet model."""
    fig = similarity_panels({"imagenet": authors_summary(imagenet)}, ["ssim", "hog"],
                            {"imagenet": context.note}, {"ssim": (0, 1.2), "hog": (-0.2, 1.2)})
    fig.suptitle("Fig. 5 — cascading randomization: SSIM and HOG similarity", fontsize=8)
    return fig


def draw_guided_backprop(context, table: pd.DataFrame, cascade: dict[str, np.ndarray], *,
                         style: str, title: str) -> plt.Figure | None:
    """Fig. 8–9: Guided Backprop under cascading randomization on more images."""
    examples = {k[len("examples/"):]: v for k, v in cascade.items() if k.startswith("examples/")}
    if not examples:
        return None
    labels = stage_labels(table)
    rows = [[examples["images"][image].astype(np.float32)]
            + [examples[f"{i}/guided_backprop/{style}"][image].astype(np.float32) for i in labels]
            for image in range(len(examples["images"]))]
    return gallery(rows, row_labels=[f"image {i + 1}" for i in range(len(rows))],
                   col_labels=["Input", *labels.values()],
                   cmaps=ABS_CMAP if style == "grayscale" else DIVERGING_CMAP,
                   vranges=(0.0, 1.0) if style == "grayscale" else None,
                   title=f"{title} — Guided Backprop, cascading randomization ({style}); "
                         f"{context.note}")


def draw_mnist_curves(context, *tables: pd.DataFrame, title: str) -> plt.Figure:
    """Fig. 20–21: rank-correlation curves of the MNIST / Fashion-MNIST models."""
    summaries = {t["setup"].iloc[0]: authors_summary(t) for t in tables}
    fig = similarity_panels(summaries, ["spearman_abs", "spearman_diverging"],
                            {k: MNIST_TITLES[k] for k in summaries}, RANK_LIMITS)
    fig.suptitle(title, fontsize=8)
    return fig


def draw_mnist_gallery(context, table: pd.DataFrame, arrays: dict[str, np.ndarray], *,
                       style: str, title: str) -> plt.Figure:
    """Fig. 26–35: the first test image of one MNIST setup, every method × every stage."""
    setup, mode = table["setup"].iloc[0], table["mode"].iloc[0]
    methods = [m for m in table_methods(table) if f"1/{m}/{style}" in arrays]
    return randomization_gallery(arrays, stage_labels(table), 0, style, methods,
                                 f"{title} — {mode} randomization, {MNIST_TITLES[setup]}, {style}")
