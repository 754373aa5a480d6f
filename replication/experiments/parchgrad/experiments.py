"""ParchGrad experiments: one compute function per experiment, tidy tables out (notes §2, §4).

Every function takes a ModelCard, an ImageSet (explained for its labels: the authors explained
the ground-truth class), the ChannelStatistics and a plain dict of settings (the matching
``parchgrad.<experiment>`` section of params.yaml), and returns pandas DataFrames with one row
per observation (plus numpy maps for figure panels). Maps come from the engine through
``common.Explainer`` (its Lightning loop).

Reductions to one value per pixel follow the authors' code (``authors_pixel_map``): mean over
RGB of |map| for Gradient, Gradient⊙Input and SmoothGrad, |mean over RGB| for IG.

Hooked convs (``hooks``): ``"default"`` is the card's ``parchgrad_convs`` (the authors' default
hooks for their models, the analogue for Lite0); a number r hooks the last int(r·L) convs in
``named_modules`` order, the authors' ``--layer-ratio`` (it includes convs inside residual
blocks, where variance conservation is not a global scale).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from replication.attribution import ChannelStatistics, create_method, select_channels
from replication.attribution.channel_statistics import LayerStatistics
from replication.errors import ConfigError
from replication.experiments.common import Explainer, ImageSet
from replication.experiments.parchgrad import boxes as B
from replication.experiments.parchgrad import statistics as S
from replication.experiments.parchgrad import toys
from replication.metrics import faithfulness as F
from replication.metrics import similarity, stats
from replication.models.base import ModelCard

BASES = ("gradient", "input_x_gradient", "integrated_gradients", "smoothgrad")
AUTHORS_Q_SEQUENCE = (1.0, 0.5, 0.3, 0.1, 0.08, 0.05)  # the GIFs' channel portions (E0)
SHAPIRO_THRESHOLD = 0.05

# The project page's comparison table (notes E3), verbatim, and the engine's name for each row.
PAPER_METHOD_TABLE: tuple[tuple[str, str, str, str, str, str, str | None], ...] = (
    ("ScoreCAM", "CAM", "X", "O", "O(C)", "O(C)", "scorecam"),
    ("AblationCAM", "CAM", "X", "O", "O(C)", "O(C)", "ablationcam"),
    ("LRP", "LRP", "O", "X", "O(1)", "O(1)", "lrp"),
    ("CRP", "LRP", "O", "O", "O(1)", "O(1)", None),
    ("Gradient", "Saliency", "O", "X", "O(1)", "O(1)", "gradient"),
    ("InputGrad", "Saliency", "O", "X", "O(1)", "O(1)", "input_x_gradient"),
    ("Integrated Gradient", "Saliency", "O", "X", "O(1)", "O(M)", "integrated_gradients"),
    ("SmoothGrad", "Saliency", "O", "X", "O(M)", "O(M)", "smoothgrad"),
    ("ParchGrad", "Saliency", "O", "O", "O(1)", "O(1)", "parchgrad"),
)
PERTURBATION_METHODS = ("scorecam", "ablationcam")

# Which direction is better for each per-image faithfulness / sparsity value (C8).
HIGHER_IS_BETTER = {"morf_aopc": True, "lerf_aopc": False, "morf_lodds": False,
                    "lerf_lodds": True, "gini": True}


# --------------------------------------------------------------------------- helpers

def require(settings: Mapping, *keys: str, section: str = "parchgrad") -> None:
    """ConfigError naming every missing key of a settings dict."""
    missing = [k for k in keys if k not in settings]
    if missing:
        raise ConfigError(f"params.yaml: {section} lacks {missing}")


def hooked_convs(card: ModelCard, hooks: str | float) -> list[str]:
    """The convs ParchGrad hooks: ``"default"`` (the card's) or the last int(r·L) convs."""
    if hooks == "default":
        if not card.parchgrad_convs:
            raise ConfigError(f"{card.name} declares no ParchGrad convs")
        return list(card.parchgrad_convs)
    try:
        ratio = float(hooks)
    except (TypeError, ValueError):
        raise ConfigError(f"hooks must be 'default' or a layer ratio in (0, 1]; "
                          f"got {hooks!r}") from None
    convs = S.conv_names(card.model)
    count = int(ratio * len(convs))
    if not 0 < ratio <= 1 or count < 1:
        raise ConfigError(f"layer ratio {hooks!r} hooks no conv of {card.name} "
                          f"({len(convs)} convs); choose r in (0, 1] with int(r·{len(convs)}) ≥ 1")
    return convs[-count:]


def hooks_label(hooks: str | float) -> str:
    return "default" if hooks == "default" else f"r={float(hooks):g}"


def base_params(base: str, settings: Mapping) -> dict:
    """Hyper-parameters of a base method from the settings (IG steps, SmoothGrad samples)."""
    if base not in BASES:
        raise ConfigError(f"unknown ParchGrad base {base!r}; choose one of {list(BASES)}")
    if base == "integrated_gradients":
        require(settings, "ig_steps")
        # The authors' IG: zeros in model-input space, the trapezoid rule over steps + 1
        # points α = i/steps (their 25 steps: 26 points).
        return {"steps": int(settings["ig_steps"]) + 1, "baseline": "zeros",
                "integration": "trapezoid"}
    if base == "smoothgrad":
        require(settings, "smoothgrad_samples", "noise_level", "seed")
        # The authors' SmoothGrad averages |gradient| over the noisy copies.
        return {"n_samples": int(settings["smoothgrad_samples"]),
                "noise_level": float(settings["noise_level"]), "absolute": True,
                "seed": int(settings["seed"])}
    return {}


def method_label(base: str, q: float | None, vc: bool = True) -> str:
    if q is None:
        return base
    return f"parchgrad({base}, q={q:g}{'' if vc else ', no VC'})"


def method_spec(base: str, settings: Mapping, statistics: ChannelStatistics | None = None,
                q: float | None = None, convs: Sequence[str] | None = None,
                vc: bool = True, shapiro: bool = True) -> tuple[str, dict]:
    """(engine name, params) of ``base``, or of ParchGrad over it when q is given (γ = ∞).

    The Shapiro filter uses ``settings["shapiro_threshold"]`` (the authors' 0.05; None: off)
    unless ``shapiro`` is False; ``settings["spatial_1x1"]`` is the engine's rule for 1×1
    spatial maps (``"energy"``, or the authors' ``"authors_abs"``).
    """
    params = base_params(base, settings)
    if q is None:
        return base, params
    if statistics is None:
        raise ConfigError("ParchGrad needs channel statistics")
    threshold = settings.get("shapiro_threshold", SHAPIRO_THRESHOLD) if shapiro else None
    return "parchgrad", {"statistics": statistics, "base": base, "base_params": params,
                         "convs": list(convs) if convs is not None else None,
                         "channel_portion": float(q), "variance_conservation": bool(vc),
                         "shapiro_threshold": threshold,
                         "spatial_1x1": settings.get("spatial_1x1", "energy")}


def authors_pixel_map(maps: Tensor, base: str) -> Tensor:
    """(B, 1, H, W) ≥ 0 as the authors reduced maps: |mean_RGB| for IG, mean_RGB |·| otherwise."""
    if base == "integrated_gradients":
        return maps.mean(1, keepdim=True).abs()
    return maps.abs().mean(1, keepdim=True)


def _explain(explainer: Explainer, card: ModelCard, name: str, params: dict,
             images: ImageSet) -> Tensor:
    return explainer(card, name, params, images.images, images.labels).detach().cpu()


def _explainer(explainer: Explainer | None) -> Explainer:
    return explainer if explainer is not None else Explainer()


def _device(card: ModelCard) -> torch.device:
    """Where the model is (the Lightning loop may have moved it to an accelerator)."""
    parameter = next(card.model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _flat(maps: Tensor) -> np.ndarray:
    return maps.detach().double().flatten(1).cpu().numpy()


def display_image(card: ModelCard, image: Tensor) -> np.ndarray:
    """An input as (H, W, 3) pixels in [0, 1] for panels (grey images repeated to RGB)."""
    pixels = card.preprocessing.denormalize(image[None].cpu())[0].clamp(0, 1)
    return pixels.expand(3, -1, -1).permute(1, 2, 0).numpy()


def panel_key(*parts: object) -> str:
    """The key of one panel array in a maps file (figures rebuild it from the tables)."""
    return "__".join(str(p) for p in parts)


def _panel(pixel_map: Tensor) -> np.ndarray:
    return pixel_map[0].numpy().astype(np.float16)


def _base_rows(card: ModelCard, images: ImageSet, i: int) -> dict:
    return {"model": card.name, "image": images.names[i], "label": int(images.labels[i])}


# --------------------------------------------------------------------------- artifact measures

def high_frequency_energy(pixel_maps: Tensor, cutoff: float = 0.5) -> np.ndarray:
    """Fraction of the spectral energy of each (mean-removed) map above ``cutoff``·Nyquist.

    Radial frequency with 1 = Nyquist (0.5 cycles/pixel) along an axis; stride-2 checkerboard
    artifacts sit at 1 (and √2 on the diagonal). Scale-invariant; NaN for a constant map.
    """
    if not 0 < cutoff < math.sqrt(2):
        raise ConfigError(f"cutoff must be a fraction of Nyquist in (0, √2); got {cutoff}")
    m = pixel_maps[:, 0].double()
    m = m - m.mean((1, 2), keepdim=True)
    power = torch.fft.fft2(m).abs() ** 2
    fy = torch.fft.fftfreq(m.shape[1], dtype=torch.float64) / 0.5
    fx = torch.fft.fftfreq(m.shape[2], dtype=torch.float64) / 0.5
    high = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt() > cutoff
    total = power.flatten(1).sum(1)
    above = (power * high).flatten(1).sum(1)
    return torch.where(total > 0, above / total.clamp_min(1e-300), torch.nan).numpy()


def total_variation(pixel_maps: Tensor) -> np.ndarray:
    """(mean |Δx| + mean |Δy|) / mean |m|: neighbour differences relative to the map's size.

    Scale-invariant; NaN for an all-zero map.
    """
    m = pixel_maps[:, 0].double()
    tv = (m[:, :, 1:] - m[:, :, :-1]).abs().flatten(1).mean(1) \
        + (m[:, 1:, :] - m[:, :-1, :]).abs().flatten(1).mean(1)
    size = m.abs().flatten(1).mean(1)
    return torch.where(size > 0, tv / size.clamp_min(1e-300), torch.nan).numpy()


def best_scale(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, s minimising ‖a − s·b‖ and the relative residual ‖a − s·b‖ / ‖a‖."""
    scale = np.einsum("ij,ij->i", a, b) / np.maximum(np.einsum("ij,ij->i", b, b), 1e-300)
    residual = np.linalg.norm(a - scale[:, None] * b, axis=1) / np.maximum(
        np.linalg.norm(a, axis=1), 1e-300)
    return scale, residual


# --------------------------------------------------------------------------- E2: zero pruning vs VC

@dataclass
class VCResult:
    """E2 tables: per-map artifact measures, per-image VC-vs-zero-pruning agreement, panels."""

    artifacts: pd.DataFrame
    pairs: pd.DataFrame
    maps: dict[str, np.ndarray] = field(default_factory=dict)


def vc_ablation(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                settings: Mapping, *, explainer: Explainer | None = None) -> VCResult:
    """ParchGrad(Gradient) with variance conservation vs zero pruning (β = 1), γ = ∞.

    Settings: ``hooks`` (list), ``channel_portions`` (list), ``cutoff`` (high-frequency
    energy), ``panels`` (images kept as maps). ``pairs``: Pearson r of the raw maps, the best
    scale s (VC ≈ s · zero pruning) and the relative residual: on a purely sequential net (the
    MNIST CNN; the authors' VGG16-BN) r = 1 and the residual is round-off (claim C4).
    ``artifacts``: high-frequency energy and total variation of the authors' |map| (C7).
    """
    require(settings, "hooks", "channel_portions", "cutoff", "panels", section="parchgrad.vc")
    explainer = _explainer(explainer)
    panels = min(int(settings["panels"]), len(images))
    artifact_rows, pair_rows, maps = [], [], {}

    def add_artifacts(pixel: Tensor, hooks: str, n_convs: int, q: float, variant: str) -> None:
        hf = high_frequency_energy(pixel, float(settings["cutoff"]))
        tv = total_variation(pixel)
        for i in range(len(images)):
            artifact_rows.append({**_base_rows(card, images, i), "hooks": hooks, "n_convs": n_convs,
                                  "q": q, "variant": variant, "hf_energy": hf[i],
                                  "total_variation": tv[i]})

    gradient = authors_pixel_map(_explain(explainer, card, "gradient", {}, images), "gradient")
    add_artifacts(gradient, "none", 0, float("nan"), "gradient")
    for i in range(panels):
        maps[panel_key("image", i)] = display_image(card, images.images[i]).astype(np.float16)
        maps[panel_key("gradient", i)] = _panel(gradient[i])
    for hooks in settings["hooks"]:
        convs = hooked_convs(card, hooks)
        for q in settings["channel_portions"]:
            raw = {}
            for vc, variant in ((True, "vc"), (False, "zero_pruning")):
                name, params = method_spec("gradient", settings, statistics, q, convs, vc)
                raw[variant] = _explain(explainer, card, name, params, images)
                pixel = authors_pixel_map(raw[variant], "gradient")
                add_artifacts(pixel, hooks_label(hooks), len(convs), float(q), variant)
                for i in range(panels):
                    maps[panel_key(variant, hooks_label(hooks), f"{q:g}", i)] = _panel(pixel[i])
            a, b = _flat(raw["vc"]), _flat(raw["zero_pruning"])
            r = similarity.pearson_rows(a, b)
            scale, residual = best_scale(a, b)
            for i in range(len(images)):
                pair_rows.append({**_base_rows(card, images, i), "hooks": hooks_label(hooks),
                                  "n_convs": len(convs), "q": float(q), "pearson": r[i],
                                  "best_scale": scale[i], "relative_residual": residual[i]})
    return VCResult(pd.DataFrame(artifact_rows), pd.DataFrame(pair_rows), maps)


# --------------------------------------------------------------------------- E0 / E6: q sweep

@dataclass
class SweepResult:
    """E6 table (one row per image and q) and the E0 panels."""

    table: pd.DataFrame
    maps: dict[str, np.ndarray] = field(default_factory=dict)


def channel_portion_sweep(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                          settings: Mapping, *, explainer: Explainer | None = None) -> SweepResult:
    """ParchGrad(Gradient, VC, γ = ∞) at each channel portion q against the plain Gradient.

    Settings: ``channel_portions`` (the GIFs' 1.0 … 0.05), ``hooks``, ``panels``. Per image and
    q: Spearman and Pearson of the authors' |map|, SSIM of the min–max scaled |maps|
    (data range 1), and ``max_relative_difference`` = max|PG − Grad| / max|Grad| of the raw
    maps. At q = 1 every channel passes the p-value threshold, but the Shapiro filter can
    still drop (normal-looking or dead) channels, so ``max_relative_difference_no_shapiro``
    repeats q = 1 without the filter: round-off there is claim C3. Claim C9: the mean
    similarity falls with q.
    """
    require(settings, "channel_portions", "hooks", "panels", section="parchgrad.q_sweep")
    explainer = _explainer(explainer)
    convs = hooked_convs(card, settings["hooks"])
    panels = min(int(settings["panels"]), len(images))
    raw_gradient = _explain(explainer, card, "gradient", {}, images)
    gradient = authors_pixel_map(raw_gradient, "gradient")
    maps = {}
    for i in range(panels):
        maps[panel_key("image", i)] = display_image(card, images.images[i]).astype(np.float16)
        maps[panel_key("gradient", i)] = _panel(gradient[i])
    peak = raw_gradient.flatten(1).abs().amax(1).double().clamp_min(1e-300)
    rows = []
    for q in settings["channel_portions"]:
        name, params = method_spec("gradient", settings, statistics, q, convs)
        raw = _explain(explainer, card, name, params, images)
        pixel = authors_pixel_map(raw, "gradient")
        spearman = similarity.spearman_rows(_flat(gradient), _flat(pixel))
        pearson = similarity.pearson_rows(_flat(gradient), _flat(pixel))
        ssim = similarity.ssim(gradient, pixel, data_range=1.0)
        difference = _relative_difference(raw, raw_gradient, peak)
        unfiltered = np.full(len(images), np.nan)
        if float(q) == 1.0:
            name, params = method_spec("gradient", settings, statistics, q, convs, shapiro=False)
            unfiltered = _relative_difference(_explain(explainer, card, name, params, images),
                                              raw_gradient, peak)
        for i in range(len(images)):
            rows.append({**_base_rows(card, images, i), "hooks": hooks_label(settings["hooks"]),
                         "n_convs": len(convs), "q": float(q), "spearman": spearman[i],
                         "pearson": pearson[i], "ssim": ssim[i],
                         "max_relative_difference": difference[i],
                         "max_relative_difference_no_shapiro": unfiltered[i]})
        for i in range(panels):
            maps[panel_key("parchgrad", f"{q:g}", i)] = _panel(pixel[i])
    return SweepResult(pd.DataFrame(rows), maps)


def _relative_difference(maps: Tensor, reference: Tensor, peak: Tensor) -> np.ndarray:
    return ((maps - reference).flatten(1).abs().amax(1).double() / peak).numpy()


def sweep_summary(table: pd.DataFrame,
                  metrics: Sequence[str] = ("spearman", "ssim")) -> pd.DataFrame:
    """Per model, metric and q (largest q first): mean, SD and count over images, and whether
    the mean falls (weakly) at every step of decreasing q (``monotone``)."""
    rows = []
    for (model, hooks), group in table.groupby(["model", "hooks"], sort=False):
        for metric in metrics:
            means = group.groupby("q", sort=False)[metric].agg(["mean", "std", "count"])
            means = means.sort_index(ascending=False)
            monotone = bool(np.all(np.diff(means["mean"].to_numpy()) <= 1e-12))
            for q, values in means.iterrows():
                rows.append({"model": model, "hooks": hooks, "metric": metric, "q": q,
                             "mean": values["mean"], "sd": values["std"],
                             "n": int(values["count"]), "monotone": monotone})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- E5: faithfulness

@dataclass
class FaithfulnessResult:
    """E5 tables: pixel-removal curves (one row per image, method, order, ratio) and one row per
    image and method with the authors' summaries and the Gini index."""

    curves: pd.DataFrame
    per_image: pd.DataFrame


def faithfulness_methods(settings: Mapping) -> list[tuple[str, float | None]]:
    """(base, q) pairs: each base, then ParchGrad over it at each channel portion."""
    require(settings, "bases", "channel_portions", section="parchgrad.faithfulness")
    return [(base, q) for base in settings["bases"]
            for q in (None, *settings["channel_portions"])]


def faithfulness(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                 settings: Mapping, *, explainer: Explainer | None = None) -> FaithfulnessResult:
    """The authors' pixel-removal protocol and Gini sparsity (claim C8).

    Settings: ``bases``, ``channel_portions``, ``hooks``, ``ratios``, ``ig_steps``,
    ``smoothgrad_samples``, ``noise_level``, ``seed``, ``batch_size``. Maps are reduced as
    the authors did (``authors_pixel_map``); the top (MoRF) or bottom (LeRF) int(H·W·r) pixels
    are set to 0 in model-input space and the unhooked model scores each copy
    (``faithfulness.pixel_removal_curves``). Summaries are means over the ratios, ratio 0
    included, as the authors'. Explained class: the label.
    """
    require(settings, "hooks", "ratios", "batch_size", section="parchgrad.faithfulness")
    explainer = _explainer(explainer)
    convs = hooked_convs(card, settings["hooks"])
    curve_rows, image_rows = [], []
    for base, q in faithfulness_methods(settings):
        name, params = method_spec(base, settings, statistics, q, convs)
        pixel = authors_pixel_map(_explain(explainer, card, name, params, images), base)
        gini = F.sparseness(pixel)
        summaries: dict[str, np.ndarray] = {}
        probability = None
        model, device = card.model.eval(), _device(card)
        for order in ("morf", "lerf"):
            curves = F.pixel_removal_curves(model, images.images.to(device),
                                            images.labels.to(device), pixel.to(device),
                                            order=order, ratios=settings["ratios"],
                                            batch_size=int(settings["batch_size"]))
            probability = curves.probability
            summaries[f"{order}_aopc"] = curves.aopc.mean(1)
            summaries[f"{order}_lodds"] = curves.lodds.mean(1)
            summaries[f"{order}_accuracy"] = curves.accuracy.mean(1)
            for i in range(len(images)):
                for j, ratio in enumerate(curves.ratios):
                    curve_rows.append({**_base_rows(card, images, i),
                                       "method": method_label(base, q), "base": base, "q": q,
                                       "order": order, "ratio": float(ratio),
                                       "aopc": curves.aopc[i, j], "lodds": curves.lodds[i, j],
                                       "accuracy": curves.accuracy[i, j],
                                       "fracdiff": curves.fracdiff[i, j]})
        for i in range(len(images)):
            image_rows.append({**_base_rows(card, images, i), "method": method_label(base, q),
                               "base": base, "q": q, "probability": probability[i],
                               **{k: v[i] for k, v in summaries.items()}, "gini": gini[i]})
    return FaithfulnessResult(pd.DataFrame(curve_rows), pd.DataFrame(image_rows))


def faithfulness_summary(per_image: pd.DataFrame, resamples: int, seed: int,
                         confidence: float = 0.95) -> pd.DataFrame:
    """Per model, method and metric: mean and bootstrap (BCa) CI over images."""
    rows = []
    for (model, method), group in per_image.groupby(["model", "method"], sort=False):
        for metric in HIGHER_IS_BETTER:
            ci = stats.bootstrap_ci(group[metric].to_numpy(), n_resamples=resamples,
                                    confidence=confidence, seed=seed)
            rows.append({"model": model, "method": method, "base": group["base"].iloc[0],
                         "q": group["q"].iloc[0], "metric": metric, "mean": ci.mean,
                         "ci_low": ci.low, "ci_high": ci.high, "n": ci.n,
                         "n_dropped": ci.n_dropped,
                         "higher_is_better": HIGHER_IS_BETTER[metric]})
    return pd.DataFrame(rows)


def faithfulness_comparisons(per_image: pd.DataFrame, resamples: int, seed: int,
                             confidence: float = 0.95) -> pd.DataFrame:
    """ParchGrad(base, q) − base per image, paired: mean difference, bootstrap CI, two-sided
    Wilcoxon p, and whether the mean difference favours ParchGrad (by the metric's direction)."""
    rows = []
    for (model, base), group in per_image.groupby(["model", "base"], sort=False):
        reference = group[group["q"].isna()].set_index("image")
        for q, variant in group[group["q"].notna()].groupby("q", sort=False):
            variant = variant.set_index("image").reindex(reference.index)
            for metric, higher in HIGHER_IS_BETTER.items():
                result = stats.paired_comparison(variant[metric].to_numpy(),
                                                 reference[metric].to_numpy(),
                                                 n_resamples=resamples, confidence=confidence,
                                                 seed=seed)
                favours = (result.mean_difference > 0) == higher and result.mean_difference != 0
                rows.append({"model": model, "base": base, "q": float(q), "metric": metric,
                             "mean_difference": result.mean_difference,
                             "ci_low": result.ci_low, "ci_high": result.ci_high,
                             "p_value": result.p_value, "n_pairs": result.n_pairs,
                             "higher_is_better": higher, "favours_parchgrad": bool(favours)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- E3: method costs

def method_costs(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                 settings: Mapping) -> pd.DataFrame:
    """The project page's comparison table with the engine's passes per map and measured time.

    Settings: ``perturbation_images`` (Score-CAM / Ablation-CAM: one forward per channel of the
    CAM layer, timed once on fewer images), ``repeats`` (timings of the other methods; the
    fastest is reported, the least disturbed by a shared CPU), ``ig_steps``,
    ``smoothgrad_samples``, ``noise_level``, ``seed``, ``channel_portion``, ``hooks``. Each
    method is warmed up on one image (not the perturbation CAMs), then timed on ``images``
    (seconds per map, batched as the engine batches). CRP is not provided by the engine: its
    row has no measurement.
    """
    require(settings, "perturbation_images", "repeats", "channel_portion", "hooks",
            section="parchgrad.costs")
    convs = hooked_convs(card, settings["hooks"])
    rows = []
    x, y = images.images.to(_device(card)), images.labels.to(_device(card))
    for paper_name, category, all_layers, prune, propagation, samples, engine in PAPER_METHOD_TABLE:
        row = {"method": paper_name, "category": category, "all_layers": all_layers,
               "prune_channels": prune, "propagation": propagation, "sample_size": samples,
               "engine_method": engine or "", "provided": engine is not None, "model": card.name}
        if engine is None:
            rows.append({**row, "note": "not provided by the engine (CRP needs concept "
                                        "relevance propagation; not implemented)"})
            continue
        if engine == "parchgrad":
            name, params = method_spec("gradient", settings, statistics,
                                       settings["channel_portion"], convs)
        elif engine in BASES:
            name, params = engine, base_params(engine, settings)
        else:
            name, params = engine, {}
        method = create_method(name, card, **params)
        passes = method.passes()
        perturbation = engine in PERTURBATION_METHODS
        count = min(int(settings["perturbation_images"]), len(images)) if perturbation \
            else len(images)
        repeats = 1 if perturbation else max(1, int(settings["repeats"]))
        if not perturbation:
            method.attribute(x[:1], y[:1])  # warm-up: allocator, hooks, lazy imports
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            method.attribute(x[:count], y[:count])
            seconds.append((time.perf_counter() - started) / count)
        rows.append({**row, "forward_backward": passes.forward_backward,
                     "forward": passes.forward, "images_timed": count, "repeats": repeats,
                     "seconds_per_map": min(seconds),
                     "seconds_per_map_median": float(np.median(seconds)),
                     "params": _describe(params),
                     "torch_threads": torch.get_num_threads(),
                     "load_average_1min": os.getloadavg()[0], "note": ""})
    table = pd.DataFrame(rows)
    gradient = table.loc[table["engine_method"] == "gradient", "seconds_per_map"]
    table["relative_to_gradient"] = table["seconds_per_map"] / float(gradient.iloc[0])
    return table


def _describe(params: Mapping) -> str:
    shown = {k: v for k, v in params.items() if k != "statistics"}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


# --------------------------------------------------------------------------- C12: statistics bug

@dataclass
class BugEffect:
    """C12: H-set overlap of corrected vs bug-compatible statistics, and the maps' agreement."""

    selection: pd.DataFrame
    maps: pd.DataFrame


def statistics_bug_effect(card: ModelCard, images: ImageSet, corrected: ChannelStatistics,
                          bug: ChannelStatistics, settings: Mapping, *,
                          explainer: Explainer | None = None) -> BugEffect:
    """How much the authors' statistics bug changes ParchGrad (claim C12).

    Settings: ``channel_portions``, ``hooks``. ``selection``: per hooked conv and q, Jaccard of
    the H sets (with the Shapiro filter, as the method runs) and whether the bug-compatible
    log p is the last conv's copy. ``maps``: per image and q, Spearman and Pearson of the
    authors' |map| of ParchGrad(Gradient) under the two statistics.
    """
    require(settings, "channel_portions", "hooks", section="parchgrad.statistics_checks")
    explainer = _explainer(explainer)
    convs = hooked_convs(card, settings["hooks"])
    copies = S.last_layer_copy(bug)
    frames, rows = [], []
    for q in settings["channel_portions"]:
        frame = S.selection_difference(corrected, bug, float(q), convs,
                                       settings.get("shapiro_threshold", SHAPIRO_THRESHOLD))
        frame.insert(0, "model", card.name)
        frame["bug_is_last_layer_copy"] = frame["layer"].map(copies)
        frame["is_last_conv"] = frame["layer"] == list(bug.layers)[-1]
        frames.append(frame)
        pixel = {}
        for label, stats_ in (("corrected", corrected), ("authors_bug", bug)):
            name, params = method_spec("gradient", settings, stats_, q, convs)
            pixel[label] = authors_pixel_map(_explain(explainer, card, name, params, images),
                                             "gradient")
        a, b = _flat(pixel["corrected"]), _flat(pixel["authors_bug"])
        spearman, pearson = similarity.spearman_rows(a, b), similarity.pearson_rows(a, b)
        for i in range(len(images)):
            rows.append({**_base_rows(card, images, i), "q": float(q),
                         "spearman": spearman[i], "pearson": pearson[i]})
    return BugEffect(pd.concat(frames, ignore_index=True), pd.DataFrame(rows))


# --------------------------------------------------------------------------- dead channels

def dead_channel_check(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                       settings: Mapping) -> pd.DataFrame:
    """Instance mode: what the engine does with channels whose GAP is 0 on the whole set.

    Their z = (gap − mean) / std is 0/0 on the set's own images (the engine maps NaN to p = 1)
    but +∞ on any input that wakes them (p = 0, selected first) unless the Shapiro filter
    (p = 1 for a constant channel) removes them. Checked on the images and on the midpoint of
    the IG path from the zero baseline (0.5·x), an input off the statistics set.

    "Dead" is the authors' statistic: ReLU of the *pre*-BatchNorm output. When a BatchNorm
    follows the conv, ``dead_active_after_bn_fraction`` says how many of these channels are
    positive after it somewhere (ReLU(BN(x)) > 0): such channels carry gradient, so the
    Shapiro filter's pruning of them changes the map even at q = 1.
    Settings: ``channel_portion``, ``hooks``. Empty for class-mode statistics.
    """
    require(settings, "channel_portion", "hooks", section="parchgrad.statistics_checks")
    if statistics.mode != "instance":
        return pd.DataFrame()
    convs = hooked_convs(card, settings["hooks"])
    threshold = settings.get("shapiro_threshold", SHAPIRO_THRESHOLD)
    method = create_method("parchgrad", card, statistics=statistics, convs=convs,
                           channel_portion=float(settings["channel_portion"]),
                           shapiro_threshold=threshold)
    rows = []
    for name in convs:
        layer: LayerStatistics = statistics.layer(name)
        dead = layer.gap_std == 0
        outputs: dict[str, Tensor] = {}
        handles = [card.model.get_submodule(name).register_forward_hook(
            lambda _m, _i, output: outputs.__setitem__("output", output.detach().cpu()))]
        norm = _following_batchnorm(card.model, name)
        if norm is not None:
            handles.append(norm.register_forward_hook(
                lambda _m, _i, output: outputs.__setitem__("norm", output.detach().cpu())))
        try:
            x = images.images.to(_device(card))
            for label, inputs in (("statistics_images", x), ("ig_midpoint", 0.5 * x)):
                with torch.no_grad():
                    card.model.eval()(inputs)
                log_p = method.log_pvalues(name, outputs["output"])  # the engine's own p-values
                with_filter = select_channels(log_p, float(settings["channel_portion"]), None,
                                              layer.shapiro_p, threshold or SHAPIRO_THRESHOLD)
                without = select_channels(log_p, float(settings["channel_portion"]), None,
                                          None, None)
                dead_p = log_p[:, dead]
                awake = (torch.relu(outputs["output"]).mean((2, 3))[:, dead] > 0)
                after_bn = (_mean((outputs["norm"][:, dead].amax((0, 2, 3)) > 0))
                            if norm is not None else float("nan"))
                rows.append({"model": card.name, "conv": name, "channels": layer.channels,
                             "dead_channels": int(dead.sum()), "input": label,
                             "images": len(images),
                             "dead_awake_fraction": _mean(awake),
                             "dead_active_after_bn_fraction": after_bn,
                             "dead_p_one_fraction": _mean(dead_p == 0),
                             "dead_p_zero_fraction": _mean(torch.exp(dead_p) == 0),
                             "dead_selected_with_shapiro": _mean(with_filter[:, dead]),
                             "dead_selected_without_shapiro": _mean(without[:, dead]),
                             "dead_shapiro_p_min": float(layer.shapiro_p[dead].min())
                             if layer.shapiro_p is not None and dead.any() else float("nan")})
        finally:
            for handle in handles:
                handle.remove()
    return pd.DataFrame(rows)


def _mean(mask: Tensor) -> float:
    return float(mask.double().mean()) if mask.numel() else float("nan")


def _following_batchnorm(model: torch.nn.Module, conv: str) -> torch.nn.BatchNorm2d | None:
    """The module right after ``conv`` in ``named_modules`` order, if it is a BatchNorm2d
    (timm's BatchNormAct2d, which applies the activation too, is one)."""
    names = [n for n, _ in model.named_modules()]
    position = names.index(conv) + 1
    while position < len(names) and names[position].startswith(conv + "."):
        position += 1
    if position < len(names):
        module = model.get_submodule(names[position])
        if isinstance(module, torch.nn.BatchNorm2d):
            return module
    return None


# --------------------------------------------------------------------------- E4: box energy

def bbox_energy(card: ModelCard, images: ImageSet, statistics: ChannelStatistics,
                settings: Mapping, annotations: Mapping[str, B.BoxAnnotation],
                all_rows: Sequence[Mapping], *, explainer: Explainer | None = None
                ) -> pd.DataFrame:
    """``mu_in`` / ``mu_in_w`` of ParchGrad(Gradient) with and without VC (claims C5, C6).

    Settings: ``hooks`` (the authors' layer ratios 1.0, 0.9, 0.5, 0.3), ``channel_portions``
    (0.05, 0.1), ``pairings`` (``correct`` and/or the authors' mismatched ``authors``). The
    plain Gradient is included (hooks "none"). ``images.names`` must be validation file names
    and ``all_rows`` the whole validation list (for the authors' pairing).
    """
    require(settings, "hooks", "channel_portions", "pairings", section="parchgrad.bbox")
    explainer = _explainer(explainer)
    size = card.preprocessing.input_size
    masks = {}
    for pairing in settings["pairings"]:
        paired = B.pair_boxes(images.names, all_rows, annotations, pairing)
        masks[pairing] = torch.stack([B.box_mask(B.crop_box(a, card.preprocessing), size)
                                      for a in paired])
    rows = []

    def add(pixel: Tensor, hooks: str, q: float, vc: bool | None) -> None:
        for pairing, mask in masks.items():
            mu_in, mu_in_w, area = B.box_energy(pixel, mask)
            for i in range(len(images)):
                rows.append({**_base_rows(card, images, i), "hooks": hooks, "q": q, "vc": vc,
                             "pairing": pairing, "mu_in": mu_in[i], "mu_in_w": mu_in_w[i],
                             "box_area_fraction": area[i]})

    add(authors_pixel_map(_explain(explainer, card, "gradient", {}, images), "gradient"),
        "none", float("nan"), None)
    for hooks in settings["hooks"]:
        convs = hooked_convs(card, hooks)
        for q in settings["channel_portions"]:
            for vc in (False, True):
                name, params = method_spec("gradient", settings, statistics, q, convs, vc)
                pixel = authors_pixel_map(_explain(explainer, card, name, params, images),
                                          "gradient")
                add(pixel, hooks_label(hooks), float(q), vc)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- E1, E7, C2: toys

def toy_tables(settings: Mapping) -> dict[str, pd.DataFrame]:
    """E1 (claim C1): the authors' seed under every reading, its vectors, and the seed sweep.

    Settings: ``seeds`` (how many, from 0), ``readings``, ``toy_seed`` (the authors' 21).
    """
    require(settings, "seeds", "readings", "toy_seed", section="parchgrad.toys")
    readings = list(settings["readings"])
    seed = int(settings["toy_seed"])
    sums = pd.concat([toys.toy_sums(seed, r) for r in readings], ignore_index=True)
    vectors = pd.concat([toys.toy_vectors(seed, r) for r in readings], ignore_index=True)
    sweep = toys.toy_seed_sweep(range(int(settings["seeds"])), readings)
    return {"sums": sums, "vectors": vectors, "seed_sweep": sweep,
            "summary": toys.toy_sweep_summary(sweep)}


def checkerboard(settings: Mapping) -> pd.DataFrame:
    """E7 (claim C13): max |input gradient| per stride and output-gradient scale k."""
    require(settings, "strides", "scales", "seed", "stride_on",
            section="parchgrad.toys.checkerboard")
    return toys.checkerboard_table(settings["strides"], settings["scales"], int(settings["seed"]),
                                   settings["stride_on"])


def variance_identity(settings: Mapping) -> pd.DataFrame:
    """C2: the engine's partition against the identities, on random gradients."""
    require(settings, "seeds", "gammas", section="parchgrad.toys.variance_identity")
    return toys.variance_identity_table(range(int(settings["seeds"])), settings["gammas"])

