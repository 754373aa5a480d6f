"""Expected Grad-CAM experiments: one compute function per experiment, each returning tidy tables.

Every function takes a ModelCard, an ImageSet in model-input space (the evaluated images, used
as prefixes: each part of an experiment explains the first ``n`` images its parameters name),
where needed the reference ImageSet D (real images disjoint from the evaluated ones), and the
model's parameter section (``model_section(params["expected_gradcam"], model)``). The predicted
class is explained. Tables are long: one row per observation (model, method, image, metric,
value …), so any figure or claim is a filter and a groupby away.

All of it is our reconstruction (paper_notes/expected_gradcam.md): the paper's code and body are
unavailable, so the experiments are read from its abstract and our notes. Choices that are ours
say so in their docstrings.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from replication.attribution import (Attribution, ExpectedGradCAM, GradCAM, create_method,
                                     method_parameters, postprocess)
from replication.attribution._base import accumulate_samples, image_generators, resolve_layer
from replication.attribution._cam import gradcam_pp_weights
from replication.config import deep_merge
from replication.errors import ConfigError
from replication.experiments.common import Explainer, ImageSet, predicted_classes
from replication.metrics import faithfulness, stats
from replication.metrics.similarity import pearson_rows, spearman_rows
from replication.models.base import ModelCard

METHOD_LABELS = {
    "gradcam": "Grad-CAM", "gradcam_pp": "Grad-CAM++", "smooth_gradcam_pp": "Smooth Grad-CAM++",
    "integrated_gradcam": "Integrated Grad-CAM", "xgradcam": "XGrad-CAM", "layercam": "LayerCAM",
    "hirescam": "HiResCAM", "scorecam": "Score-CAM", "ablationcam": "Ablation-CAM",
    "expected_gradcam": "Expected Grad-CAM", "expected_gradcam_pp": "Expected Grad-CAM++",
    "expected_gradcam_layer": "Expected Grad-CAM (layer-EG)",
}
# The gradient-weighted CAMs among which claim C3 ranks Expected Grad-CAM's infidelity.
GRADIENT_CAMS = ("gradcam", "gradcam_pp", "smooth_gradcam_pp", "integrated_gradcam", "xgradcam",
                 "layercam", "hirescam", "expected_gradcam")
REFERENCE_METHOD = "gradcam"
NUMERICAL_TOLERANCE = 1e-6  # relative: differences below it are float round-off
USES_REFERENCES = ("expected_gradcam", "expected_gradcam_pp")
# Keys of a metric's options that are ours, not the metric function's.
METRIC_OPTION_KEYS = ("images", "skip_methods", "function")


# --------------------------------------------------------------------------------- parameters

def model_section(section: Mapping[str, Any], model: str) -> dict:
    """The experiment section with ``per_model[model]`` merged over it (what a model runs)."""
    base = {k: v for k, v in section.items() if k != "per_model"}
    return deep_merge(base, (section.get("per_model") or {}).get(model) or {})


def count(value: Any, available: int, what: str = "images") -> int:
    """An image count from params: ``None`` is all ``available``; larger counts are capped."""
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"expected_gradcam: {what} must be a non-negative integer or null, "
                          f"got {value!r}")
    return min(value, available)


def _metric_function(name: str, options: Mapping[str, Any]) -> faithfulness.Metric:
    return faithfulness.get_metric(options.get("function", name))


def metric_directions(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, bool]:
    """``higher_is_better`` of every metric named in a ``metrics`` section."""
    return {name: _metric_function(name, options or {}).higher_is_better
            for name, options in metrics.items()}


# --------------------------------------------------------------------------------- methods

class ExpectedGradCAMPlusPlus(ExpectedGradCAM):
    """Expected Grad-CAM++ (ours, for claim C8 "substitute of … any method built therefrom").

    Grad-CAM++ weights (eq. 19, as ``gradcam_pp_weights``) from d1, d2, d3 = the means of g, g²,
    g³ over Expected Grad-CAM's draws (reference, α, ε), as Smooth Grad-CAM++ averages them over
    noise; the map uses the clean input's activations. It draws exactly as ``expected_gradcam``
    (same streams), so σ = 0, α = 1 gives Grad-CAM++. Not registered in the engine.
    """

    name = "expected_gradcam_pp"

    def __init__(self, model, **params: Any):
        super().__init__(model, **params)
        if self.variant != "eg_weights":
            raise ConfigError("expected_gradcam_pp replaces the gradient only: use variant="
                              "'eg_weights'")

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        generators, pool = image_generators(inputs, self.seed), self._pool(inputs)

        def derivatives(image: Tensor, sample: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            image = image.to(inputs.device)
            _, _, points = self._draw(inputs, pool, generators, image, sample)
            g = self._layer_gradients(points, targets[image])
            return g, g * g, g * g * g

        sums = accumulate_samples(len(inputs), self.n_samples, self.internal_batch_size,
                                  derivatives)
        d1, d2, d3 = (s / self.n_samples for s in sums)
        activations = self._activations(inputs)
        return self.combine(activations, gradcam_pp_weights(activations, d1, d2, d3))


class _RecordWeights:
    """Mixin: keep the channel weights the CAM combined (for the top-k channel study)."""

    recorded_weights: Tensor

    def combine(self, activations: Tensor, weights: Tensor) -> Tensor:
        self.recorded_weights = weights.detach()
        return super().combine(activations, weights)  # type: ignore[misc]


class _GradCAMWeights(_RecordWeights, GradCAM):
    pass


class _ExpectedGradCAMWeights(ExpectedGradCAM):
    """Expected Grad-CAM that keeps its channel weights: GAP of Ĝ (``eg_weights``, what the map
    combines) or GAP of Φ (``layer_eg``, the notes' w_k = mean_ij Φ_k). The draws are the
    engine's (same streams, same order); the test checks the maps equal the engine's."""

    recorded_weights: Tensor

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        generators, pool = image_generators(inputs, self.seed), self._pool(inputs)

        def draws(image: Tensor, sample: Tensor) -> Tensor:
            image = image.to(inputs.device)
            baselines, perturbed, points = self._draw(inputs, pool, generators, image, sample)
            gradients = self._layer_gradients(points, targets[image])
            if self.variant == "eg_weights":
                return gradients
            return (self._activations(perturbed) - self._activations(baselines)) * gradients

        (total,) = accumulate_samples(len(inputs), self.n_samples, self.internal_batch_size, draws)
        mean = total / self.n_samples
        self.recorded_weights = mean.mean((2, 3), keepdim=True)
        if self.variant == "layer_eg":
            cam = mean.sum(1, keepdim=True)
            return torch.relu(cam) if self.relu else cam
        return self.combine(self._activations(inputs), self.recorded_weights)


def engine_name(name: str, params: Mapping[str, Any]) -> str:
    """The engine method behind a configured name (``method:`` in its parameters, else the name),
    so one engine method can appear twice, e.g. ``expected_gradcam_layer: {method:
    expected_gradcam, variant: layer_eg}``."""
    return str((params or {}).get("method", name))


def build_method(card: ModelCard, name: str, params: Mapping[str, Any],
                 references: Tensor | None) -> Attribution:
    """Method ``name`` with ``params``; for Expected Grad-CAM(++), ``references: data`` (the
    default) is the reference set D, other values ('black', 'zeros', 'input') go to the engine."""
    params = dict(params or {})
    name = engine_name(name, params)
    params.pop("method", None)
    if name in USES_REFERENCES:
        chosen = params.pop("references", "data")
        if isinstance(chosen, str) and chosen == "data":
            if references is None:
                raise ConfigError(f"{name} needs the reference set D (references: data)")
            chosen = references
        params["references"] = chosen
    if name == "expected_gradcam_pp":
        unknown = sorted(set(params) - set(method_parameters("expected_gradcam")))
        if unknown:
            raise ConfigError(f"expected_gradcam_pp has no parameter {unknown}")
        return ExpectedGradCAMPlusPlus(card, **params)
    return create_method(name, card, **params)


def coarse_maps(explainer: Explainer, attribution: Attribution, images: Tensor,
                targets: Tensor) -> Tensor:
    """Raw maps (layer resolution for CAMs) of ``images`` for ``targets`` through the
    Explainer's Lightning predict loop (as ``Explainer.__call__``, for a configured method)."""
    return explainer.raw(attribution, images, targets)


def _upsample(maps: Tensor, images: Tensor) -> Tensor:
    return postprocess.upsample(maps, tuple(images.shape[-2:]))


def _method_params(params: Mapping[str, Any], name: str, override: Mapping | None = None) -> dict:
    base = dict((params.get("methods") or {}).get(name) or {})
    return deep_merge(base, dict(override or {}))


# --------------------------------------------------------------------------------- metrics

def _accepts(fn: Callable, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def metric_values(name: str, options: Mapping[str, Any], *, model: nn.Module, inputs: Tensor,
                  targets: Tensor, maps: Tensor, explain: Callable | None, seed: int,
                  batch_size: int) -> np.ndarray:
    """One metric per image; ``options`` are the metric's keyword arguments plus our keys."""
    metric = _metric_function(name, options)
    kwargs = {k: v for k, v in options.items() if k not in METRIC_OPTION_KEYS}
    if _accepts(metric.fn, "seed"):
        kwargs.setdefault("seed", seed)
    if _accepts(metric.fn, "batch_size"):
        kwargs.setdefault("batch_size", batch_size)
    return np.asarray(metric(model=model, inputs=inputs, targets=targets, maps=maps,
                             explain=explain, **kwargs), dtype=np.float64)


# --------------------------------------------------------------------------------- Exp. 1

@dataclass
class Comparison:
    """Per-image scores (model, method, image, metric, value) and the first images' raw coarse
    maps of every method (``panels[method]``: (n, h, w), NaN where a method ran on fewer)."""

    scores: pd.DataFrame
    panels: dict[str, np.ndarray]
    targets: np.ndarray


def compare_methods(card: ModelCard, images: ImageSet, references: ImageSet | None,
                    params: Mapping[str, Any], explainer: Explainer) -> Comparison:
    """Exp. 1: every method × every metric, per image.

    ``params["comparison"]``: ``methods``; ``images`` (maps, and metrics without their own
    count); ``method_images`` (a cap per method: the per-channel CAMs cost one forward per
    channel); ``metrics`` (name → options: ``images``, ``skip_methods``, ``function`` and the
    metric's own keyword arguments); ``panel_images``. Metrics see the raw maps upsampled to the
    input (bilinear): infidelity depends on their scale (the un-normalised map is what the notes
    ask for); insertion, deletion and ROAD depend on ranks only; complexity, sparseness and
    max-sensitivity normalise internally.
    """
    section = params["comparison"]
    model, name = card.model.eval(), card.name
    n_total = count(section.get("images"), len(images))
    x_all = images.images[:n_total]
    targets = predicted_classes(model, x_all)
    n_panel = count(section.get("panel_images", 0), n_total, "panel_images")
    ref = None if references is None else references.images
    seed, batch = int(params.get("seed", 0)), int(params.get("metric_batch_size", 64))
    rows: list[dict] = []
    panels: dict[str, np.ndarray] = {}
    for method in section["methods"]:
        n_method = count((section.get("method_images") or {}).get(method), n_total,
                         f"method_images.{method}")
        if n_method == 0:
            continue
        attribution = build_method(card, method, _method_params(params, method), ref)
        x, t = x_all[:n_method], targets[:n_method]
        coarse = coarse_maps(explainer, attribution, x, t)
        maps = _upsample(coarse, x)
        panel = np.full((n_panel, *coarse.shape[-2:]), np.nan, dtype=np.float32)
        panel[:min(n_panel, n_method)] = coarse[:n_panel, 0].numpy()
        panels[method] = panel

        def explain(batch: Tensor, batch_targets: Tensor,
                    attribution: Attribution = attribution) -> Tensor:
            return _upsample(attribution.attribute(batch, batch_targets), batch)

        for metric, options in (section.get("metrics") or {}).items():
            options = dict(options or {})
            if method in (options.get("skip_methods") or []):
                continue
            n = min(count(options.get("images"), n_total, f"metrics.{metric}.images"), n_method)
            if n == 0:
                continue
            values = metric_values(metric, options, model=model, inputs=x[:n], targets=t[:n],
                                   maps=maps[:n], explain=explain, seed=seed, batch_size=batch)
            rows += [{"model": name, "method": method, "image": images.names[i],
                      "metric": metric, "value": float(v)} for i, v in enumerate(values)]
    scores = pd.DataFrame(rows, columns=["model", "method", "image", "metric", "value"])
    return Comparison(scores, panels, targets.numpy())


def summarize_comparison(scores: pd.DataFrame, directions: Mapping[str, bool], *,
                         reference: str = REFERENCE_METHOD, n_resamples: int = 10_000,
                         confidence: float = 0.95, alpha: float = 0.05,
                         seed: int = 0) -> pd.DataFrame:
    """Per model × method × metric: mean and bootstrap CI, and the paired comparison with
    ``reference`` on the images both were scored on (mean difference method − reference, its
    CI, Wilcoxon p). ``better_than_reference`` is direction-aware (the difference has the sign
    of improvement and exceeds float round-off, ``NUMERICAL_TOLERANCE`` of the values' mean
    magnitude); ``significantly_better`` adds p < ``alpha`` and a CI excluding 0."""
    rows = []
    for (model, metric), group in scores.groupby(["model", "metric"], sort=False):
        table = group.pivot(index="image", columns="method", values="value")
        higher = bool(directions[metric])
        for method in dict.fromkeys(group["method"]):
            values = table[method].dropna()
            ci = stats.bootstrap_ci(values.to_numpy(), n_resamples=n_resamples,
                                    confidence=confidence, seed=seed)
            row = {"model": model, "method": method, "metric": metric, "higher_is_better": higher,
                   "n": ci.n, "mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high,
                   "reference": reference, "n_pairs": 0, "difference": math.nan,
                   "difference_ci_low": math.nan, "difference_ci_high": math.nan,
                   "p_value": math.nan, "better_than_reference": None,
                   "significantly_better": None}
            if method != reference and reference in table:
                pairs = table[[method, reference]].dropna()
                if len(pairs):
                    cmp = stats.paired_comparison(pairs[method].to_numpy(),
                                                  pairs[reference].to_numpy(),
                                                  n_resamples=n_resamples, confidence=confidence,
                                                  seed=seed)
                    improvement = cmp.mean_difference if higher else -cmp.mean_difference
                    # Differences at float round-off (e.g. a method that equals Grad-CAM on this
                    # model) are not an improvement.
                    noise = NUMERICAL_TOLERANCE * float(np.abs(pairs.to_numpy()).mean())
                    better = bool(improvement > noise)
                    excludes_zero = bool(cmp.ci_low > 0 if higher else cmp.ci_high < 0)
                    row.update(n_pairs=cmp.n_pairs, difference=cmp.mean_difference,
                               difference_ci_low=cmp.ci_low, difference_ci_high=cmp.ci_high,
                               p_value=cmp.p_value, better_than_reference=better,
                               significantly_better=bool(better and cmp.p_value < alpha
                                                         and excludes_zero))
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------- Exp. 2

@torch.no_grad()
def _forward_with_layer(model: nn.Module, layer: nn.Module, inputs: Tensor, batch_size: int,
                        mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Target-layer activations (flattened, float64) and logits; with ``mask`` (B, K) the layer's
    output is multiplied by it channel-wise before the rest of the network runs."""
    acts, logits = [], []
    store: dict[str, Tensor] = {}
    current: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
        store["output"] = output.detach().flatten(1).double()
        if "mask" in current:
            return output * current["mask"][:, :, None, None].to(output.dtype)
        return output

    handle = layer.register_forward_hook(hook)
    try:
        for start in range(0, len(inputs), batch_size):
            rows = slice(start, start + batch_size)
            if mask is not None:
                current["mask"] = mask[rows]
            logits.append(model(inputs[rows]).double())
            acts.append(store["output"])
    finally:
        handle.remove()
    return torch.cat(acts), torch.cat(logits)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine of (N, D) float64 rows with one (D,) row; 1 for two zero vectors."""
    na, nb = a.norm(dim=1), b.norm()
    cos = (a @ b) / (na * nb).clamp_min(1e-300)
    cos = torch.where(na * nb > 0, cos, torch.zeros_like(cos))
    return torch.where((na == 0) & (nb == 0), torch.ones_like(cos), cos)


def _reference_draws(n_images: int, pool: int, draws: int, seed: int) -> np.ndarray:
    """(n_images, draws) indices into D, seeded per image index (our choice)."""
    return np.stack([np.random.default_rng([seed, i]).integers(0, pool, draws)
                     for i in range(n_images)]) if n_images else np.zeros((0, draws), int)


@dataclass
class Saturation:
    curves: pd.DataFrame  # model, image, baseline, draw, alpha, cosine, logit, probability
    alpha_star: pd.DataFrame  # model, image, baseline, draw, alpha_star
    topk: pd.DataFrame  # model, image, method, fraction, n_channels, probability, logit


def internal_saturation(card: ModelCard, images: ImageSet, references: ImageSet | None,
                        params: Mapping[str, Any]) -> Saturation:
    """Exp. 2 (notes §2.3, reconstructed): internal saturation along the straight path.

    ``params["saturation"]``: ``images``, ``alphas`` (grid size on [0, 1]), ``baselines``
    (``black``: pixel 0; ``data``: ``data_draws`` images of D per image), ``threshold``,
    ``fractions`` (top-k channel fractions), ``batch_size``, ``method`` (the configured Expected
    Grad-CAM whose channel weights are ranked: GAP of Ĝ for ``eg_weights``, GAP of Φ for
    ``layer_eg``) and ``overrides``.

    Curves: s(α) = cos(e(α), e(1)), e = the flattened target-layer activations at
    x_α = x' + α(x − x') (no spatial pooling), with the target logit and probability; s(1) = 1
    by construction. α* = min{α : s(α) ≥ threshold} (the notes' definition, first crossing).

    Top-k channels under saturation (our reading of the appendix's "top-k features insertion"):
    rank the layer's K channels by Grad-CAM's weights and by the configured Expected Grad-CAM's,
    keep the top
    ⌈f·K⌉ channels (the others set to 0 at the layer) and score the target probability for each
    fraction f; a method whose weights name the channels that carry the score inserts faster.
    Images are later split at the median α* (``saturation_groups``).
    """
    section = params["saturation"]
    model = card.model.eval()
    layer = resolve_layer("saturation", card, model, None)
    n = count(section.get("images"), len(images))
    x = images.images[:n]
    targets = predicted_classes(model, x)
    alphas = torch.linspace(0.0, 1.0, int(section.get("alphas", 21)), dtype=x.dtype)
    threshold, batch = float(section.get("threshold", 0.95)), int(section.get("batch_size", 32))
    seed = int(params.get("seed", 0))
    draws = int(section.get("data_draws", 1))
    black = card.preprocessing.normalize(torch.zeros_like(x[:1]))[0]
    index = (_reference_draws(n, len(references), draws, seed)
             if references is not None and len(references) else None)
    curves, stars = [], []
    for i in range(n):
        baselines: list[tuple[str, int, Tensor]] = []
        for kind in section.get("baselines", ["black", "data"]):
            if kind == "black":
                baselines.append(("black", 0, black))
            elif kind == "data":
                if index is None:
                    raise ConfigError("saturation baseline 'data' needs the reference set D")
                baselines += [("data", j, references.images[int(k)])  # type: ignore[union-attr]
                              for j, k in enumerate(index[i])]
            else:
                raise ConfigError(f"unknown saturation baseline {kind!r}; use 'black' or 'data'")
        for kind, draw, base in baselines:
            points = base[None] + alphas.view(-1, 1, 1, 1) * (x[i] - base)[None]
            acts, logits = _forward_with_layer(model, layer, points, batch)
            cos = _cosine(acts, acts[-1]).numpy()
            target = int(targets[i])
            probs = logits.softmax(1)[:, target].numpy()
            for a, c, lg, p in zip(alphas.tolist(), cos, logits[:, target].numpy(), probs):
                curves.append({"model": card.name, "image": images.names[i], "baseline": kind,
                               "draw": draw, "alpha": a, "cosine": float(c), "logit": float(lg),
                               "probability": float(p)})
            reached = np.flatnonzero(cos >= threshold)
            stars.append({"model": card.name, "image": images.names[i], "baseline": kind,
                          "draw": draw, "alpha_star": float(alphas[reached[0]]) if len(reached)
                          else math.nan})
    topk = _topk_channels(card, x, targets, images.names[:n], references, params)
    return Saturation(pd.DataFrame(curves), pd.DataFrame(stars), topk)


def _topk_channels(card: ModelCard, x: Tensor, targets: Tensor, names: Sequence[str],
                   references: ImageSet | None, params: Mapping[str, Any]) -> pd.DataFrame:
    section = params["saturation"]
    model = card.model.eval()
    layer = resolve_layer("saturation", card, model, None)
    fractions = [float(f) for f in section.get("fractions", [0.01, 0.05, 0.1, 0.25, 0.5, 1.0])]
    if not fractions or min(fractions) <= 0 or max(fractions) > 1:
        raise ConfigError(f"saturation.fractions must lie in (0, 1]; got {fractions}")
    batch = int(section.get("batch_size", 32))
    name = section.get("method", "expected_gradcam")
    egc_params = dict(_swept_params(params, section, name))
    egc_params.pop("method", None)
    recorders: dict[str, Any] = {"gradcam": _GradCAMWeights(card)}
    chosen = egc_params.pop("references", "data")
    if isinstance(chosen, str) and chosen == "data":
        if references is None:
            raise ConfigError("the top-k study needs the reference set D for Expected Grad-CAM")
        chosen = references.images
    recorders[name] = _ExpectedGradCAMWeights(card, references=chosen, **egc_params)
    rows = []
    for method, recorder in recorders.items():
        recorder.attribute(x, targets)
        weights = recorder.recorded_weights.flatten(1)  # (B, K)
        channels = weights.shape[1]
        order = torch.argsort(weights, dim=1, descending=True, stable=True)
        rank = torch.argsort(order, dim=1)
        for f in fractions:
            keep = max(1, math.ceil(f * channels))
            mask = (rank < keep).to(x.dtype)
            _, logits = _forward_with_layer(model, layer, x, batch, mask)
            probs = logits.softmax(1).gather(1, targets[:, None]).squeeze(1)
            picked = logits.gather(1, targets[:, None]).squeeze(1)
            rows += [{"model": card.name, "image": names[i], "method": method, "fraction": f,
                      "n_channels": keep, "probability": float(probs[i]),
                      "logit": float(picked[i])} for i in range(len(x))]
    return pd.DataFrame(rows)


def channel_insertion_auc(topk: pd.DataFrame) -> pd.DataFrame:
    """Per model × image × method: trapezoid area of the probability over the kept-channel
    fractions, divided by the fractions' span (the mean score over the range; higher is better)."""
    rows = []
    for (model, image, method), group in topk.groupby(["model", "image", "method"], sort=False):
        group = group.sort_values("fraction")
        f, p = group["fraction"].to_numpy(), group["probability"].to_numpy()
        span = f[-1] - f[0]
        auc = float(np.trapezoid(p, f) / span) if span > 0 else float(p.mean())
        rows.append({"model": model, "image": image, "method": method, "auc": auc})
    return pd.DataFrame(rows)


def saturation_groups(alpha_star: pd.DataFrame, baseline: str = "black") -> pd.DataFrame:
    """Per model × image: α* of ``baseline`` (mean over draws) and the group: ``strong`` when
    α* is below the model's median α*, ``rest`` otherwise (our split: always two groups)."""
    table = (alpha_star[alpha_star["baseline"] == baseline]
             .groupby(["model", "image"], sort=False)["alpha_star"].mean().reset_index())
    median = table.groupby("model")["alpha_star"].transform("median")
    table["group"] = np.where(table["alpha_star"] < median, "strong", "rest")
    return table


# --------------------------------------------------------------------------------- Exp. 3

@dataclass
class Smoothing:
    sigma: pd.DataFrame  # model, method, sigma, image, metric, value
    stability: pd.DataFrame  # model, method, n_samples, image, metric (pearson/spearman), value
    sigma_maps: np.ndarray  # (n_methods, n_sigmas, n_panel, h, w) raw coarse maps
    sigmas: list[float]
    methods: list[str]


def _swept_methods(section: Mapping[str, Any]) -> list[str]:
    methods = list(section.get("methods") or ["expected_gradcam"])
    if not methods:
        raise ConfigError("name at least one configured Expected Grad-CAM in 'methods'")
    return methods


def _swept_params(params: Mapping[str, Any], section: Mapping[str, Any], method: str) -> dict:
    """The configured method's parameters with the section's ``overrides[method]``; it must be
    an Expected Grad-CAM (it needs σ, M and a seed)."""
    chosen = _method_params(params, method, (section.get("overrides") or {}).get(method))
    if engine_name(method, chosen) not in USES_REFERENCES:
        raise ConfigError(f"{method!r} is not an Expected Grad-CAM method (its engine method is "
                          f"{engine_name(method, chosen)!r})")
    return chosen


def smoothing(card: ModelCard, images: ImageSet, references: ImageSet | None,
              params: Mapping[str, Any], explainer: Explainer) -> Smoothing:
    """Exp. 3: σ sweep and M sweep of each configured Expected Grad-CAM in ``methods``.

    ``params["smoothing"]``: ``methods`` (configured names, default ``[expected_gradcam]``),
    ``overrides`` (per method), ``sigmas``, ``images``, ``metrics`` (options as in Exp. 1),
    ``panel_images``; ``samples`` (the M values), ``stability_images``, ``seeds`` (two). Common
    random numbers across σ: the engine draws each image's references, α and ε in a fixed order
    from a stream seeded by (seed, image), so every σ reuses them and only the noise scale
    changes. Stability at M = the correlation (Pearson and Spearman) of the upsampled maps from
    the two seeds, per image.
    """
    section = params["smoothing"]
    model, ref = card.model.eval(), None if references is None else references.images
    seed, batch = int(params.get("seed", 0)), int(params.get("metric_batch_size", 64))
    n = count(section.get("images"), len(images))
    x = images.images[:n]
    targets = predicted_classes(model, x)
    n_panel = count(section.get("panel_images", 0), n, "panel_images")
    sigmas = [float(s) for s in section["sigmas"]]
    methods = _swept_methods(section)
    rows, panels = [], []
    for method in methods:
        base = _swept_params(params, section, method)
        panel = []
        for sigma in sigmas:
            attribution = build_method(card, method, {**base, "sigma": sigma}, ref)
            coarse = coarse_maps(explainer, attribution, x, targets)
            maps = _upsample(coarse, x)
            panel.append(coarse[:n_panel, 0].numpy())
            for metric, options in (section.get("metrics") or {}).items():
                options = dict(options or {})
                m = count(options.get("images"), n, f"smoothing.metrics.{metric}.images")
                values = metric_values(metric, options, model=model, inputs=x[:m],
                                       targets=targets[:m], maps=maps[:m], explain=None,
                                       seed=seed, batch_size=batch)
                rows += [{"model": card.name, "method": method, "sigma": sigma,
                          "image": images.names[i], "metric": metric, "value": float(v)}
                         for i, v in enumerate(values)]
        panels.append(np.stack(panel))
    stability = _concat_frames([_sample_stability(card, images, ref, params, explainer, method)
                                for method in methods])
    return Smoothing(pd.DataFrame(rows, columns=["model", "method", "sigma", "image", "metric",
                                                 "value"]),
                     stability, np.stack(panels).astype(np.float32), sigmas, methods)


def _concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _sample_stability(card: ModelCard, images: ImageSet, ref: Tensor | None,
                      params: Mapping[str, Any], explainer: Explainer,
                      method: str) -> pd.DataFrame:
    section = params["smoothing"]
    seeds = [int(s) for s in section.get("seeds", [0, 1])]
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ConfigError(f"smoothing.seeds must be two different seeds; got {seeds}")
    n = count(section.get("stability_images"), len(images), "smoothing.stability_images")
    x = images.images[:n]
    targets = predicted_classes(card.model, x)
    base = _swept_params(params, section, method)
    rows = []
    for m in section.get("samples", []):
        maps = []
        for s in seeds:
            attribution = build_method(card, method, {**base, "n_samples": int(m), "seed": s}, ref)
            maps.append(_upsample(coarse_maps(explainer, attribution, x, targets), x)
                        .flatten(1).double().numpy())
        for metric, fn in (("pearson", pearson_rows), ("spearman", spearman_rows)):
            rows += [{"model": card.name, "method": method, "n_samples": int(m),
                      "image": images.names[i], "metric": metric, "value": float(v)}
                     for i, v in enumerate(fn(maps[0], maps[1]))]
    return pd.DataFrame(rows, columns=["model", "method", "n_samples", "image", "metric", "value"])


# --------------------------------------------------------------------------------- Exp. 4

def _blur(pixels: Tensor, sigma: float) -> Tensor:
    """Gaussian blur in pixel space with reflected borders (kernel ±3σ, within the image)."""
    from torchvision.transforms.functional import gaussian_blur

    size = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(pixels.shape[-2:]) // 2) - 1)
    return gaussian_blur(pixels, [size, size], [sigma, sigma])


def baseline_tensors(card: ModelCard, x: Tensor, kinds: Sequence[str], references: Tensor | None,
                     *, seed: int, blur_sigma: float) -> dict[str, Tensor]:
    """Per-image baselines (B, C, H, W) in model-input space.

    ``zeros`` (the Integrated Grad-CAM notebook's ``input * 0``), ``black``, ``white``, ``blur``
    (the input blurred in pixel space, σ = ``blur_sigma`` pixels), ``uniform_noise`` (pixels
    U(0, 1), seeded per image index) and ``data`` (one image of D per image, seeded).
    """
    p = card.preprocessing
    out: dict[str, Tensor] = {}
    for kind in kinds:
        if kind == "zeros":
            out[kind] = torch.zeros_like(x)
        elif kind == "black":
            out[kind] = p.normalize(torch.zeros_like(x))
        elif kind == "white":
            out[kind] = p.normalize(torch.ones_like(x))
        elif kind == "blur":
            out[kind] = p.normalize(_blur(p.denormalize(x).clamp(0, 1), blur_sigma))
        elif kind == "uniform_noise":
            noise = [torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(
                seed * 1_000_003 + i)) for i in range(len(x))]
            out[kind] = p.normalize(torch.stack(noise).to(x)) if len(x) else x.clone()
        elif kind == "data":
            if references is None or len(references) == 0:
                raise ConfigError("baseline 'data' needs the reference set D")
            index = _reference_draws(len(x), len(references), 1, seed)[:, 0]
            out[kind] = references[torch.as_tensor(index, dtype=torch.long)].to(x)
        else:
            raise ConfigError(f"unknown baseline {kind!r}; choose from zeros, black, white, blur, "
                              "uniform_noise, data")
    return out


def _pools(references: Tensor | None, which: str) -> Tensor | str:
    if which in ("black", "zeros", "input"):
        return which
    if references is None:
        raise ConfigError(f"reference pool {which!r} needs the reference set D")
    half = len(references) // 2
    pools = {"all": references, "first_half": references[:half], "second_half": references[half:]}
    if which not in pools or len(pools[which]) == 0:
        raise ConfigError(f"unknown or empty reference pool {which!r}; choose from "
                          f"{sorted(pools)} (D holds {len(references)} images)")
    return pools[which]


def baseline_sensitivity(card: ModelCard, images: ImageSet, references: ImageSet | None,
                         params: Mapping[str, Any], explainer: Explainer) -> pd.DataFrame:
    """Exp. 4 (claim C6): how much maps change with the baseline parameter.

    ``params["baselines"]``: ``images``; ``integrated_gradcam`` (``baselines`` list, engine
    overrides such as ``steps``); ``configs`` (name → {pool: all / first_half / second_half,
    seed}) applied to each configured Expected Grad-CAM in ``methods`` (default
    ``[expected_gradcam]``; ``overrides`` per method); ``blur_sigma``. For each image, the
    Spearman correlation of the upsampled maps of every pair of configurations of one method;
    C6 compares the per-image mean over pairs. Integrated Grad-CAM runs through the engine
    directly (the baselines are per-image tensors, which a batched loop cannot pass); Expected
    Grad-CAM through the Explainer.
    """
    section = params["baselines"]
    model, ref = card.model.eval(), None if references is None else references.images
    seed = int(params.get("seed", 0))
    n = count(section.get("images"), len(images))
    x = images.images[:n]
    targets = predicted_classes(model, x)
    maps: dict[str, dict[str, np.ndarray]] = {"integrated_gradcam": {}}
    igc = dict(section.get("integrated_gradcam") or {})
    kinds = igc.pop("baselines", ["zeros", "black", "white", "blur", "uniform_noise", "data"])
    igc_params = _method_params(params, "integrated_gradcam", igc)
    tensors = baseline_tensors(card, x, kinds, ref, seed=seed,
                               blur_sigma=float(section.get("blur_sigma", 5.0)))
    for kind, baseline in tensors.items():
        method = build_method(card, "integrated_gradcam", {**igc_params, "baseline": baseline}, ref)
        maps["integrated_gradcam"][kind] = _upsample(method.attribute(x, targets), x).flatten(1).numpy()
    configs = section.get("configs") or {"pool_a": {"pool": "first_half", "seed": 0},
                                         "pool_b": {"pool": "second_half", "seed": 0},
                                         "seed_1": {"pool": "all", "seed": 1}}
    for name in _swept_methods(section):
        base = _swept_params(params, section, name)
        maps[name] = {}
        for config, spec in configs.items():
            spec = dict(spec or {})
            chosen = {**base, "references": _pools(ref, spec.pop("pool", "all")), **spec}
            attribution = build_method(card, name, chosen, ref)
            maps[name][config] = (_upsample(coarse_maps(explainer, attribution, x, targets), x)
                                  .flatten(1).numpy())
    rows = []
    for method, by_config in maps.items():
        names = list(by_config)
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                rho = spearman_rows(by_config[names[a]], by_config[names[b]])
                rows += [{"model": card.name, "method": method, "image": images.names[i],
                          "config_a": names[a], "config_b": names[b], "spearman": float(r)}
                         for i, r in enumerate(rho)]
    return pd.DataFrame(rows, columns=["model", "method", "image", "config_a", "config_b",
                                       "spearman"])


def mean_pairwise(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per model × method × image: the mean pairwise Spearman over configuration pairs."""
    return (pairs.groupby(["model", "method", "image"], sort=False)["spearman"].mean()
            .reset_index(name="mean_spearman"))


# --------------------------------------------------------------------------------- special cases

@torch.no_grad()
def _logits(model: nn.Module, inputs: Tensor, batch_size: int = 64) -> Tensor:
    return torch.cat([model(inputs[i:i + batch_size]).double()
                      for i in range(0, len(inputs), batch_size)])


def special_cases(card: ModelCard, images: ImageSet, references: ImageSet | None,
                  params: Mapping[str, Any]) -> pd.DataFrame:
    """Reductions of notes §1.5 measured on real images (claim C9), raw coarse maps, engine
    called directly (exactness, not batching, is under test).

    - ``gradcam``: Expected Grad-CAM (D, σ = 0, α = 1) vs Grad-CAM;
    - ``integrated_gradcam``: Expected Grad-CAM (black baseline, σ = 0, α grid of ``steps``) vs
      Integrated Grad-CAM (``form="path_weights"``, black baseline, same steps);
    - ``gradcam_pp``: Expected Grad-CAM++ (ours; σ = 0, α = 1) vs Grad-CAM++;
    - ``completeness_black``: layer-EG, black baseline, σ = 0, α grid: Σ Φ vs y_c(x) − y_c(x');
    - ``completeness_data``: layer-EG, D (its first ``completeness_pool`` images), σ = 0,
      α ~ U(0, 1): Σ Φ vs y_c(x) − mean_D y_c(x') (Monte-Carlo error included).

    - ``configured:<name>`` for each name in ``diagnose``: the configured method (its own
      parameters) vs Grad-CAM (Grad-CAM++ for Expected Grad-CAM++), a diagnostic: ≈ 0 means it
      coincides with that CAM on this model
      (e.g. ``eg_weights`` when the layer is followed by global pooling and a linear head,
      where ∂y_c/∂A is the same at every input).

    ``difference`` is max |a − b| per image (|Σ Φ − Δy| for completeness), ``scale`` max |b|
    (|Δy|), ``relative`` their ratio. The completeness gaps are approximate by construction (the
    path is straight in input space, not at the layer; notes §1.5 item 5) and are reported, not
    required to vanish. Reduction 3 (SmoothGrad-CAM) needs the engine's own noise draws and is
    covered by the engine's tests.
    """
    section = params["special_cases"]
    model, ref = card.model.eval(), None if references is None else references.images
    n = count(section.get("images"), len(images))
    x = images.images[:n]
    targets = predicted_classes(model, x)
    steps, samples = int(section.get("steps", 16)), int(section.get("n_samples", 2))
    completeness = int(section.get("completeness_samples", 32))
    pool = None if ref is None else ref[:count(section.get("completeness_pool"), len(ref),
                                               "special_cases.completeness_pool")]
    pairs: dict[str, tuple[Attribution, Attribution]] = {
        "gradcam": (build_method(card, "expected_gradcam",
                                 {"sigma": 0.0, "alpha": 1.0, "n_samples": samples}, ref),
                    create_method("gradcam", card)),
        "integrated_gradcam": (build_method(card, "expected_gradcam",
                                            {"references": "black", "sigma": 0.0, "alpha": "grid",
                                             "n_samples": steps}, ref),
                               create_method("integrated_gradcam", card, steps=steps,
                                             baseline="black", form="path_weights")),
        "gradcam_pp": (build_method(card, "expected_gradcam_pp",
                                    {"sigma": 0.0, "alpha": 1.0, "n_samples": samples}, ref),
                       create_method("gradcam_pp", card)),
    }
    rows = []

    def add(case: str, difference: Tensor, scale: Tensor) -> None:
        for i in range(n):
            d, s = float(difference[i]), float(scale[i])
            rows.append({"model": card.name, "case": case, "image": images.names[i],
                         "difference": d, "scale": s, "relative": d / max(s, 1e-12)})

    for name in section.get("diagnose") or []:
        chosen = _method_params(params, name)
        base = "gradcam_pp" if engine_name(name, chosen) == "expected_gradcam_pp" else "gradcam"
        pairs[f"configured:{name}"] = (build_method(card, name, chosen, ref),
                                       create_method(base, card))
    for case, (ours, theirs) in pairs.items():
        a, b = ours.attribute(x, targets).double(), theirs.attribute(x, targets).double()
        add(case, (a - b).abs().flatten(1).amax(1), b.abs().flatten(1).amax(1))
    y = _logits(model, x).gather(1, targets[:, None]).squeeze(1)
    layer_eg = {"variant": "layer_eg", "relu": False, "sigma": 0.0}
    black = build_method(card, "expected_gradcam", {**layer_eg, "references": "black",
                                                     "alpha": "grid", "n_samples": completeness}, ref)
    total = black.attribute(x, targets).double().flatten(1).sum(1)
    y_black = _logits(model, card.preprocessing.normalize(torch.zeros_like(x[:1])))[0, targets]
    add("completeness_black", (total - (y - y_black)).abs(), (y - y_black).abs())
    if pool is not None and len(pool):
        data = build_method(card, "expected_gradcam", {**layer_eg, "alpha": "uniform",
                                                        "n_samples": completeness}, pool)
        total = data.attribute(x, targets).double().flatten(1).sum(1)
        y_pool = _logits(model, pool)[:, targets].mean(0)
        add("completeness_data", (total - (y - y_pool)).abs(), (y - y_pool).abs())
    return pd.DataFrame(rows, columns=["model", "case", "image", "difference", "scale", "relative"])


REDUCTION_CASES = ("gradcam", "integrated_gradcam", "gradcam_pp")
