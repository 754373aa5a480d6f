"""Figures and tables of figures/expected_gradcam/, drawn from the stage tables only.

Numbered in the order of the paper's abstract (saturation, baseline sensitivity, faithfulness,
robustness, infidelity, complexity, substitute, qualitative) after the hero panel, as listed in
paper_notes/expected_gradcam.md §3 (``INVENTORY``). The paper's own figures are unknown: these
are our figures of our measurements. Every title names the model and the profile.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from replication import plotting
from replication.attribution import postprocess
from replication.experiments.expected_gradcam import experiments as ex
from replication.metrics import stats
from replication.plotting import write_table

MODEL_LABELS = {"efficientnet_lite0": "EfficientNet-Lite0", "mnist_cnn": "MNIST CNN",
                "vgg16": "VGG-16", "resnet50": "ResNet-50", "vgg16_bn": "VGG-16-BN",
                "resnet18": "ResNet-18", "efficientnet_b0": "EfficientNet-B0",
                "inception_v3": "Inception v3"}
PAPER_MODELS = ("vgg16", "resnet50")
EGC_COLOUR, OTHER_COLOUR, REFERENCE_COLOUR = "tab:red", "tab:gray", "tab:blue"

# (file stem, what it shows, drawn from, claim). ``<model>`` stems are one file per model.
INVENTORY: list[tuple[str, str, str, str]] = [
    ("fig01_qualitative_<model>", "methods side by side, overlays on the first images",
     "panels.npz", "qualitative"),
    ("fig02_internal_saturation", "s(α) = cos(e(α), e(1)) mean ± SD, black and data baselines; "
     "α* histogram", "saturation_curves.csv, saturation_alpha_star.csv", "C1"),
    ("fig03_saturation_topk_channels", "target probability keeping the top-k channels of "
     "Grad-CAM vs Expected Grad-CAM weights, strong-saturation half vs rest",
     "saturation_topk.csv, saturation_alpha_star.csv", "C1"),
    ("fig04_baseline_sensitivity", "per-image mean pairwise Spearman across baseline choices, "
     "Integrated Grad-CAM vs Expected Grad-CAM", "baseline_sensitivity.csv", "C6"),
    ("fig05_insertion_deletion", "insertion / deletion AUC per method, mean and 95% CI",
     "comparison_summary.csv", "C2"),
    ("fig06_infidelity", "infidelity per method (raw maps), mean and 95% CI",
     "comparison_summary.csv", "C3"),
    ("fig07_max_sensitivity", "max-sensitivity per method, mean and 95% CI",
     "comparison_summary.csv", "C4"),
    ("fig08_road_complexity", "ROAD MoRF / LeRF, complexity and sparseness per method",
     "comparison_summary.csv", "C2 (support)"),
    ("fig09_noise_levels_<model>", "Expected Grad-CAM maps as σ grows", "sigma_panels.npz", "C5"),
    ("fig10_complexity_vs_sigma", "complexity, sparseness, insertion, deletion vs σ (mean ± SD)",
     "sigma_sweep.csv", "C5"),
    ("fig11_samples_stability", "seed-to-seed correlation of maps vs M", "sample_stability.csv",
     "choice of M"),
    ("fig12_raw_coarse_maps_<model>", "raw layer-resolution maps of every method",
     "panels.npz", "qualitative"),
    ("table01_comparison", "every method × metric: mean [95% CI], difference with Grad-CAM "
     "[95% CI], Wilcoxon p, n", "comparison_summary.csv", "C2, C3, C4"),
    ("table02_saturation", "α* per model and baseline; top-k channel AUC by saturation group",
     "saturation_alpha_star.csv, saturation_topk.csv", "C1"),
    ("table03_baseline_sensitivity", "mean pairwise Spearman per method, paired difference",
     "baseline_sensitivity.csv", "C6"),
    ("table04_sigma_sweep", "mean of every metric per σ, Spearman ρ(σ, mean)", "sigma_sweep.csv",
     "C5"),
    ("table05_samples_stability", "mean stability per M and the passes it costs",
     "sample_stability.csv", "choice of M"),
    ("table06_expected_gradcam_pp", "Expected Grad-CAM++ (ours) − Grad-CAM++ on every metric",
     "comparison_scores.csv", "C8"),
    ("table07_special_cases", "reductions on real images and layer-EG completeness gaps",
     "special_cases.csv", "C9"),
]


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def profile_note(models: Sequence[str], profile: str) -> str:
    """"(quick profile; the paper used VGG-16/ResNet-50)" unless every model is the paper's."""
    name = f"{profile} profile" if profile else "profile not recorded"
    if models and all(m in PAPER_MODELS for m in models):
        return f"({name})"
    return f"({name}; the paper used VGG-16/ResNet-50)"


def _title(what: str, models: Sequence[str], profile: str) -> str:
    labels = ", ".join(model_label(m) for m in models)
    return f"{what} — {labels} {profile_note(models, profile)}"


def _method_label(method: str) -> str:
    return ex.METHOD_LABELS.get(method, method)


def _colour(method: str) -> str:
    if method.startswith("expected_gradcam"):
        return EGC_COLOUR
    return REFERENCE_COLOUR if method == ex.REFERENCE_METHOD else OTHER_COLOUR


# --------------------------------------------------------------------------------- markdown







# --------------------------------------------------------------------------------- panels

def _overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB overlay of a [0, 1] map (jet) on a uint8 image (gray images become RGB)."""
    rgb = image.astype(np.float64) / 255.0
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    heat = plt.get_cmap("jet")(cam)[..., :3]
    return (1 - alpha) * rgb + alpha * heat


def _upsampled(coarse: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling and per-map min–max, as the metrics and pytorch-grad-cam do."""
    maps = torch.from_numpy(np.nan_to_num(coarse.astype(np.float32)))[:, None]
    return postprocess.minmax(postprocess.upsample(maps, size))[:, 0].numpy()


def _short(name: str) -> str:
    """'n01440764_tench.JPEG' → 'tench'; MNIST names are kept."""
    stem = name.rsplit(".", 1)[0] if name.lower().endswith((".jpeg", ".jpg", ".png")) else name
    return (stem.split("_", 1)[1] if stem[:1] == "n" and "_" in stem else stem)[:18]


def _gallery(grid: list, row_labels: list[str], col_labels: list[str], title: str,
             cmaps: str) -> plt.Figure:
    """``plotting.gallery`` with the title above the (rotated, when many) column labels."""
    fig = plotting.gallery(grid, row_labels=row_labels, col_labels=col_labels, cmaps=cmaps,
                           cell=1.0)
    fig.suptitle(title, fontsize=8, y=1.0 + (0.55 if len(col_labels) > 8 else 0.12) / len(grid))
    return fig


def _panel_models(panels: Mapping[str, np.ndarray]) -> list[str]:
    return list(dict.fromkeys(key.split("/")[0] for key in panels))


def qualitative_figure(panels: Mapping[str, np.ndarray], model: str, profile: str, *,
                       raw: bool = False) -> plt.Figure:
    """Rows: images; columns: the image, then every method (overlay, or raw coarse map)."""
    images, maps = panels[f"{model}/images"], panels[f"{model}/maps"]
    methods = [str(m) for m in panels[f"{model}/methods"]]
    names = [str(n) for n in panels[f"{model}/names"]]
    size = tuple(images.shape[1:3])
    grid = []
    for i in range(len(images)):
        image = images[i] if images.shape[-1] == 3 else images[i][..., 0]
        row: list[np.ndarray | None] = [image]
        for j in range(len(methods)):
            coarse = maps[j, i]
            if np.isnan(coarse).all():
                row.append(None)
            elif raw:
                row.append(coarse)
            else:
                row.append(_overlay(images[i], _upsampled(coarse[None], size)[0]))
        grid.append(row)
    what = "Raw coarse maps (layer resolution)" if raw else "Qualitative comparison"
    return _gallery(grid, [_short(n) for n in names],
                    ["image"] + [_method_label(m) for m in methods],
                    _title(what, [model], profile), plotting.ABS_CMAP if not raw else "viridis")


def noise_figure(panels: Mapping[str, np.ndarray], model: str, profile: str) -> plt.Figure:
    """Rows: (method, image); columns: the image, then the method's map at each σ (overlays)."""
    images, maps, sigmas = (panels[f"{model}/images"], panels[f"{model}/maps"],
                            panels[f"{model}/sigmas"])
    methods = [str(m) for m in panels[f"{model}/methods"]]
    names = [_short(str(n)) for n in panels[f"{model}/names"]]
    size = tuple(images.shape[1:3])
    grid, labels = [], []
    for k, method in enumerate(methods):
        for i in range(len(images)):
            image = images[i] if images.shape[-1] == 3 else images[i][..., 0]
            grid.append([image] + [_overlay(images[i], _upsampled(maps[k, s, i][None], size)[0])
                                   for s in range(len(sigmas))])
            labels.append(f"{names[i]}\n{_method_label(method)}" if len(methods) > 1 else names[i])
    return _gallery(grid, labels, ["image"] + [f"σ = {s:g}" for s in sigmas],
                    _title("Expected Grad-CAM as the noise level σ grows", [model], profile),
                    plotting.ABS_CMAP)


# --------------------------------------------------------------------------------- curves

def saturation_figure(curves: pd.DataFrame, alpha_star: pd.DataFrame, profile: str,
                      threshold: float = 0.95) -> plt.Figure:
    models = list(dict.fromkeys(curves["model"]))
    fig, axes = plt.subplots(2, len(models), figsize=(3.6 * len(models), 5.2), squeeze=False)
    for c, model in enumerate(models):
        ax = axes[0][c]
        rows = curves[curves["model"] == model]
        for baseline, colour in (("black", "black"), ("data", "tab:orange")):
            sub = rows[rows["baseline"] == baseline]
            if sub.empty:
                continue
            g = sub.groupby("alpha")["cosine"].agg(["mean", "std"]).reset_index()
            ax.plot(g["alpha"], g["mean"], color=colour, label=f"{baseline} baseline")
            ax.fill_between(g["alpha"], g["mean"] - g["std"].fillna(0),
                            g["mean"] + g["std"].fillna(0), color=colour, alpha=0.15, lw=0)
        ax.axhline(threshold, color="tab:red", ls="--", lw=0.8, label=f"s = {threshold:g}")
        n = rows["image"].nunique()
        ax.set(xlabel="α", ylabel="cos(e(α), e(1))", title=f"{model_label(model)} (n = {n})")
        ax.legend()
        ax = axes[1][c]
        stars = alpha_star[alpha_star["model"] == model]
        for baseline, colour in (("black", "black"), ("data", "tab:orange")):
            values = stars[stars["baseline"] == baseline]["alpha_star"].dropna()
            if len(values):
                ax.hist(values, bins=np.linspace(0, 1, 21), color=colour, alpha=0.5,
                        label=f"{baseline} (median {values.median():.2f})")
        ax.set(xlabel="α* = min{α : s(α) ≥ threshold}", ylabel="images")
        ax.legend()
    fig.suptitle(_title("Internal saturation along the path", models, profile), fontsize=8)
    fig.tight_layout()
    return fig


def topk_figure(topk: pd.DataFrame, alpha_star: pd.DataFrame, profile: str) -> plt.Figure:
    models = list(dict.fromkeys(topk["model"]))
    groups = ex.saturation_groups(alpha_star)
    data = topk.merge(groups[["model", "image", "group"]], on=["model", "image"])
    fig, axes = plt.subplots(1, len(models), figsize=(3.8 * len(models), 2.8), squeeze=False)
    for c, model in enumerate(models):
        ax = axes[0][c]
        rows = data[data["model"] == model]
        for (method, group), sub in rows.groupby(["method", "group"], sort=False):
            g = sub.groupby("fraction")["probability"].mean()
            ax.plot(g.index, g.to_numpy(), marker="o", markersize=2.5,
                    color=_colour(method), ls="-" if group == "strong" else ":",
                    label=f"{_method_label(method)}, {group} saturation "
                          f"(n = {sub['image'].nunique()})")
        ax.set(xscale="log", xlabel="fraction of channels kept (top-k by weight)",
               ylabel="target probability", title=model_label(model))
        ax.legend(fontsize=6)
    fig.suptitle(_title("Top-k channels under saturation (our reading)", models, profile),
                 fontsize=8)
    fig.tight_layout()
    return fig


def baseline_figure(pairs: pd.DataFrame, profile: str) -> plt.Figure:
    means = ex.mean_pairwise(pairs)
    models = list(dict.fromkeys(means["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 2.8), squeeze=False)
    for c, model in enumerate(models):
        ax = axes[0][c]
        rows = means[means["model"] == model]
        methods = list(dict.fromkeys(rows["method"]))
        values = [rows[rows["method"] == m]["mean_spearman"].dropna().to_numpy() for m in methods]
        ax.boxplot(values, tick_labels=[textwrap.fill(_method_label(m), 12) for m in methods],
                   widths=0.5)
        for k, v in enumerate(values):
            ax.scatter(np.full(len(v), k + 1.0), v, s=6, color=_colour(methods[k]), alpha=0.7)
        ax.set(ylabel="mean pairwise Spearman (per image)",
               title=f"{model_label(model)} (n = {rows['image'].nunique()})")
    fig.suptitle(_title("Sensitivity to the baseline choice", models, profile), fontsize=8)
    fig.tight_layout()
    return fig


def metric_bars(summary: pd.DataFrame, metrics: Sequence[str], profile: str,
                what: str) -> plt.Figure | None:
    """One panel per model × metric: mean and 95% CI per method, Expected Grad-CAM in red."""
    rows = summary[summary["metric"].isin(metrics)]
    if rows.empty:
        return None
    models = list(dict.fromkeys(rows["model"]))
    present = [m for m in metrics if m in set(rows["metric"])]
    fig, axes = plt.subplots(len(present), len(models), squeeze=False,
                             figsize=(3.6 * len(models), 2.6 * len(present)))
    for r, metric in enumerate(present):
        for c, model in enumerate(models):
            ax = axes[r][c]
            sub = rows[(rows["model"] == model) & (rows["metric"] == metric)]
            y = np.arange(len(sub))
            low = (sub["mean"] - sub["ci_low"]).clip(lower=0).fillna(0)
            high = (sub["ci_high"] - sub["mean"]).clip(lower=0).fillna(0)
            ax.barh(y, sub["mean"], xerr=[low, high], color=[_colour(m) for m in sub["method"]],
                    error_kw={"lw": 0.8})
            ax.set_yticks(y)
            ax.set_yticklabels([f"{_method_label(m)} (n={n})"
                                for m, n in zip(sub["method"], sub["n"])])
            ax.invert_yaxis()
            arrow = "↑" if bool(sub["higher_is_better"].iloc[0]) else "↓"
            ax.set(xlabel=f"{metric} ({arrow} better)", title=model_label(model))
    fig.suptitle(_title(what, models, profile), fontsize=8)
    fig.tight_layout()
    return fig


def sigma_figure(sweep: pd.DataFrame, profile: str) -> plt.Figure:
    models = list(dict.fromkeys(sweep["model"]))
    metrics = list(dict.fromkeys(sweep["metric"]))
    methods = list(dict.fromkeys(sweep["method"])) if "method" in sweep else [None]
    styles = dict(zip(methods, ("-", "--", ":", "-.")))
    fig, axes = plt.subplots(len(metrics), len(models), squeeze=False,
                             figsize=(3.4 * len(models), 2.2 * len(metrics)))
    for r, metric in enumerate(metrics):
        for c, model in enumerate(models):
            ax = axes[r][c]
            rows = sweep[(sweep["model"] == model) & (sweep["metric"] == metric)]
            n = 0
            for method in methods:
                sub = rows if method is None else rows[rows["method"] == method]
                g = sub.groupby("sigma")["value"].agg(["mean", "std", "size"])
                n = max(n, int(g["size"].max()) if len(g) else 0)
                ax.errorbar(g.index, g["mean"], yerr=g["std"].fillna(0), marker="o", markersize=3,
                            color=EGC_COLOUR, capsize=2, lw=1, ls=styles.get(method, "-"),
                            label=_method_label(method) if method else None)
            ax.set(xlabel="σ (pixel units)", ylabel=metric, title=f"{model_label(model)} (n = {n})")
            if len(methods) > 1 and r == 0:
                ax.legend(fontsize=6)
    fig.suptitle(_title("Expected Grad-CAM as σ grows (mean ± SD)", models, profile), fontsize=8)
    fig.tight_layout()
    return fig


def stability_figure(stability: pd.DataFrame, profile: str) -> plt.Figure:
    models = list(dict.fromkeys(stability["model"]))
    methods = list(dict.fromkeys(stability["method"])) if "method" in stability else [None]
    styles = dict(zip(methods, ("-", "--", ":", "-.")))
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 2.6), squeeze=False)
    for c, model in enumerate(models):
        ax = axes[0][c]
        rows = stability[stability["model"] == model]
        for method in methods:
            sub = rows if method is None else rows[rows["method"] == method]
            for metric, colour in (("pearson", "tab:purple"), ("spearman", "tab:green")):
                g = sub[sub["metric"] == metric].groupby("n_samples")["value"].agg(["mean", "std"])
                label = metric if method is None or len(methods) == 1 else \
                    f"{metric}, {_method_label(method)}"
                ax.errorbar(g.index, g["mean"], yerr=g["std"].fillna(0), marker="o", markersize=3,
                            capsize=2, lw=1, color=colour, ls=styles.get(method, "-"), label=label)
        ticks = sorted(rows["n_samples"].unique())
        ax.set(xscale="log", xlabel="M (samples; forward+backward passes per image)",
               ylabel="seed-to-seed correlation",
               title=f"{model_label(model)} (n = {rows['image'].nunique()})")
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(int(m)) for m in ticks])
        ax.legend(fontsize=6)
    fig.suptitle(_title("Expected Grad-CAM stability vs M", models, profile), fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------- tables

def comparison_table(summary: pd.DataFrame) -> pd.DataFrame:
    out = summary.copy()
    out["method"] = out["method"].map(_method_label)
    cell = plotting.table_cell
    out["mean [95% CI]"] = [f"{cell(m)} [{cell(lo)}, {cell(hi)}]"
                            for m, lo, hi in zip(out["mean"], out["ci_low"], out["ci_high"])]
    out["Δ vs Grad-CAM [95% CI]"] = [
        "—" if math.isnan(d) else f"{cell(d)} [{cell(lo)}, {cell(hi)}]"
        for d, lo, hi in zip(out["difference"], out["difference_ci_low"],
                             out["difference_ci_high"])]
    out["direction"] = np.where(out["higher_is_better"], "↑", "↓")
    return out[["model", "metric", "direction", "method", "n", "mean [95% CI]",
                "Δ vs Grad-CAM [95% CI]", "p_value", "better_than_reference",
                "significantly_better"]].rename(columns={"p_value": "Wilcoxon p",
                                                         "better_than_reference": "better",
                                                         "significantly_better": "significant"})


def saturation_table(alpha_star: pd.DataFrame, topk: pd.DataFrame | None) -> pd.DataFrame:
    rows = []
    for (model, baseline), g in alpha_star.groupby(["model", "baseline"], sort=False):
        v = g["alpha_star"].dropna()
        rows.append({"model": model, "baseline": baseline, "n": int(g["image"].nunique()),
                     "draws": int(len(v)), "median α*": v.median(), "mean α*": v.mean(),
                     "share α* ≤ 0.7": float((v <= 0.7).mean()) if len(v) else math.nan})
    table = pd.DataFrame(rows)
    if topk is not None and len(topk):
        aucs = ex.channel_insertion_auc(topk).merge(ex.saturation_groups(alpha_star),
                                                    on=["model", "image"])
        wide = aucs.pivot_table(index=["model", "group"], columns="method", values="auc",
                                aggfunc="mean").reset_index()
        wide.columns = [c if c in ("model", "group") else f"top-k AUC {_method_label(c)}"
                        for c in wide.columns]
        wide = wide.rename(columns={"group": "baseline"})
        wide["baseline"] = "black: " + wide["baseline"] + " saturation"
        table = pd.concat([table, wide], ignore_index=True)
    return table


def paired_table(scores: pd.DataFrame, a: str, b: str, *, n_resamples: int = 10_000,
                 seed: int = 0) -> pd.DataFrame:
    """Paired difference a − b on every model × metric (images scored by both)."""
    rows = []
    for (model, metric), g in scores.groupby(["model", "metric"], sort=False):
        wide = g.pivot(index="image", columns="method", values="value")
        if a not in wide or b not in wide:
            continue
        pairs = wide[[a, b]].dropna()
        if pairs.empty:
            continue
        cmp = stats.paired_comparison(pairs[a].to_numpy(), pairs[b].to_numpy(),
                                      n_resamples=n_resamples, seed=seed)
        rows.append({"model": model, "metric": metric, "n": cmp.n_pairs,
                     f"mean {_method_label(a)}": pairs[a].mean(),
                     f"mean {_method_label(b)}": pairs[b].mean(),
                     "difference": cmp.mean_difference, "ci_low": cmp.ci_low,
                     "ci_high": cmp.ci_high, "Wilcoxon p": cmp.p_value})
    return pd.DataFrame(rows)


def sigma_table(sweep: pd.DataFrame) -> pd.DataFrame:
    from scipy.stats import spearmanr

    keys = ["model", "method", "metric"] if "method" in sweep else ["model", "metric"]
    means = sweep.groupby([*keys, "sigma"])["value"].mean().unstack("sigma")
    means.columns = [f"σ={s:g}" for s in means.columns]
    rho = []
    for key, g in sweep.groupby(keys, sort=False):
        m = g.groupby("sigma")["value"].mean()
        constant = m.nunique() < 2
        rho.append({**dict(zip(keys, key)),
                    "Spearman ρ(σ, mean)": math.nan if len(m) < 3 or constant
                    else float(spearmanr(m.index, m.to_numpy()).statistic)})
    table = means.reset_index().merge(pd.DataFrame(rho), on=keys)
    if "method" in table:
        table["method"] = table["method"].map(_method_label)
    return table


def stability_table(stability: pd.DataFrame) -> pd.DataFrame:
    keys = ["model", "method"] if "method" in stability else ["model"]
    g = (stability.groupby([*keys, "metric", "n_samples"])["value"]
         .agg(["mean", "std", "min", "count"]).reset_index())
    if "method" in g:
        g["method"] = g["method"].map(_method_label)
    g["passes per image"] = g["n_samples"]
    return g.rename(columns={"n_samples": "M", "count": "n"})


def special_table(special: pd.DataFrame) -> pd.DataFrame:
    return (special.groupby(["model", "case"], sort=False)
            .agg(n=("image", "size"), max_difference=("difference", "max"),
                 max_relative=("relative", "max"), median_relative=("relative", "median"))
            .reset_index())


def baseline_table(pairs: pd.DataFrame, n_resamples: int = 10_000,
                   seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paired difference of the per-image mean pairwise Spearman, and the configurations."""
    means = ex.mean_pairwise(pairs).rename(columns={"mean_spearman": "value"})
    means["metric"] = "mean pairwise Spearman"
    others = [m for m in dict.fromkeys(means["method"]) if m != "integrated_gradcam"]
    table = pd.concat([paired_table(means, m, "integrated_gradcam", n_resamples=n_resamples,
                                    seed=seed)
                       .rename(columns={f"mean {_method_label(m)}": "mean (method)"})
                       .assign(method=_method_label(m)) for m in others],
                      ignore_index=True) if others else pd.DataFrame()
    configs = (pairs.groupby(["model", "method"])
               .apply(lambda g: ", ".join(sorted(set(g["config_a"]) | set(g["config_b"]))),
                      include_groups=False).rename("configurations").reset_index())
    return table, configs


# --------------------------------------------------------------------------------- driver

def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else None


def _npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def make_figures(results: str | Path, out: str | Path, *, profile: str = "",
                 n_resamples: int = 10_000, seed: int = 0) -> list[Path]:
    """Draw every item of ``INVENTORY`` whose tables exist; return the files written."""
    plotting.use_style()
    results, out = Path(results), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: plt.Figure | None, stem: str) -> None:
        if fig is not None:
            written.extend(plotting.save_figure(fig, out / stem))

    panels, sigma_panels = _npz(results / "panels.npz"), _npz(results / "sigma_panels.npz")
    scores, summary = _read(results / "comparison_scores.csv"), _read(results / "comparison_summary.csv")
    curves, stars = _read(results / "saturation_curves.csv"), _read(results / "saturation_alpha_star.csv")
    topk, pairs = _read(results / "saturation_topk.csv"), _read(results / "baseline_sensitivity.csv")
    sweep, stability = _read(results / "sigma_sweep.csv"), _read(results / "sample_stability.csv")
    special = _read(results / "special_cases.csv")

    if panels:
        for model in _panel_models(panels):
            if panels[f"{model}/maps"].size:
                save(qualitative_figure(panels, model, profile), f"fig01_qualitative_{model}")
    if curves is not None and stars is not None:
        save(saturation_figure(curves, stars, profile), "fig02_internal_saturation")
    if topk is not None and stars is not None:
        save(topk_figure(topk, stars, profile), "fig03_saturation_topk_channels")
    if pairs is not None:
        save(baseline_figure(pairs, profile), "fig04_baseline_sensitivity")
    if summary is not None:
        save(metric_bars(summary, ["insertion", "deletion"], profile,
                         "Insertion and deletion AUC (mean, 95% bootstrap CI)"),
             "fig05_insertion_deletion")
        save(metric_bars(summary, ["infidelity", "infidelity_scaled"], profile,
                         "Infidelity (mean, 95% bootstrap CI)"), "fig06_infidelity")
        save(metric_bars(summary, ["max_sensitivity"], profile,
                         "Max-sensitivity (mean, 95% bootstrap CI)"), "fig07_max_sensitivity")
        save(metric_bars(summary, ["road_morf", "road_lerf", "complexity", "sparseness"], profile,
                         "ROAD, complexity and sparseness (mean, 95% bootstrap CI)"),
             "fig08_road_complexity")
    if sigma_panels:
        for model in _panel_models(sigma_panels):
            if sigma_panels[f"{model}/maps"].size:
                save(noise_figure(sigma_panels, model, profile), f"fig09_noise_levels_{model}")
    if sweep is not None:
        save(sigma_figure(sweep, profile), "fig10_complexity_vs_sigma")
    if stability is not None:
        save(stability_figure(stability, profile), "fig11_samples_stability")
    if panels:
        for model in _panel_models(panels):
            if panels[f"{model}/maps"].size:
                save(qualitative_figure(panels, model, profile, raw=True),
                     f"fig12_raw_coarse_maps_{model}")

    models = sorted(set(summary["model"])) if summary is not None else []
    note = (f"Our measurements {profile_note(models, profile)}; the paper's numbers are not "
            "available (its body is not public), so no paper column.")
    if summary is not None:
        written += write_table(comparison_table(summary), out / "table01_comparison",
                               "Every method × metric, paired with Grad-CAM", note)
    if stars is not None:
        written += write_table(saturation_table(stars, topk), out / "table02_saturation",
                               "Internal saturation: α* and top-k channel AUC", note)
    if pairs is not None:
        table, configs = baseline_table(pairs, n_resamples, seed)
        written += write_table(table, out / "table03_baseline_sensitivity",
                               "Baseline sensitivity: Expected Grad-CAM variants − Integrated "
                               "Grad-CAM",
                               note + "\n\nConfigurations: " + "; ".join(
                                   f"{r.model} {r.method}: {r.configurations}"
                                   for r in configs.itertuples()))
    if sweep is not None:
        written += write_table(sigma_table(sweep), out / "table04_sigma_sweep",
                               "Expected Grad-CAM: metrics per σ", note)
    if stability is not None:
        written += write_table(stability_table(stability), out / "table05_samples_stability",
                               "Expected Grad-CAM: seed-to-seed correlation per M", note)
    if scores is not None and "expected_gradcam_pp" in set(scores["method"]):
        written += write_table(paired_table(scores, "expected_gradcam_pp", "gradcam_pp",
                                            n_resamples=n_resamples, seed=seed),
                               out / "table06_expected_gradcam_pp",
                               "Expected Grad-CAM++ (ours) − Grad-CAM++", note)
    if special is not None:
        written += write_table(special_table(special), out / "table07_special_cases",
                               "Special cases on real images", note)
    return written
