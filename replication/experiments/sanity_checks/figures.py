"""Every figure of Sanity Checks for Saliency Maps (arXiv v3 numbering), drawn from the tables
and map renderings the stages wrote; plus the App. B calibration table and the option study.

Where the profile's model is not the paper's (the quick profile explains EfficientNet-Lite0 on
the ImageNet sample instead of Inception v3 on ILSVRC2012), every title says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from skimage.filters import sobel

from replication.claims import load_claims
from replication.experiments.common import read_csv, write_csv
from replication.experiments.sanity_checks.model_randomization import METHOD_LABELS, summarize_table
from replication.experiments.sanity_checks.stages import load_arrays
from replication.experiments.sanity_checks.summary import pair_summary
from replication.fileio import atomic_write_text
from replication.plotting import (ABS_CMAP, DIVERGING_CMAP, HEAT_CMAP, curves, gallery,
                                  markdown_table, save_figure, use_style)

log = logging.getLogger(__name__)

PAPER_MODEL = "inception_v3"
MNIST_TITLES = {"cnn-mnist": "CNN – MNIST", "cnn-fashion_mnist": "CNN – Fashion-MNIST",
                "mlp-mnist": "MLP – MNIST", "mlp-fashion_mnist": "MLP – Fashion-MNIST"}
# App. B (calibration), as printed in the paper: (no-ABS, ABS, HOG, SSIM).
PAPER_CALIBRATION = {
    "gradient vs gaussian": (-0.00049, 0.00032, -0.0016, 0.00027),
    "integrated_gradients vs gaussian": (0.00084, 0.00059, 0.0048, 0.00018),
    "input_x_gradient vs gaussian": (0.00081, 0.00099, -0.0024, 0.00023),
    "uniform vs uniform": (0.00016, -0.0015, 0.078, 0.00076),
    "gaussian vs gaussian (rescaled)": (0.00018, 0.00043, -0.0013, 0.00023),
}
CALIBRATION_METRICS = ("spearman_diverging", "spearman_abs", "hog", "ssim")
FIG1_METHODS = ("gradient", "smoothgrad", "guided_backprop", "guided_gradcam",
                "integrated_gradients", "ig_smoothgrad", "input_x_gradient")
NOT_DRAWN = {
    "fig36": "Fig. 36 (AlexNet, cascading randomization of a 'perturbation method'): the paper "
             "gives no details of the method and AlexNet weights are not available offline.",
    "bone_age": "App. B's Inception v4 on RSNA bone-age radiographs: neither the data nor the "
                "model is public.",
}


def _model_note(model: str, profile: str) -> str:
    if model == PAPER_MODEL:
        return "Inception v3"
    return f"{model} ({profile} profile; the paper: Inception v3)"


def _stage_labels(table: pd.DataFrame) -> dict[int, str]:
    stages = table.drop_duplicates("stage_index").sort_values("stage_index")
    return dict(zip(stages["stage_index"], stages["stage"]))


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
    return gallery(rows, row_labels=[METHOD_LABELS.get(m, m) for m in methods],
                   col_labels=["Input", *labels.values()], cmaps=cmaps, vranges=vrange,
                   title=title)


def similarity_panels(summaries: dict[str, pd.DataFrame], metrics: Sequence[str],
                      titles: dict[str, str], ylims: dict[str, tuple]) -> plt.Figure:
    """Rows = metrics, columns = setups: mean ± SD curves per method (Fig. 4, 5, 20, 21)."""
    fig, axes = plt.subplots(len(metrics), len(summaries),
                             figsize=(3.3 * len(summaries), 2.7 * len(metrics)), squeeze=False)
    for c, (setup, summary) in enumerate(summaries.items()):
        order = list(_stage_labels(summary).values())
        for r, metric in enumerate(metrics):
            data = summary[(summary["metric"] == metric) & (summary["method"] != "")].copy()
            data["method"] = data["method"].map(lambda m: METHOD_LABELS.get(m, m))
            curves(data, x="stage", y="mean", hue="method", sd="sd", order=order, ax=axes[r][c],
                   ylim=ylims.get(metric), title=titles[setup] if r == 0 else "",
                   ylabel={"spearman_abs": "Rank correlation (ABS)",
                           "spearman_diverging": "Rank correlation (no ABS)",
                           "ssim": "SSIM", "hog": "HOG similarity"}.get(metric, metric))
            if order and len(order) > 1:
                axes[r][c].axvline(1, color="black", ls="--", lw=0.8)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.04))
    fig.tight_layout(rect=(0, 0.05, 1, 0.94))
    return fig


def data_randomization_figure(summary: pd.DataFrame, arrays: dict[str, np.ndarray],
                              paper: dict[str, float], title: str) -> plt.Figure:
    """Fig. 6, 22–25: the example's ABS and diverging maps under true and random labels, then
    bars of the rank correlations (± SD over images) with the paper's figure-measured values."""
    methods = [m for m in METHOD_LABELS if f"true/{m}/grayscale" in arrays]
    fig = plt.figure(figsize=(1.05 * len(methods) + 1.5, 6.2))
    grid = fig.add_gridspec(6, len(methods) + 1, height_ratios=[1, 1, 1, 1, 2.6, 0.1])
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
                ax.set_title(METHOD_LABELS[method], fontsize=6)
    ax = fig.add_subplot(grid[4, :])
    positions = np.arange(len(methods))
    for offset, metric, colour in ((-0.2, "spearman_abs", "tab:red"),
                                   (0.2, "spearman_diverging", "tab:blue")):
        rows = summary[summary["metric"] == metric].set_index("method").reindex(methods)
        ax.bar(positions + offset, rows["mean"], 0.38, yerr=rows["sd"], color=colour, alpha=0.75,
               capsize=2, label={"spearman_abs": "ours, ABS", "spearman_diverging": "ours, no ABS"}[metric])
    marks = [paper.get(m) for m in methods]
    ax.scatter(positions - 0.2, [np.nan if v is None else v for v in marks], marker="D", s=14,
               color="black", zorder=3, label="paper, ABS (read from its figure)")
    ax.set_xticks(positions)
    ax.set_xticklabels([METHOD_LABELS[m] for m in methods], rotation=20, ha="right")
    ax.set_ylabel("Rank correlation\n(true vs random labels)")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylim(-0.6, 1.15)
    ax.legend(loc="upper left", ncol=3)
    fig.suptitle(title, fontsize=8)
    return fig


def _paper_values(claims_dir: Path, claim_prefix: str) -> dict[str, float]:
    """The paper's figure-measured ABS values of one pair, from the claims (one source)."""
    values = {}
    for claim in load_claims(claims_dir):
        if claim.id.startswith(claim_prefix + "-") and claim.paper_value is not None:
            values[claim.ours_key.split(".")[1]] = float(claim.paper_value)
    return values


def calibration_table(calibration: pd.DataFrame) -> pd.DataFrame:
    """Ours beside App. B's numbers, one row per comparison."""
    rows = []
    for comparison, group in calibration.groupby("comparison", sort=False):
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




def draw_all(params: dict, *, results: Path, maps: Path, claims_dir: Path, out: Path) -> list[Path]:
    """Every figure and table, in the paper's order; returns the files written."""
    use_style()
    out.mkdir(parents=True, exist_ok=True)
    section = params["sanity_checks"]
    profile = params["profile"]
    model = section["imagenet"]["model"]
    note = _model_note(model, profile)
    written: list[Path] = []
    tables = {p.stem: read_csv(p) for p in sorted((results / "randomization").glob("*.csv"))}
    summaries = {name: summarize_table(t.drop(columns="setup")) for name, t in tables.items()}
    summaries = {k: v[v["convention"].isin(["authors_code"]) | (v["method"] == "")]
                 for k, v in summaries.items()}
    arrays = {p.stem: load_arrays(p) for p in sorted(maps.glob("*.npz"))}
    methods = [m for m in METHOD_LABELS if m in set(tables["imagenet-cascading"]["method"])]
    cascade = arrays["imagenet-cascading"]
    names = [str(n) for n in cascade.get("image_names", [])]

    # Fig. 1: the original model's maps beside an edge detector (Sobel).
    rows = []
    for image in range(len(names)):
        picture = cascade["images"][image].astype(np.float32)
        row = [picture] + [cascade[f"0/{m}/grayscale"][image].astype(np.float32)
                           if f"0/{m}/grayscale" in cascade else None for m in FIG1_METHODS]
        rows.append(row + [sobel(picture.mean(-1))])
    fig = gallery(rows, row_labels=[n.split("_", 1)[-1].rsplit(".", 1)[0] for n in names],
                  col_labels=["Original", *[METHOD_LABELS[m] for m in FIG1_METHODS],
                              "Edge detector (Sobel)"], cmaps=HEAT_CMAP,
                  title=f"Fig. 1 — saliency maps and an edge detector; {note}")
    written += save_figure(fig, out / "fig01_methods_and_edge_detector")

    # Galleries of cascading and independent randomization (Fig. 2, 3, 10–18).
    independent = arrays.get("imagenet-independent", {})
    labels_c = _stage_labels(tables["imagenet-cascading"])
    labels_i = _stage_labels(tables["imagenet-independent"])
    plan = [("fig02_cascading_bird", cascade, labels_c, 0, "grayscale", "Fig. 2 — cascading randomization"),
            ("fig03_independent_bird", independent, labels_i, 0, "grayscale", "Fig. 3 — independent randomization"),
            ("fig10_cascading_bird_grayscale", cascade, labels_c, 0, "grayscale", "Fig. 10 — cascading, bird, ABS"),
            ("fig11_cascading_bird_diverging", cascade, labels_c, 0, "diverging", "Fig. 11 — cascading, bird, diverging"),
            ("fig12_independent_bird_diverging", independent, labels_i, 0, "diverging", "Fig. 12 — independent, bird, diverging"),
            ("fig13_cascading_dog_grayscale", cascade, labels_c, 1, "grayscale", "Fig. 13 — cascading, dog, ABS"),
            ("fig14_cascading_dog_diverging", cascade, labels_c, 1, "diverging", "Fig. 14 — cascading, dog, diverging"),
            ("fig15_independent_dog", independent, labels_i, 1, "grayscale", "Fig. 15 — independent, dog"),
            ("fig16_cascading_corn_grayscale", cascade, labels_c, 2, "grayscale", "Fig. 16 — cascading, corn, ABS"),
            ("fig17_cascading_corn_diverging", cascade, labels_c, 2, "diverging", "Fig. 17 — cascading, corn, diverging"),
            ("fig18_independent_corn", independent, labels_i, 2, "grayscale", "Fig. 18 — independent, corn")]
    for stem, source, labels, image, style, title in plan:
        if "images" not in source or image >= len(source["images"]):
            log.warning("%s: the image set holds no gallery image %d; not drawn", stem, image)
            continue
        fig = randomization_gallery(source, labels, image, style, methods,
                                    f"{title}; {names[image] if image < len(names) else ''}; {note}")
        written += save_figure(fig, out / stem)

    # Fig. 4: cascading rank correlations, ImageNet model, CNN–Fashion-MNIST, MLP–MNIST.
    wanted = [k for k in ("imagenet-cascading", "cnn-fashion_mnist-cascading",
                          "mlp-mnist-cascading") if k in summaries]
    titles = {k: (note if k.startswith("imagenet") else MNIST_TITLES[k.rsplit("-", 1)[0]])
              for k in summaries}
    fig = similarity_panels({k: summaries[k] for k in wanted}, ["spearman_abs", "spearman_diverging"],
                            titles, {"spearman_abs": (-0.25, 1.2), "spearman_diverging": (-0.25, 1.2)})
    fig.suptitle("Fig. 4 — cascading randomization: rank correlation with the original maps "
                 "(mean ± SD over images)", fontsize=8)
    written += save_figure(fig, out / "fig04_cascading_rank_correlation")
    fig = similarity_panels({"imagenet-cascading": summaries["imagenet-cascading"]},
                            ["ssim", "hog"], titles, {"ssim": (0, 1.2), "hog": (-0.2, 1.2)})
    fig.suptitle("Fig. 5 — cascading randomization: SSIM and HOG similarity", fontsize=8)
    written += save_figure(fig, out / "fig05_cascading_ssim_hog")

    # Fig. 6 and 22–25: data randomization.
    pairs = {p.stem: pair_summary(read_csv(p))
             for p in sorted((results / "data_randomization").glob("*.csv"))}
    for stem, pair, claim in (("fig06_data_randomization_cnn_mnist", "cnn-mnist", "C11"),
                              ("fig22_data_randomization_cnn_mnist", "cnn-mnist", "C11"),
                              ("fig23_data_randomization_mlp_mnist", "mlp-mnist", "C13"),
                              ("fig24_data_randomization_cnn_fashion_mnist", "cnn-fashion_mnist", "C12"),
                              ("fig25_data_randomization_mlp_fashion_mnist", "mlp-fashion_mnist", "C13F")):
        if pair not in pairs:
            continue
        fig = data_randomization_figure(pairs[pair], arrays[f"{pair}-data"],
                                        _paper_values(claims_dir, claim),
                                        f"{stem.split('_')[0].replace('fig', 'Fig. ')} — true vs "
                                        f"random labels, {MNIST_TITLES[pair]}")
        written += save_figure(fig, out / stem)

    # Fig. 7 and 37: the one-layer sum-pooled conv net.
    toys = arrays.get("toys", {})
    if toys:
        rows, row_labels = [], []
        for version in ("rgb", "grayscale"):
            keys = [k for k in ("gradient", "smoothgrad", "integrated_gradients", "guided_backprop")
                    if f"{version}/{k}" in toys]
            rows.append([toys["image"].astype(np.float32) if version == "rgb"
                         else toys["image"].astype(np.float32).mean(-1)]
                        + [np.abs(toys[f"{version}/{k}"]).sum(0) for k in keys]
                        + [toys["edges"].astype(np.float32)])
            row_labels.append(version)
        columns = ["Input", "Gradient", "SmoothGrad", "Integrated Gradients", "Guided Backprop",
                   "Edge map (Sobel)"]
        fig = gallery(rows, row_labels=row_labels, col_labels=columns, cmaps=ABS_CMAP,
                      title="Fig. 7 — one 3×3 random filter → ReLU → sum pooling (first filter seed)")
        written += save_figure(fig, out / "fig07_one_layer_conv_net")
        fig = gallery(rows[1:], row_labels=row_labels[1:], col_labels=columns, cmaps=ABS_CMAP,
                      title="Fig. 37A — the one-layer sum-pooled conv net again (grayscale)")
        written += save_figure(fig, out / "fig37_one_layer_conv_net")

    # Fig. 8–9: Guided Backprop under cascading randomization on more images.
    examples = {k[len("examples/"):]: v for k, v in cascade.items() if k.startswith("examples/")}
    if examples:
        for stem, style in (("fig08_guided_backprop_cascading", "grayscale"),
                            ("fig09_guided_backprop_cascading_diverging", "diverging")):
            rows = []
            for image in range(len(examples["images"])):
                picture = examples["images"][image].astype(np.float32)
                rows.append([picture] + [examples[f"{i}/guided_backprop/{style}"][image].astype(np.float32)
                                         for i in labels_c])
            fig = gallery(rows, row_labels=[f"image {i + 1}" for i in range(len(rows))],
                          col_labels=["Input", *labels_c.values()],
                          cmaps=ABS_CMAP if style == "grayscale" else DIVERGING_CMAP,
                          vranges=(0.0, 1.0) if style == "grayscale" else None,
                          title=f"{stem.split('_')[0].replace('fig0', 'Fig. ')} — Guided Backprop, "
                                f"cascading randomization ({style}); {note}")
            written += save_figure(fig, out / stem)

    # Fig. 19: input ⊙ random gradients.
    noise = read_csv(results / "toys" / "input_times_random.csv")
    fig, axes = plt.subplots(2, noise["metric"].nunique(), figsize=(11, 4.6), squeeze=False)
    for c, (metric, group) in enumerate(noise.groupby("metric", sort=False)):
        for r, (images, part) in enumerate(group.groupby("images", sort=False)):
            for (location, distribution), line in part.groupby(["location", "distribution"]):
                axes[r][c].errorbar(line["scale"], line["mean"], yerr=line["sd"], marker="o",
                                    ms=2.5, lw=1, capsize=2,
                                    label=f"{distribution}, mean {location:g}")
            axes[r][c].set_xscale("symlog", linthresh=0.1)
            axes[r][c].set_title(f"{images}: {metric}")
            axes[r][c].set_xlabel("noise scale s")
    axes[0][0].legend()
    fig.suptitle("Fig. 19 — similarity of x⊙u and x⊙v for random u, v = mean + s·z "
                 "(the paper's noise schedule is not published)", fontsize=8)
    fig.tight_layout()
    written += save_figure(fig, out / "fig19_input_times_random_gradient")

    # Fig. 20–21: MNIST / Fashion-MNIST curves.
    cascading = {k: summaries[f"{k}-cascading"] for k in MNIST_TITLES if f"{k}-cascading" in summaries}
    if cascading:
        fig = similarity_panels(cascading, ["spearman_abs", "spearman_diverging"],
                                {k: MNIST_TITLES[k] for k in cascading},
                                {"spearman_abs": (-0.25, 1.2), "spearman_diverging": (-0.25, 1.2)})
        fig.suptitle("Fig. 20 — cascading randomization of the MNIST / Fashion-MNIST models",
                     fontsize=8)
        written += save_figure(fig, out / "fig20_mnist_cascading")
    independent_mnist = {k: summaries[f"{k}-independent"] for k in ("cnn-mnist", "cnn-fashion_mnist")
                         if f"{k}-independent" in summaries}
    if independent_mnist:
        fig = similarity_panels(independent_mnist, ["spearman_abs", "spearman_diverging"],
                                {k: MNIST_TITLES[k] for k in independent_mnist},
                                {"spearman_abs": (-0.25, 1.2), "spearman_diverging": (-0.25, 1.2)})
        fig.suptitle("Fig. 21 — independent randomization of the MNIST / Fashion-MNIST CNNs",
                     fontsize=8)
        written += save_figure(fig, out / "fig21_mnist_independent")

    # Fig. 26–35: MNIST / Fashion-MNIST galleries.
    plan = [("fig26", "cnn-fashion_mnist", "cascading", "grayscale"),
            ("fig27", "cnn-fashion_mnist", "cascading", "diverging"),
            ("fig28", "cnn-fashion_mnist", "independent", "grayscale"),
            ("fig29", "cnn-fashion_mnist", "independent", "diverging"),
            ("fig30", "cnn-mnist", "cascading", "grayscale"),
            ("fig31", "cnn-mnist", "cascading", "diverging"),
            ("fig32", "cnn-mnist", "independent", "grayscale"),
            ("fig33", "cnn-mnist", "independent", "diverging"),
            ("fig34", "mlp-mnist", "cascading", "diverging"),
            ("fig34b", "mlp-mnist", "cascading", "grayscale"),
            ("fig35", "mlp-fashion_mnist", "cascading", "diverging"),
            ("fig35b", "mlp-fashion_mnist", "cascading", "grayscale")]
    for number, setup, mode, style in plan:
        key = f"{setup}-{mode}"
        if key not in arrays:
            continue
        setup_methods = [m for m in METHOD_LABELS if f"1/{m}/{style}" in arrays[key]]
        fig = randomization_gallery(arrays[key], _stage_labels(tables[key]), 0, style, setup_methods,
                                    f"Fig. {number[3:]} — {mode} randomization, "
                                    f"{MNIST_TITLES[setup]}, {style}")
        written += save_figure(fig, out / f"{number}_{setup}_{mode}_{style}")

    # App. B calibration table and the option study.
    table = calibration_table(read_csv(results / "calibration.csv"))
    write_csv(table, out / "table_calibration.csv")
    atomic_write_text(out / "table_calibration.md",
                      f"Null calibration (App. B): real gradient-family maps of the original "
                      f"model vs random masks, and masks vs masks; {note}.\n\n" + markdown_table(table))
    written += [out / "table_calibration.csv", out / "table_calibration.md"]
    verdicts = read_csv(results / "bn_study_verdicts.csv")
    if len(verdicts):
        wide = verdicts.assign(cell=verdicts.apply(
            lambda r: f"{r['value']:.3g} ({'✓' if r['verdict'] == 'reproduced' else '✗'})", axis=1)
        ).pivot_table(index="claim", columns=["batchnorm", "convention"], values="cell",
                      aggfunc="first")
        wide.columns = [f"{b} / {c}" for b, c in wide.columns]
        wide = wide.reset_index()
        write_csv(verdicts, out / "table_option_study.csv")
        atomic_write_text(out / "table_option_study.md",
                          "How the model-randomization verdicts move with the batch-norm handling "
                          "and the map convention (value, ✓ = the claim holds); "
                          f"{note}.\n\n" + markdown_table(wide))
        written += [out / "table_option_study.csv", out / "table_option_study.md"]
    atomic_write_text(out / "NOT_DRAWN.md", "Figures this repository cannot draw:\n\n"
                      + "".join(f"- {text}\n" for text in NOT_DRAWN.values()))
    written.append(out / "NOT_DRAWN.md")
    return written
