"""ParchGrad figures and tables, drawn from the stage tables (and the panel maps) only.

In the order of the notes' inventory (paper_notes/parchgrad.md §3), under figures/parchgrad/:

======  ==========================================  =============================================
id      file(s)                                     drawn from
======  ==========================================  =============================================
E0      e0_channel_portion_panels_<model>           maps/q_sweep.npz, q_sweep/e6_q_sweep.csv
E1      e1_toy_vector_sum, e1_toy_summary           toys/e1_toy_*.csv
E2      e2_zero_pruning_vs_vc_<model>,              maps/vc.npz, vc/e2_*.csv
        e2_artifacts, e2_scale_invariance
E3      e3_method_comparison                        costs/e3_costs.csv
E4      e4_bbox_energy (figure only when run)       bbox/e4_bbox.csv
E5      e5_pixel_removal, e5_faithfulness_summary,  faithfulness/e5_*.csv
        e5_paired_comparisons
E6      e6_channel_portion_sweep                    q_sweep/e6_q_sweep*.csv
E7      e7_gradient_scale_checkerboard              toys/e7_checkerboard.csv
S1      s1_channel_statistics, s1_dead_channels     statistics_checks/s1_*.csv
======  ==========================================  =============================================

Figures are PNG + PDF (``plotting.save_figure``), tables CSV + Markdown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plotting
from replication.experiments.common import write_csv
from replication.experiments.parchgrad.experiments import panel_key
from replication.experiments.parchgrad.summary import load_results
from replication.fileio import atomic_write_text
from replication.plotting import markdown_table, write_table

MODEL_NAMES = {"mnist_cnn": "MNIST CNN", "fashion_mnist_cnn": "Fashion-MNIST CNN",
               "efficientnet_lite0": "EfficientNet-Lite0", "resnet18": "ResNet-18",
               "vgg16_bn": "VGG16-BN", "efficientnet_b0": "EfficientNet-B0"}
AUTHORS_MODELS = "the authors used ResNet-18 / VGG16-BN / EfficientNet-B0 on ILSVRC2012 val"
PAPER_MODELS = ("resnet18", "vgg16_bn", "efficientnet_b0")


def model_title(model: str, profile: str) -> str:
    name = MODEL_NAMES.get(model, model)
    if model in PAPER_MODELS:
        return f"{name} ({profile} profile)"
    return f"{name} ({profile} profile; {AUTHORS_MODELS})"


# --------------------------------------------------------------------------- tables







def _load_maps(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return {k: data[k].astype(np.float32) for k in data.files}


def _heat(pixel_map: np.ndarray) -> np.ndarray:
    """The authors' display scaling: the map over b = 10·mean|R| (seismic, vmin −b, vmax b);
    returned in [-1, 1] for a fixed colour range."""
    bound = 10.0 * float(np.abs(pixel_map).mean())
    return np.clip(pixel_map / bound, -1, 1) if bound > 0 else pixel_map


# --------------------------------------------------------------------------- E0

def e0_panels(table: pd.DataFrame, maps: Mapping[str, np.ndarray], out: Path,
              profile: str) -> list[Path]:
    """Rows: images; columns: the image, Gradient, ParchGrad at each q (1.0 → 0.05)."""
    written = []
    for model, group in table.groupby("model", sort=False):
        qs = list(dict.fromkeys(group["q"]))
        rows, labels = [], []
        i = 0
        while panel_key(model, "image", i) in maps:
            row = [maps[panel_key(model, "image", i)], _heat(maps[panel_key(model, "gradient", i)])]
            row += [_heat(maps[panel_key(model, "parchgrad", f"{q:g}", i)]) for q in qs]
            rows.append(row)
            labels.append(str(group["image"].iloc[i]).split(".")[0][:18])
            i += 1
        if not rows:
            continue
        fig = plotting.gallery(rows, row_labels=labels,
                               col_labels=["image", "Gradient", *[f"q = {q:g}" for q in qs]],
                               cmaps="seismic", vranges=(-1.0, 1.0),
                               title=f"E0: ParchGrad(Gradient) as the channel portion q shrinks — "
                                     f"{model_title(model, profile)}")
        written += plotting.save_figure(fig, out / f"e0_channel_portion_panels_{model}")
    return written


# --------------------------------------------------------------------------- E1

def e1_toy(tables: Mapping[str, pd.DataFrame], out: Path) -> list[Path]:
    vectors, sums, sweep = tables["e1_toy_vectors"], tables["e1_toy_sums"], tables["e1_toy_seed_sweep"]
    readings = list(dict.fromkeys(sums["reading"]))
    fig, axes = plt.subplots(1, len(readings) + 1, figsize=(3.0 * (len(readings) + 1), 3.0))
    colours = {"H": "tab:blue", "L": "tab:red", "total": "black"}
    for ax, reading in zip(axes, readings):
        own = vectors[vectors["reading"] == reading]
        for group in ("H", "L"):
            v = own[own["group"] == group]
            ax.quiver(np.zeros(len(v)), np.zeros(len(v)), v["dim1"], v["dim2"], angles="xy",
                      scale_units="xy", scale=1, color=colours[group], alpha=0.25, width=0.004)
        total = sums[sums["reading"] == reading].set_index("group")
        for group in ("H", "L", "total"):
            ax.quiver(0, 0, total.loc[group, "dim1"], total.loc[group, "dim2"], angles="xy",
                      scale_units="xy", scale=1, color=colours[group], width=0.012,
                      label=f"Σ_{group}" if group != "total" else "Σ_total")
        span = 1.1 * float(np.abs(total[["dim1", "dim2"]].to_numpy()).max())
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_aspect("equal")
        ax.axline((0, 0), slope=1, color="grey", lw=0.6, ls=":")
        ax.set_title(f"{reading}, seed {int(total['seed'].iloc[0])}")
        ax.set_xlabel("dim 1")
        ax.legend(loc="lower right")
    ax = axes[-1]
    for reading in readings:
        ax.hist(sweep.loc[sweep["reading"] == reading, "angle_total_to_h_deg"], bins=36,
                range=(0, 180), histtype="step", label=reading)
    ax.axvline(45, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("angle(Σ_total, Σ_H) [deg]; > 45°: L dominates")
    ax.set_ylabel("seeds")
    ax.set_title(f"{sweep['seed'].nunique()} seeds")
    ax.legend()
    fig.suptitle("E1: 10 H vs 100 L random 2-D gradients (toy; no model)", fontsize=8)
    written = plotting.save_figure(fig, out / "e1_toy_vector_sum")
    written += write_table(tables["e1_toy_summary"], out / "e1_toy_summary",
                           "E1: fraction of seeds whose total is dominated by L",
                           "code_uniform is the authors' code (uniform draws); text_normal_std / "
                           "text_normal_var read the page's N(0, 0.1) as a standard deviation / a "
                           "variance. The authors' figure uses seed 21.")
    return written


# --------------------------------------------------------------------------- E2

def e2_vc(tables: Mapping[str, pd.DataFrame], maps: Mapping[str, np.ndarray], out: Path,
          profile: str) -> list[Path]:
    artifacts, pairs = tables["e2_artifacts"], tables["e2_pairs"]
    written = []
    settings = pairs[["hooks", "q"]].drop_duplicates().itertuples(index=False)
    settings = list(settings)
    for model, group in artifacts.groupby("model", sort=False):
        rows, labels = [], []
        own = pairs[pairs["model"] == model]
        columns = ["image", "Gradient"]
        for hooks, q in settings:
            columns += [f"VC\n{hooks}, q={q:g}", f"zero pruning\n{hooks}, q={q:g}"]
        i = 0
        while panel_key(model, "image", i) in maps:
            row = [maps[panel_key(model, "image", i)], _heat(maps[panel_key(model, "gradient", i)])]
            for hooks, q in settings:
                for variant in ("vc", "zero_pruning"):
                    key = panel_key(model, variant, hooks, f"{q:g}", i)
                    row.append(_heat(maps[key]) if key in maps else None)
            rows.append(row)
            labels.append(str(own["image"].iloc[i]).split(".")[0][:18] if len(own) > i else str(i))
            i += 1
        if rows:
            fig = plotting.gallery(rows, row_labels=labels, col_labels=columns, cmaps="seismic",
                                   vranges=(-1.0, 1.0),
                                   title="E2: zero pruning vs variance conservation (each map "
                                         f"scaled by 10·mean|R|) — {model_title(model, profile)}")
            written += plotting.save_figure(fig, out / f"e2_zero_pruning_vs_vc_{model}")
    plotting.use_style()
    hooked = artifacts[artifacts["variant"] != "gradient"]
    panels = list(hooked.groupby(["model", "hooks"], sort=False))
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.0))
    for ax, measure in zip(axes, ("hf_energy", "total_variation")):
        labels, zero, vc = [], [], []
        for (model, hooks), group in panels:
            means = group.groupby("variant")[measure].mean()
            labels.append(f"{MODEL_NAMES.get(model, model)}\n{hooks}")
            zero.append(means.get("zero_pruning", np.nan))
            vc.append(means.get("vc", np.nan))
        x = np.arange(len(labels))
        ax.bar(x - 0.2, zero, 0.4, label="zero pruning (β = 1)", color="tab:red")
        ax.bar(x + 0.2, vc, 0.4, label="variance conservation", color="tab:blue")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=6, rotation=30, ha="right")
        ax.set_title({"hf_energy": "spectral energy above ½ Nyquist",
                      "total_variation": "total variation / mean |R|"}[measure])
    axes[0].legend(fontsize=6)
    fig.suptitle(f"E2: artifact measures, mean over images ({profile} profile; {AUTHORS_MODELS})",
                 fontsize=8, y=1.04)
    written += plotting.save_figure(fig, out / "e2_artifacts")
    table = pairs.groupby(["model", "hooks", "n_convs", "q"], sort=False).agg(
        images=("pearson", "size"), pearson_min=("pearson", "min"),
        pearson_mean=("pearson", "mean"), best_scale_min=("best_scale", "min"),
        best_scale_max=("best_scale", "max"),
        relative_residual_max=("relative_residual", "max")).reset_index()
    means = hooked.pivot_table(index=["model", "hooks", "q"], columns="variant",
                               values=["hf_energy", "total_variation"], aggfunc="mean")
    means.columns = [f"{m}_{v}" for m, v in means.columns]
    table = table.merge(means.reset_index(), on=["model", "hooks", "q"], how="left")
    written += write_table(table, out / "e2_scale_invariance",
                           "E2: ParchGrad(Gradient) with VC vs zero pruning, per model and hooks",
                           "Pearson r of the raw maps per image and the best scale s (VC ≈ s · zero "
                           "pruning). r = 1 with round-off residual means VC only rescales the map: "
                           "every hooked conv then lies on a path all the gradient crosses "
                           "(sequential nets; Lite0's default hooks too). Layer-ratio hooks (r=…) "
                           "include convs inside residual blocks.")
    return written


# --------------------------------------------------------------------------- E3

def e3_costs(costs: pd.DataFrame, out: Path, profile: str) -> list[Path]:
    columns = ["method", "category", "all_layers", "prune_channels", "propagation",
               "sample_size", "engine_method", "forward_backward", "forward", "images_timed",
               "repeats", "seconds_per_map", "relative_to_gradient", "params", "note"]
    frames = []
    for model, group in costs.groupby("model", sort=False):
        frame = group.reindex(columns=columns).copy()
        frame.insert(0, "model", MODEL_NAMES.get(model, model))
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    load = costs["load_average_1min"].max() if "load_average_1min" in costs else float("nan")
    return write_table(table, out / "e3_method_comparison",
                       f"E3: method comparison ({profile} profile)",
                       "Columns category … sample_size are the project page's table verbatim "
                       "(O = yes, X = no; M = samples, C = channels). forward_backward / forward are "
                       "the engine's passes per map; seconds per map were measured on this machine "
                       f"(1-minute load average up to {float(load):.4g}; shared CPU, so compare "
                       "ratios, not absolute times; the fastest of `repeats` timings). CRP is not "
                       "provided by the engine. ParchGrad's one-time statistics pass is not in its "
                       "per-map cost.")


# --------------------------------------------------------------------------- E4

def e4_bbox(table: pd.DataFrame, out: Path, profile: str, reason: str = "") -> list[Path]:
    if table.empty:
        frame = pd.DataFrame({"status": ["not run"], "reason": [reason or
                              "needs ILSVRC2012 validation images and ILSVRC2012_bbox_val_v3.tgz"]})
        return write_table(frame, out / "e4_bbox_energy", f"E4: box energy ({profile} profile)")
    means = table.groupby(["model", "hooks", "q", "pairing", "vc"], dropna=False, sort=False)[
        ["mu_in", "mu_in_w"]].mean().reset_index()
    written = write_table(means, out / "e4_bbox_energy",
                          f"E4: box energy mu_in / mu_in_w ({profile} profile)",
                          "pairing 'authors' reproduces their image/box index mismatch; "
                          "'correct' pairs each image with its own first box.")
    plotting.use_style()
    models = list(dict.fromkeys(means["model"]))
    pairings = list(dict.fromkeys(means["pairing"]))
    fig, axes = plt.subplots(len(pairings), len(models), figsize=(3 * len(models), 2.4 * len(pairings)),
                             squeeze=False)
    for r, pairing in enumerate(pairings):
        for c, model in enumerate(models):
            ax = axes[r][c]
            own = means[(means["model"] == model) & (means["pairing"] == pairing)
                        & (means["hooks"] != "none")]
            for (q, vc), group in own.groupby(["q", "vc"]):
                ax.plot(group["hooks"], group["mu_in_w"], marker="o",
                        ls="-" if str(vc) == "True" else "--", label=f"q={q:g}, VC={vc}")
            ax.set_title(f"{MODEL_NAMES.get(model, model)} — {pairing} boxes")
            ax.set_ylabel("mu_in_w")
            ax.legend(fontsize=5)
    written += plotting.save_figure(fig, out / "e4_bbox_energy")
    return written


# --------------------------------------------------------------------------- E5

def e5_faithfulness(tables: Mapping[str, pd.DataFrame], out: Path, profile: str) -> list[Path]:
    curves = tables["e5_curves"]
    plotting.use_style()
    written = []
    models = list(dict.fromkeys(curves["model"]))
    fig, axes = plt.subplots(len(models), 2, figsize=(7.5, 2.8 * len(models)), squeeze=False)
    fig.subplots_adjust(hspace=0.5)
    styles = {None: "-", 0.1: "--", 0.05: ":"}
    palette = dict(zip(dict.fromkeys(curves["base"]), plt.get_cmap("tab10").colors))
    for r, model in enumerate(models):
        own = curves[curves["model"] == model]
        means = own.groupby(["method", "base", "q", "order", "ratio"], dropna=False,
                            sort=False)["aopc"].mean().reset_index()
        for c, order in enumerate(("morf", "lerf")):
            ax = axes[r][c]
            for (method, base, q), group in means[means["order"] == order].groupby(
                    ["method", "base", "q"], dropna=False, sort=False):
                key = None if pd.isna(q) else float(q)
                ax.plot(group["ratio"], group["aopc"], color=palette[base],
                        ls=styles.get(key, "-."), lw=1.0, label=method)
            ax.set_xlabel("fraction of pixels removed")
            ax.set_ylabel("p_y(x) − p_y(x_r)")
            ax.set_title(f"{order.upper()} — {MODEL_NAMES.get(model, model)}")
        axes[r][1].legend(fontsize=5, ncol=1, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"E5: pixel removal, mean over images (removed pixels set to 0 in model-input "
                 f"space, as the authors) — {profile} profile; {AUTHORS_MODELS}", fontsize=7)
    written += plotting.save_figure(fig, out / "e5_pixel_removal")
    summary = tables["e5_summary"]
    wide = summary.assign(value=[f"{m:.4g} [{lo:.4g}, {hi:.4g}]" for m, lo, hi in
                                 zip(summary["mean"], summary["ci_low"], summary["ci_high"])])
    wide = wide.pivot_table(index=["model", "method"], columns="metric", values="value",
                            aggfunc="first", sort=False).reset_index()
    written += write_table(wide, out / "e5_faithfulness_summary",
                           "E5: faithfulness and sparsity, mean [95% BCa CI] over images "
                           f"({profile} profile)",
                           "morf_aopc higher and lerf_aopc lower are more faithful; morf_lodds lower "
                           "and lerf_lodds higher; gini (Gini index of the |map|) higher is sparser. "
                           "Means over ratios 0…0.5, ratio 0 included (the authors' ratio_mean).")
    written += write_table(tables["e5_paired"], out / "e5_paired_comparisons",
                           "E5: ParchGrad(base, q) − base, paired per image",
                           "mean difference with its bootstrap CI and the two-sided Wilcoxon "
                           "signed-rank p; favours_parchgrad uses each metric's direction.")
    return written


# --------------------------------------------------------------------------- E6

def e6_sweep(tables: Mapping[str, pd.DataFrame], out: Path, profile: str) -> list[Path]:
    summary = tables["e6_q_sweep_summary"]
    plotting.use_style()
    metrics = list(dict.fromkeys(summary["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 2.6), squeeze=False)
    fig.subplots_adjust(wspace=0.4)
    for ax, metric in zip(axes[0], metrics):
        own = summary[summary["metric"] == metric]
        for model, group in own.groupby("model", sort=False):
            ax.errorbar(group["q"], group["mean"], yerr=group["sd"], marker="o", ms=3, lw=1,
                        capsize=2, label=MODEL_NAMES.get(model, model))
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("channel portion q (decreasing →)")
        ax.set_ylabel(f"{metric} to the Gradient map")
        ax.legend(fontsize=6)
    fig.suptitle(f"E6: similarity of ParchGrad(Gradient) to Gradient vs q, mean ± SD "
                 f"({profile} profile; {AUTHORS_MODELS})", fontsize=7)
    written = plotting.save_figure(fig, out / "e6_channel_portion_sweep")
    written += write_table(summary, out / "e6_channel_portion_sweep",
                           "E6: similarity to the Gradient map per channel portion q",
                           "monotone: the mean falls (weakly) at every step of decreasing q "
                           "(claim C9).")
    return written


# --------------------------------------------------------------------------- E7

def e7_checkerboard(table: pd.DataFrame, out: Path) -> list[Path]:
    plotting.use_style()
    fig, ax = plt.subplots(figsize=(3.4, 2.6))
    for stride, group in table.groupby("stride"):
        ax.plot(group["k"], group["max_abs_grad"], marker="o", label=f"stride {stride}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("output-gradient scale k")
    ax.set_ylabel("max |input gradient|")
    ax.legend(fontsize=6)
    ax.set_title("E7: two-conv toy, 10×10 input (random init)")
    written = plotting.save_figure(fig, out / "e7_gradient_scale_checkerboard")
    written += write_table(table, out / "e7_gradient_scale_checkerboard",
                           "E7: input-gradient scale vs output-gradient scale k",
                           "relative_deviation = max|grad_k/k − grad_1| / max|grad_1|: 0 up to "
                           "round-off means the pattern is unchanged and the scale linear (C13). "
                           "Absolute values depend on the random initialisation (the authors: "
                           "3.68e-5 / 3.68e-1 / 3.68e+1 at stride 1).")
    return written


# --------------------------------------------------------------------------- S1

def s1_statistics(tables: Mapping[str, pd.DataFrame], out: Path) -> list[Path]:
    written = []
    shapiro = tables.get("s1_shapiro", pd.DataFrame())
    selection = tables.get("s1_bug_selection", pd.DataFrame())
    bug_maps = tables.get("s1_bug_maps", pd.DataFrame())
    parts = [("Shapiro–Wilk filter: channels with p < 0.05 (kept by the authors' filter; C11)",
              shapiro)]
    if not selection.empty:
        parts.append(("The authors' statistics bug: H sets of corrected vs bug-compatible "
                      "statistics (C12)", selection))
    if not bug_maps.empty:
        maps = bug_maps.groupby(["model", "q"]).agg(
            images=("spearman", "size"), spearman_mean=("spearman", "mean"),
            spearman_min=("spearman", "min"), pearson_mean=("pearson", "mean")).reset_index()
        parts.append(("ParchGrad(Gradient) maps under corrected vs bug-compatible statistics", maps))
    text = "# S1: channel statistics checks\n"
    for title, frame in parts:
        text += f"\n## {title}\n\n{markdown_table(frame)}"
    atomic_write_text(out / "s1_channel_statistics.md", text)
    write_csv(shapiro, out / "s1_channel_statistics.csv")
    written += [out / "s1_channel_statistics.md", out / "s1_channel_statistics.csv"]
    dead = tables.get("s1_dead_channels", pd.DataFrame())
    if not dead.empty:
        written += write_table(dead, out / "s1_dead_channels",
                               "S1: channels dead on the whole statistics set (instance mode)",
                               "The engine's instance z-test gives them 0/0 → p = 1 on the set's "
                               "images, and the Shapiro filter (p = 1 for a constant channel) "
                               "excludes them; dead_p_zero_fraction > 0 would mean an input woke "
                               "them and they were ranked first.")
    return written


# --------------------------------------------------------------------------- all

def render_all(results: str | os.PathLike, maps: str | os.PathLike, out: str | os.PathLike,
               profile: str) -> list[Path]:
    """Every figure and table whose input tables exist, in inventory order."""
    results, maps, out = Path(results), Path(maps), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = load_results(results)
    plotting.use_style()
    written: list[Path] = []
    if "e6_q_sweep" in tables:
        written += e0_panels(tables["e6_q_sweep"], _load_maps(maps / "q_sweep.npz"), out, profile)
    if "e1_toy_sums" in tables:
        written += e1_toy(tables, out)
    if "e2_artifacts" in tables:
        written += e2_vc(tables, _load_maps(maps / "vc.npz"), out, profile)
    if "e3_costs" in tables:
        written += e3_costs(tables["e3_costs"], out, profile)
    if "e4_bbox" in tables:
        status = tables.get("e4_bbox_status", pd.DataFrame())
        reason = str(status["reason"].iloc[0]) if "reason" in status and len(status) else ""
        written += e4_bbox(tables["e4_bbox"], out, profile, reason)
    if "e5_curves" in tables:
        written += e5_faithfulness(tables, out, profile)
    if "e6_q_sweep_summary" in tables:
        written += e6_sweep(tables, out, profile)
    if "e7_checkerboard" in tables:
        written += e7_checkerboard(tables["e7_checkerboard"], out)
    if "s1_shapiro" in tables:
        written += s1_statistics(tables, out)
    return written
