"""The data randomization test (Sanity Checks §6; Fig. 6, 22–25): maps of a model trained on the
true labels against maps of the same architecture trained on permuted labels, for the same test
images. Each model explains its own top class (the authors' pattern; option: the true label).
"""

from __future__ import annotations

import logging

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import Tensor

from replication.attribution import method_label, postprocess
from replication.data.mnist import train_validation_split
from replication.data.tensors import mnist_tensors
from replication.experiments.common import (Explainer, ImageSet, mnist_set, stage_explainer,
                                            trained_mnist_model)
from replication.experiments.sanity_checks.model_randomization import (MNIST_TITLES,
                                                                       table_methods,
                                                                       visualisations)
from replication.randomization.reinit import explained_classes
from replication.experiments.sanity_checks.settings import SimilaritySettings
from replication.experiments.sanity_checks.setups import methods_for
from replication.fileio import write_json, write_npz, write_table
from replication.metrics.similarity import compare
from replication.models import ModelCard, create_model
from replication.training import ARCHS, LABELS, train_from_settings
from replication.plotting import DIVERGING_CMAP, HEAT_CMAP, markdown_table

log = logging.getLogger("replication")

NONZERO_METRIC = "spearman_abs_nonzero_pixels"
# The border diagnostic (issue 15 §2): mean |E|/max|E| on the pixels lit (> 0) in at least
# COMMON_PIXELS of the training images, and on those lit in at most RARE_PIXELS of them (MNIST:
# 284 and 289 of the 784 pixels, 69 of the rare ones never lit). A network whose input weights
# of rarely lit pixels stay random keeps a bright border in its gradient maps; the authors'
# published maps are dark there.
COMMON_PIXELS, RARE_PIXELS = 0.2, 0.01
BORDER_METRICS = ("abs_common_pixels", "abs_rare_pixels")
# What the training-seed stage keeps of each retrained model's metrics.
SEED_MODEL_KEYS = ("train_acc", "test_acc", "final", "equilibrium", "seconds")


def pixel_groups(training_images: Tensor) -> dict[str, Tensor]:
    """Boolean (H, W) masks of the common and the rare pixels of a training set (N, 1, H, W)."""
    lit = (training_images > 0).float().mean(0)[0]
    return {"abs_common_pixels": lit >= COMMON_PIXELS, "abs_rare_pixels": lit <= RARE_PIXELS}


def border_diagnostic(maps: Tensor, groups: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Per image, the mean of the |E|/max|E| map over each pixel group (NaN for an empty one)."""
    scaled = postprocess.grayscale(maps, None)[:, 0].cpu()
    return {name: (scaled[:, mask].mean(1).numpy() if mask.any()
                   else np.full(len(maps), np.nan)).astype(np.float64)
            for name, mask in groups.items()}


def spearman_on_nonzero_pixels(reference: Tensor, other: Tensor, inputs: Tensor,
                               percentile: float | None) -> np.ndarray:
    """Spearman ABS over the pixels where the input is not exactly zero (our C16 diagnostic:
    on MNIST, IG from a zero baseline and Gradient⊙Input are exactly zero on the background
    whatever the model, which alone pushes their ABS correlation towards 1)."""
    a = postprocess.grayscale(reference, percentile)[:, 0].flatten(1).numpy()
    b = postprocess.grayscale(other, percentile)[:, 0].flatten(1).numpy()
    mask = (inputs.abs().sum(1) > 0).flatten(1).numpy()
    values = []
    for row_a, row_b, keep in zip(a, b, mask):
        if keep.sum() < 3 or np.ptp(row_a[keep]) == 0 or np.ptp(row_b[keep]) == 0:
            values.append(np.nan)
        else:
            values.append(spearmanr(row_a[keep], row_b[keep]).statistic)
    return np.asarray(values, dtype=np.float64)


def run_data_randomization(true_model: ModelCard, random_model: ModelCard, images: ImageSet,
                           methods: dict[str, dict], similarity: SimilaritySettings, *,
                           explainer: Explainer, target: str = "predicted",
                           example: int | None = None, pixels: dict[str, Tensor] | None = None,
                           ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Tidy similarity rows (method, metric, image, value) and the renderings of ``example``;
    with ``pixels`` (``pixel_groups``), the border diagnostic of each model's maps as metrics
    ``<group>/true`` and ``<group>/random``."""
    for card in (true_model, random_model):
        explainer.place(card)
    true_targets = explained_classes(true_model.model, images.images, target, images.labels)
    random_targets = explained_classes(random_model.model, images.images, target, images.labels)
    rows, arrays = [], {}
    for name, params in methods.items():
        true_maps = explainer(true_model, name, params, images.images, true_targets)
        random_maps = explainer(random_model, name, params, images.images, random_targets)
        values = compare(true_maps, random_maps, similarity.metrics, **similarity.options())
        values[NONZERO_METRIC] = spearman_on_nonzero_pixels(true_maps, random_maps, images.images,
                                                            similarity.percentile)
        for labels, maps in (("true", true_maps), ("random", random_maps)):
            values.update({f"{group}/{labels}": v for group, v in
                           border_diagnostic(maps, pixels or {}).items()})
        rows += [{"method": name, "metric": metric, "image": i, "value": float(v)}
                 for metric, per_image in values.items() for i, v in enumerate(per_image)]
        if example is not None:
            for labels, maps in (("true", true_maps), ("random", random_maps)):
                for style, array in visualisations(maps[[example]], similarity.percentile).items():
                    arrays[f"{labels}/{name}/{style}"] = array
    if example is not None:
        arrays["images"] = images.images[[example]].permute(0, 2, 3, 1).numpy().astype(np.float16)
    table = pd.DataFrame(rows, columns=["method", "metric", "image", "value"])
    agreement = (true_targets == random_targets).float().mean().item()
    table.attrs["explained_class_agreement"] = agreement
    return table, arrays


def training_pixel_groups(folder, validation_size: int) -> dict[str, Tensor]:
    """``pixel_groups`` of the images a model of the data folder was trained on."""
    pixels, _ = mnist_tensors(folder, "train")
    return pixel_groups(pixels[train_validation_split(len(pixels), validation_size)[0]])


def first_image_of_class(images: ImageSet, label: int) -> int:
    """Index of the first image with ``label`` (the paper's digit-0 example); the first image,
    with a warning, when a small subset (the smoke profile's) holds none of that class."""
    matches = torch.nonzero(images.labels == label)
    if len(matches) == 0:
        log.warning("no image of class %d among the %d evaluated test images: the example panel "
                    "shows the first image (class %d) instead", label, len(images),
                    int(images.labels[0]))
        return 0
    return int(matches[0])


def pair_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and population SD over images per (method, metric) of a data-randomization table."""
    grouped = table.groupby(["method", "metric"], sort=False)["value"]
    return grouped.agg(mean="mean", sd=lambda v: float(np.nanstd(v.to_numpy())),
                       n=lambda v: int(v.notna().sum())).reset_index()


def run(ctx) -> None:
    """`sanity_data_randomization`: the true-label against the permuted-label model of one
    MNIST / Fashion-MNIST setup."""
    arch, dataset = ctx.item["arch"], ctx.item["dataset"]
    setup = f"{arch}-{dataset}"
    study = ctx.settings("sanity_checks.data_randomization")
    true_model = trained_mnist_model(ctx.input("true_model"), arch)
    random_model = trained_mnist_model(ctx.input("random_model"), arch)
    images = mnist_set(ctx.input("data"), study.images)
    example = first_image_of_class(images, study.example_class)
    table, arrays = run_data_randomization(
        true_model, random_model, images,
        methods_for(arch, ctx.settings("sanity_checks.mnist.methods")),
        ctx.settings("sanity_checks.similarity.mnist"),
        explainer=stage_explainer(ctx, study.batch_size),
        target=ctx.settings("sanity_checks.target"), example=example,
        pixels=training_pixel_groups(ctx.input("data"), ctx.settings("data.validation_size")))
    table.insert(0, "setup", setup)
    write_table(table, ctx.output("table"))
    write_npz(ctx.output("maps"), arrays)
    write_json(ctx.output("metrics"), {
        "setup": setup, "images": len(images), "example": images.names[example],
        "explained_class_agreement": table.attrs["explained_class_agreement"],
        "seconds": ctx.seconds})


def run_training_seeds(ctx) -> None:
    """`sanity_training_seeds`: the data-randomization table of the setup's pair retrained with
    each further training seed (``seed`` + 1, …; the `train` stage's pair is seed ``seed``), so
    the claims can weigh the seed-to-seed spread against the image-to-image one (issue 14 §4).
    A setup whose architecture the settings leave out writes an empty table and says why."""
    arch, dataset = ctx.item["arch"], ctx.item["dataset"]
    setup = f"{arch}-{dataset}"
    spec = ctx.settings("sanity_checks.training_seeds")
    study = ctx.settings("sanity_checks.data_randomization")
    first = ctx.settings("seed")
    seeds = list(range(first + 1, first + spec.seeds)) if arch in spec.archs else []
    tables, models = [], {}
    if seeds:
        images = mnist_set(ctx.input("data"), study.images)
        pixels = training_pixel_groups(ctx.input("data"), ctx.settings("data.validation_size"))
    for seed in seeds:
        pair = {}
        for labels in LABELS:
            model, metrics = train_from_settings(ctx, dataset, arch, labels, seed,
                                                 ctx.input("data"))
            pair[labels] = card_of(model, arch)
            models[f"{seed}/{labels}"] = {key: metrics[key] for key in SEED_MODEL_KEYS}
        table, _ = run_data_randomization(
            pair["true"], pair["random"], images,
            methods_for(arch, ctx.settings("sanity_checks.mnist.methods")),
            ctx.settings("sanity_checks.similarity.mnist"),
            explainer=stage_explainer(ctx, study.batch_size),
            target=ctx.settings("sanity_checks.target"), pixels=pixels)
        tables.append(table.assign(seed=seed))
    table = (pd.concat(tables, ignore_index=True) if tables
             else pd.DataFrame(columns=["method", "metric", "image", "value", "seed"]))
    table.insert(0, "setup", setup)
    write_table(table[["setup", "seed", "method", "metric", "image", "value"]], ctx.output("table"))
    write_json(ctx.output("metrics"), {
        "setup": setup, "seeds": [first, *seeds], "models": models, "seconds": ctx.seconds,
        **({} if seeds else {"reason": f"sanity_checks.training_seeds.archs leaves out {arch}"})})


def training_seeds_cost(ctx) -> list:
    """Passes of the retrained pairs: each further seed trains two models (``training_cost``)
    and maps the evaluated images with every method on both."""
    from replication.cost import Cost, method_passes
    from replication.training import total_steps

    arch = ctx.item["arch"]
    spec = ctx.settings("sanity_checks.training_seeds")
    if arch not in spec.archs or spec.seeds < 2:
        return []
    section = ctx.settings("train", model=ARCHS[arch])
    validation = ctx.settings("data.validation_size")
    images = ctx.settings("sanity_checks.data_randomization").images
    card = create_model(ARCHS[arch])
    costs = []
    for labels in LABELS:
        config = getattr(section, f"{labels}_labels")
        n_train = config.subset or 60_000 - validation
        costs.append(Cost(card.name, f"{labels} labels, training", total_steps(config, n_train)
                          * config.batch_size, n_train + validation + 10_000))
        costs += [method_passes(card, name, params, 2 * images) for name, params in
                  methods_for(arch, ctx.settings("sanity_checks.mnist.methods")).items()]
    extra = spec.seeds - 1
    return [Cost(c.model, f"{extra} seeds: {c.what}", extra * c.forward_backward,
                 extra * c.forward) for c in costs]


def card_of(model: torch.nn.Module, arch: str) -> ModelCard:
    """The model card of ``arch`` holding the weights of a freshly trained ``model``."""
    card = create_model(ARCHS[arch])
    card.model.load_state_dict(model.state_dict())
    return card


# --- figures ------------------------------------------------------------------------------------

def draw_true_vs_random(context, table: pd.DataFrame, arrays: dict[str, np.ndarray], *,
                        title: str) -> plt.Figure:
    """Fig. 6, 22–25: the example's ABS and diverging maps under true and random labels, then
    bars of the rank correlations (± SD over images) with the paper's figure-measured values
    (the claims of ``context``)."""
    summary = pair_summary(table)
    setup = table["setup"].iloc[0]
    methods = [m for m in table_methods(table) if f"true/{m}/grayscale" in arrays]
    fig = plt.figure(figsize=(1.05 * len(methods) + 1.5, 6.2))
    grid = fig.add_gridspec(6, len(methods) + 1, height_ratios=[1, 1, 1, 1, 2.6, 0.1])
    _example_maps(fig, grid, arrays, methods)
    ax = fig.add_subplot(grid[4, :])
    positions = np.arange(len(methods))
    for offset, metric, colour in ((-0.2, "spearman_abs", "tab:red"),
                                   (0.2, "spearman_diverging", "tab:blue")):
        rows = summary[summary["metric"] == metric].set_index("method").reindex(methods)
        ax.bar(positions + offset, rows["mean"], 0.38, yerr=rows["sd"], color=colour, alpha=0.75,
               capsize=2, label={"spearman_abs": "ours, ABS", "spearman_diverging": "ours, no ABS"}[metric])
    paper = {c.ours_key.split(".")[1]: float(c.paper_value) for c in context.claims
             if c.paper_value is not None}
    marks = [paper.get(m) for m in methods]
    ax.scatter(positions - 0.2, [np.nan if v is None else v for v in marks], marker="D", s=14,
               color="black", zorder=3, label="paper, ABS (read from its figure)")
    ax.set_xticks(positions)
    ax.set_xticklabels([method_label(m) for m in methods], rotation=20, ha="right")
    ax.set_ylabel("Rank correlation\n(true vs random labels)")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylim(-0.6, 1.15)
    ax.legend(loc="upper left", ncol=3)
    fig.suptitle(f"{title} — true vs random labels, {MNIST_TITLES[setup]}", fontsize=8)
    return fig


def _example_maps(fig: plt.Figure, grid, arrays: dict[str, np.ndarray],
                  methods: list[str]) -> None:
    """The four rows of example maps: true / random labels × ABS / diverging."""
    picture = arrays["images"][0, ..., 0].astype(np.float32)
    for r, (labels, style) in enumerate([("true", "grayscale"), ("random", "grayscale"),
                                         ("true", "diverging"), ("random", "diverging")]):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(picture, cmap="gray")
        ax.set_axis_off()
        ax.set_title(f"{labels} labels, {'ABS' if style == 'grayscale' else 'diverging'}",
                     fontsize=6)
        for c, method in enumerate(methods):
            ax = fig.add_subplot(grid[r, c + 1])
            image = arrays[f"{labels}/{method}/{style}"][0].astype(np.float32)
            if style == "grayscale":
                ax.imshow(image, cmap=HEAT_CMAP, vmin=0, vmax=1)
            else:
                ax.imshow(image, cmap=DIVERGING_CMAP, vmin=-1, vmax=1)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(method_label(method), fontsize=6)


def border_table(*tables: pd.DataFrame) -> pd.DataFrame:
    """Per pair and method: the border diagnostic of each model's maps (mean |E|/max|E| over
    common and rare pixels, and rare / common), mean over images."""
    rows = []
    for table in tables:
        summary = pair_summary(table).set_index(["method", "metric"])["mean"]
        for method in table_methods(table):
            row = {"pair": table["setup"].iloc[0], "method": method}
            for labels in ("true", "random"):
                common = summary.get((method, f"abs_common_pixels/{labels}"), np.nan)
                rare = summary.get((method, f"abs_rare_pixels/{labels}"), np.nan)
                row.update({f"common_{labels}": common, f"rare_{labels}": rare,
                            f"rare/common_{labels}": rare / common if common else np.nan})
            row["spearman_abs"] = summary.get((method, "spearman_abs"), np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def draw_border_table(context, *tables: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The border diagnostic of every pair (issue 15 §2) as a table."""
    table = border_table(*tables)
    return table, (
        "Border diagnostic of the data-randomization maps: mean |E|/max|E| on the pixels lit in "
        f"≥ {COMMON_PIXELS:.0%} of the training images (common) and in ≤ {RARE_PIXELS:.0%} "
        "(rare), for the true-label and the permuted-label model; the authors' published "
        "MLP–MNIST digit-0 Gradient maps read back at about 18 and 8 (rare/common ≈ 0.44).\n\n"
        + markdown_table(table))


def draw_seed_spread(context, spread: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Issue 14 §4: the seed-to-seed spread of every data-randomization similarity beside the
    image-to-image interval, and the interval the claims judge (both combined)."""
    return spread, (
        "Training seeds vs images: `mean` is the pipeline's pair (seed `seed`), `image_low`/"
        "`image_high` its 95% bootstrap interval over the test images, `seed_means` the same "
        "similarity for each retrained pair, `seed_margin` = t(S−1)·SD over seeds; `low`/`high` "
        "combine both (each side in quadrature) and are what the verdicts read.\n\n"
        + markdown_table(spread))
