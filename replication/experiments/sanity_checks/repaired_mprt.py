"""Beyond the paper: the paper's model-parameter randomization test (MPRT) beside its repaired
versions, Smooth MPRT and Efficient MPRT (Hedström et al. 2023, "Sanity Checks Revisited"), for
the Sanity Checks methods on the MNIST / Fashion-MNIST models and on ImageNet models (issue 17).

Per setup (a model and its images), method and image, three scores:

``mprt``
    The paper's test as this repository replicates it (``model_randomization``): cascading
    randomization from the output (top-down), Spearman ABS of the paper's map visualisations
    against the original model's. Our reading of "the test's score": the mean over the
    randomised stages (the area under a Fig. 4 curve over its width; ``score: last``: the fully
    randomised stage). Lower passes better.
``smprt``
    ``metrics.smooth_mprt``: maps averaged over noisy copies of the image, Quantus's layer order
    (bottom-up) and preprocessing (second-moment normalised, absolute), Spearman; per image the
    same summary as MPRT (``score``). Lower passes better.
``emprt``
    ``metrics.efficient_mprt``: the relative rise of a map's histogram entropy from the original
    to the fully randomised model. Higher passes better.

All three explain the class ``sanity_checks.target`` names and randomise the card's
``randomization_blocks`` with the options of ``sanity_checks.randomization``; sMPRT and eMPRT
compare the maps Quantus would be handed (``maps: input``: channel sum at the input's
resolution). A per-image score with an undefined layer (a constant map) is NaN; a method's mean
skips NaN images and the tables count them. Rankings: per setup and test, rank 1 passes best.
"""

from __future__ import annotations

import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy.stats import kendalltau

from replication.attribution import method_label
from replication.data import imagenet
from replication.data.sanity_images import curve_images
from replication.experiments.common import (Explainer, ImageSet, imagenet_card, imagenet_set,
                                            mnist_set, stage_device, stage_explainer,
                                            trained_mnist_model)
from replication.experiments.sanity_checks.model_randomization import run_randomization
from replication.experiments.sanity_checks.settings import (EfficientMprt, RepairedImageNet,
                                                            RepairedMnist, SimilaritySettings,
                                                            SmoothMprt)
from replication.experiments.sanity_checks.setups import methods_for
from replication.fileio import concat_tables, json_safe, write_json, write_table
from replication.metrics import efficient_mprt, smooth_mprt
from replication.models import ModelCard
from replication.plotting import markdown_table
from replication.randomization import RandomizationOptions

BEYOND = "beyond the paper"
TESTS = ("mprt", "smprt", "emprt")
TEST_LABELS = {"mprt": "MPRT (the paper's)", "smprt": "sMPRT", "emprt": "eMPRT"}
HIGHER_IS_BETTER = {"mprt": False, "smprt": smooth_mprt.HIGHER_IS_BETTER,
                    "emprt": efficient_mprt.HIGHER_IS_BETTER}
LAYER_COLUMNS = ["setup", "model", "test", "method", "image", "layer_index", "layer", "quantity",
                 "value"]
SCORE_COLUMNS = ["setup", "model", "test", "method", "image", "value"]
ORIGINAL, RANDOMIZED = "Original", "Fully randomized"


@dataclasses.dataclass(frozen=True)
class TestSettings:
    """What the three tests of one setup share besides its model, images and methods."""

    score: str                      # per image: "mean" over the randomised layers | "last"
    maps: str                       # what sMPRT and eMPRT compare: "input" | "raw"
    smprt: SmoothMprt
    emprt: EfficientMprt
    nr_samples: int
    batch_size: int
    randomization: RandomizationOptions
    similarity: SimilaritySettings  # the paper's map convention of the setup's maps
    target: str
    seed: int


# --- compute ------------------------------------------------------------------------------------

def paper_mprt_layers(card: ModelCard, images: ImageSet, methods: dict[str, dict],
                      settings: TestSettings, explainer: Explainer) -> pd.DataFrame:
    """The paper's cascading test: Spearman ABS of each randomised stage's maps (top-down)."""
    spearman = dataclasses.replace(settings.similarity, metrics=("spearman_abs",))
    table, _ = run_randomization(card, images, methods, "cascading", settings.randomization,
                                 spearman, explainer=explainer, target=settings.target)
    rows = table[(table["metric"] == "spearman_abs") & (table["stage_index"] > 0)]
    return pd.DataFrame({"test": "mprt", "method": rows["method"], "image": rows["image"],
                         "layer_index": rows["stage_index"], "layer": rows["stage"],
                         "quantity": "spearman_abs", "value": rows["value"]})


def smooth_layers(result: smooth_mprt.SmoothMPRTResult, method: str) -> pd.DataFrame:
    images, layers = np.indices(result.similarity.shape)
    return pd.DataFrame({"test": "smprt", "method": method, "image": images.ravel(),
                         "layer_index": layers.ravel() + 1,
                         "layer": np.array(result.layers, dtype=object)[layers.ravel()],
                         "quantity": "spearman", "value": result.similarity.ravel()})


def entropy_layers(result: efficient_mprt.EfficientMPRTResult, method: str) -> pd.DataFrame:
    """The two entropies eMPRT compares, as layer rows 0 (original) and L (all randomised)."""
    count = len(result.original_complexity)
    return pd.DataFrame({"test": "emprt", "method": method,
                         "image": np.tile(np.arange(count), 2),
                         "layer_index": np.repeat([0, len(result.randomized)], count),
                         "layer": np.repeat([ORIGINAL, RANDOMIZED], count),
                         "quantity": "entropy",
                         "value": np.concatenate([result.original_complexity,
                                                  result.randomized_complexity])})


def layer_scores(layers: pd.DataFrame, score: str) -> pd.DataFrame:
    """Per (test, method, image): the mean over its randomised layers (NaN if any layer is NaN)
    or the last layer's value (``score``)."""
    keys = ["test", "method", "image"]
    ordered = layers.sort_values("layer_index", kind="stable")  # groups keep the run order
    grouped = ordered.groupby(keys, sort=False)["value"]
    if score == "mean":
        values = grouped.agg(lambda v: float(v.mean(skipna=False)))
    else:  # the last layer's own value, NaN included (groupby's last() would skip a NaN)
        values = grouped.agg(lambda v: float(v.iloc[-1]))
    return values.rename("value").reset_index()


def repaired_mprt(card: ModelCard, images: ImageSet, methods: dict[str, dict], setup: str,
                  settings: TestSettings, explainer: Explainer) -> tuple[pd.DataFrame,
                                                                         pd.DataFrame]:
    """The three tests of ``methods`` on one setup: (layer rows, per-image scores)."""
    targets = "predicted" if settings.target == "predicted" else images.labels
    mprt = paper_mprt_layers(card, images, methods, settings, explainer)
    smooth, entropies, rises = [], [], []
    for name, params in methods.items():
        if name not in settings.smprt.skip:
            result = smooth_mprt.smooth_mprt(
                card, images.images, targets, name, method_params=params,
                nr_samples=settings.nr_samples, noise_magnitude=settings.smprt.noise_magnitude,
                layer_order=settings.smprt.layer_order, randomization=settings.randomization,
                seed=settings.seed, batch_size=max(1, settings.batch_size // settings.nr_samples),
                maps=settings.maps)
            smooth.append(smooth_layers(result, name))
        efficient = efficient_mprt.efficient_mprt(
            card, images.images, targets, name, method_params=params,
            n_bins=settings.emprt.n_bins, randomization=settings.randomization,
            batch_size=settings.batch_size, maps=settings.maps)
        entropies.append(entropy_layers(efficient, name))
        rises.append(pd.DataFrame({"test": "emprt", "method": name,
                                   "image": np.arange(len(images)), "value": efficient.scores}))
    similarity = concat_tables([mprt, *smooth])
    scores = concat_tables([layer_scores(similarity, settings.score), *rises])
    layers = concat_tables([similarity, *entropies])
    for table in (layers, scores):
        table.insert(0, "model", card.name)
        table.insert(0, "setup", setup)
    return layers[LAYER_COLUMNS], scores[SCORE_COLUMNS]


def rankings(scores: pd.DataFrame) -> pd.DataFrame:
    """Per setup, test and method: the mean score over images (NaN images skipped and
    counted), the population SD, and the rank among the setup's methods on that test (1 passes
    best; ties share their mean rank; no rank where the mean is NaN)."""
    grouped = scores.groupby(["setup", "model", "test", "method"], sort=False)["value"]
    summary = grouped.agg(mean="mean", sd=lambda v: float(np.std(v.dropna())) if v.notna().any()
                          else np.nan,
                          n=lambda v: int(v.notna().sum()),
                          n_nan=lambda v: int(v.isna().sum())).reset_index()
    summary["rank"] = np.nan
    for (_, test), rows in summary.groupby(["setup", "test"], sort=False):
        summary.loc[rows.index, "rank"] = rows["mean"].rank(
            ascending=not HIGHER_IS_BETTER[test], method="average")
    return summary


def agreement(ranked: pd.DataFrame) -> pd.DataFrame:
    """Per setup and pair of tests: Kendall's τ-b between their rankings of the methods both
    rank (NaN with fewer than two such methods or a constant ranking)."""
    rows = []
    for (setup, model), group in ranked.groupby(["setup", "model"], sort=False):
        ranks = group.pivot(index="method", columns="test", values="rank")
        for i, first in enumerate(TESTS):
            for second in TESTS[i + 1:]:
                both = (ranks[[first, second]].dropna() if {first, second} <= set(ranks)
                        else pd.DataFrame(columns=[first, second]))
                tau = (float(kendalltau(both[first], both[second]).statistic)
                       if len(both) >= 2 else np.nan)
                rows.append({"setup": setup, "model": model, "tests": f"{first} vs {second}",
                             "methods": len(both), "kendall_tau": tau})
    return pd.DataFrame(rows, columns=["setup", "model", "tests", "methods", "kendall_tau"])


# --- the stages ---------------------------------------------------------------------------------

SECTION = "sanity_checks.repaired_mprt"
# What both stages read of the section (each reads its own domain's part besides).
SHARED = tuple(f"{SECTION}.{key}" for key in ("score", "maps", "smprt", "emprt"))


def _test_settings(ctx, domain: RepairedMnist | RepairedImageNet, kind: str) -> TestSettings:
    """``kind``: the setups' maps, ``mnist`` (2-D) or ``imagenet`` (3-D), for the paper's map
    convention (``sanity_checks.similarity``)."""
    return TestSettings(ctx.settings(f"{SECTION}.score"), ctx.settings(f"{SECTION}.maps"),
                        ctx.settings(f"{SECTION}.smprt"), ctx.settings(f"{SECTION}.emprt"),
                        domain.nr_samples, domain.batch_size,
                        ctx.settings("sanity_checks.randomization"),
                        ctx.settings(f"sanity_checks.similarity.{kind}"),
                        ctx.settings("sanity_checks.target"), ctx.settings("seed"))


def run_mnist(ctx) -> None:
    """`sanity_repaired_mprt_mnist`: the three tests on each configured MNIST setup."""
    section = ctx.settings(f"{SECTION}.mnist")
    configured = ctx.settings("sanity_checks.mnist.methods")
    settings = _test_settings(ctx, section, "mnist")
    explainer = stage_explainer(ctx, settings.batch_size)
    results = {}
    for setup in section.setups:
        arch, dataset = setup.split("-", 1)
        card = trained_mnist_model(ctx.input(f"{arch}_{dataset}"), arch)
        card.model.to(stage_device(ctx))
        images = mnist_set(ctx.input(dataset), section.images)
        methods = methods_for(arch, {m: configured[m] for m in section.methods})
        results[setup] = _timed(card, images, methods, setup, settings, explainer)
    _write(ctx, results, settings)


def run_imagenet(ctx) -> None:
    """`sanity_repaired_mprt_imagenet`: the three tests on each configured ImageNet model."""
    section = ctx.settings(f"{SECTION}.imagenet")
    configured = ctx.settings("sanity_checks.imagenet.methods")
    settings = _test_settings(ctx, section, "imagenet")
    explainer = stage_explainer(ctx, settings.batch_size)
    methods = {m: configured[m] for m in section.methods}
    results = {}
    for name in section.models:
        card = imagenet_card(ctx, name)
        images = imagenet_images(ctx, card, section)
        results[name] = _timed(card, images, methods, name, settings, explainer)
    _write(ctx, results, settings)


def imagenet_images(ctx, card: ModelCard, section: RepairedImageNet) -> ImageSet:
    """A seeded choice of ``images`` images: of the authors' 200 curve images
    (``images_from: paper``) or of the 1000-image sample, through ``card``'s preprocessing."""
    if section.images_from == "paper":
        folder = ctx.input("paper_images")
        curves = set(curve_images(folder))
        others = [r["file"] for r in imagenet.read_labels(folder) if r["file"] not in curves]
        return imagenet_set(folder, card, section.images, ctx.settings("seed"),
                            exclude=others, source="sanity_checks_imagenet (the paper's 200)")
    return imagenet_set(ctx.input("sample"), card, section.images, ctx.settings("seed"),
                        source="imagenet_sample")


def _timed(card: ModelCard, images: ImageSet, methods: dict[str, dict], setup: str,
           settings: TestSettings, explainer: Explainer) -> dict:
    started, cpu = time.perf_counter(), time.process_time()
    layers, scores = repaired_mprt(card, images, methods, setup, settings, explainer)
    return {"layers": layers, "scores": scores, "images": images, "methods": methods,
            "seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1)}


def _write(ctx, results: dict[str, dict], settings: TestSettings) -> None:
    """The layer and score tables, and a metrics file: per setup the rankings and agreements."""
    scores = concat_tables([r["scores"] for r in results.values()])
    write_table(concat_tables([r["layers"] for r in results.values()]), ctx.output("layers"))
    write_table(scores, ctx.output("scores"))
    ranked = rankings(scores)
    agreed = agreement(ranked)
    setups = {}
    for setup, result in results.items():
        mine = ranked[ranked["setup"] == setup]
        setups[setup] = {
            "model": result["layers"]["model"].iloc[0], "images": len(result["images"]),
            "image_source": result["images"].source, "methods": result["methods"],
            "tests": {test: {row.method: {"mean": row.mean, "sd": row.sd, "n": row.n,
                                          "n_nan": row.n_nan, "rank": row.rank}
                             for row in mine[mine["test"] == test].itertuples()}
                      for test in TESTS},
            "kendall_tau": {row.tests: row.kendall_tau
                            for row in agreed[agreed["setup"] == setup].itertuples()},
            "seconds": result["seconds"], "cpu_seconds": result["cpu_seconds"]}
    write_json(ctx.output("metrics"), json_safe({
        "note": f"{BEYOND}: the paper's MPRT beside sMPRT and eMPRT (Hedström et al. 2023)",
        "setups": setups, "score": settings.score, "maps": settings.maps,
        "nr_samples": settings.nr_samples, "smprt": settings.smprt.as_params(),
        "emprt": settings.emprt.as_params(), "target": settings.target,
        "randomization": settings.randomization.as_params(), "seconds": ctx.seconds}))


# --- what a profile costs (replication.cost) ----------------------------------------------------

def setup_costs(card: ModelCard, methods: dict[str, dict], images: int, nr_samples: int,
               skip: tuple[str, ...]) -> list:
    """The passes of the three tests of ``methods`` on ``images`` images of ``card``: MPRT
    explains each of the L + 1 model states once, sMPRT ``nr_samples`` times, eMPRT two states;
    each state's explained classes cost a forward pass per image and explanation run."""
    from replication.cost import Cost, method_passes

    states = len(card.randomization_blocks) + 1
    costs = [Cost(card.name, "explained classes (MPRT)", 0, states * images)]
    for name, params in methods.items():
        maps = method_passes(card, name, params, images)
        runs = {"MPRT": states, "eMPRT": 2}
        if name not in skip:
            runs["sMPRT"] = states * nr_samples
        for test, count in runs.items():
            classes = 0 if test == "MPRT" else images * (states if test == "sMPRT" else 2)
            costs.append(Cost(card.name, f"{test} {name}", maps.forward_backward * count,
                              maps.forward * count + classes))
    return costs


def mnist_cost(ctx) -> list:
    from replication.models import create_model

    section = ctx.settings(f"{SECTION}.mnist")
    configured = ctx.settings("sanity_checks.mnist.methods")
    skip = ctx.settings(f"{SECTION}.smprt").skip
    costs = []
    for setup in section.setups:
        arch = setup.split("-", 1)[0]
        card = create_model(f"mnist_{arch}")
        methods = methods_for(arch, {m: configured[m] for m in section.methods})
        costs += setup_costs(card, methods, section.images, section.nr_samples, skip)
    return costs


def imagenet_cost(ctx) -> list:
    from replication.models import create_model

    section = ctx.settings(f"{SECTION}.imagenet")
    configured = ctx.settings("sanity_checks.imagenet.methods")
    skip = ctx.settings(f"{SECTION}.smprt").skip
    images = min(section.images, 200 if section.images_from == "paper" else 1000)
    methods = {m: configured[m] for m in section.methods}
    return [cost for name in section.models
            for cost in setup_costs(create_model(name, pretrained=False), methods, images,
                                   section.nr_samples, skip)]


# --- figures and tables (drawn from the score tables) -------------------------------------------

def _setup_title(setup: str) -> str:
    from replication.experiments.sanity_checks.model_randomization import MNIST_TITLES

    return MNIST_TITLES.get(setup, setup)


def draw_rankings(context, *tables: pd.DataFrame) -> plt.Figure:
    """One panel per setup: each method's rank under the three tests, joined by lines (rank 1,
    at the top, passes best); a method a test did not score has no point there."""
    scores = concat_tables(list(tables))
    ranked = rankings(scores)
    setups = list(dict.fromkeys(ranked["setup"]))
    methods = list(dict.fromkeys(ranked["method"]))
    colours = dict(zip(methods, sns.color_palette("tab10", n_colors=len(methods))))
    fig, axes = plt.subplots(1, len(setups), figsize=(2.3 * len(setups) + 0.6, 3.0),
                             squeeze=False)
    for ax, setup in zip(axes[0], setups):
        ranks = ranked[ranked["setup"] == setup].pivot(index="method", columns="test",
                                                       values="rank").reindex(columns=TESTS)
        for method in [m for m in methods if m in ranks.index]:
            ax.plot(range(len(TESTS)), ranks.loc[method].to_numpy(dtype=float), marker="o",
                    markersize=3, lw=1.2, color=colours[method], label=method_label(method))
        ax.set_xticks(range(len(TESTS)))
        ax.set_xticklabels([TEST_LABELS[t].replace(" (the paper's)", "\n(paper)")
                            for t in TESTS])
        ax.set_ylim(len(ranks) + 0.5, 0.5)
        ax.set_yticks(range(1, len(ranks) + 1))
        images = scores.loc[scores["setup"] == setup, "image"].nunique()
        ax.set_title(f"{_setup_title(setup)} ({images} images)")
    axes[0][0].set_ylabel("rank (1 = passes best)")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4,
               bbox_to_anchor=(0.5, -0.12))
    fig.suptitle("Beyond the paper — the methods' rankings under the paper's MPRT, sMPRT and "
                 "eMPRT (Hedström et al. 2023)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def ranking_table(*tables: pd.DataFrame) -> pd.DataFrame:
    """One row per setup and method: each test's mean score, its rank and NaN images."""
    ranked = rankings(concat_tables(list(tables)))
    wide = ranked.pivot(index=["setup", "method"], columns="test",
                        values=["mean", "rank", "n_nan"])
    rows = []
    for setup, method in dict.fromkeys(zip(ranked["setup"], ranked["method"])):
        row = {"setup": setup, "method": method_label(method)}
        for test in TESTS:
            cell = (setup, method)
            for field in ("mean", "rank", "n_nan"):
                value = wide.loc[cell, (field, test)] if (field, test) in wide.columns else np.nan
                row[f"{test} {field}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def draw_table(context, *tables: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rankings side by side (the CSV's frame, the Markdown text), Kendall's τ below."""
    table = ranking_table(*tables)
    agreed = agreement(rankings(concat_tables(list(tables))))
    directions = "; ".join(f"{TEST_LABELS[t]}: {'higher' if HIGHER_IS_BETTER[t] else 'lower'}"
                           f" passes" for t in TESTS)
    return table, (f"**Beyond the paper.** The methods' mean score per test and their rank "
                   f"within each setup (1 passes best; {directions}); `n_nan`: images whose "
                   f"score is undefined (a constant map), left out of the mean."
                   "\n\n" + markdown_table(table)
                   + "\nAgreement of the rankings (Kendall's τ-b over the methods both rank):"
                   "\n\n" + markdown_table(agreed.drop(columns="model")))
