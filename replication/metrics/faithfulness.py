"""Faithfulness, robustness and complexity metrics of attribution maps (batch first; torch in, numpy out).

Conventions shared by every function here:

- ``model``: an ``nn.Module`` in eval mode taking inputs in its model-input (normalised) space and
  returning logits (B, classes). ``inputs`` (B, C, H, W) on the model's device, ``targets`` (B,) long,
  ``maps`` (B, 1 or C, H, W) raw attribution maps at input resolution.
- Scores are the softmax probability of the target class unless a parameter says otherwise.
- Where a metric needs one value per pixel, channels are reduced by Σ_c |map| (``channel_reduction=
  "abs_sum"``; ``"sum"`` keeps the sign). For a (B, 1, H, W) map that is |map|.
- All perturbed copies of an image are scored in batched forwards of at most ``batch_size`` images
  under ``torch.no_grad()``; ``batch_size`` never changes a result beyond float round-off.
- Pixel orderings break ties by raster order (stable sort), as torchcam does.
- A map holding a NaN or ±inf scores NaN for its image in every metric: it orders no pixels (the
  tie-break would score it like an all-zero map) and has no size.
- Random draws come from one CPU ``torch.Generator`` per image (:func:`image_generators`), so image
  ``i``'s draws depend only on ``seed`` and ``i``: not on ``batch_size``, nor on the other images.
- Results are float64 numpy arrays of shape (B,); the ``*_curves`` functions also return the curves.

Which parts are ours and which wrap a library (each of ours is checked against a reference in
``tests/test_faithfulness.py``):

========================  ==========================================  =================================
metric                    implementation                              checked against
========================  ==========================================  =================================
insertion / deletion      ours (RISE, Petsiuk et al. 2018)            torchcam ``DeletionInsertionMetric``
infidelity                ours (Yeh et al. 2019)                      Quantus ``Infidelity`` (patches),
                                                                      Captum ``infidelity`` (gaussian)
max_sensitivity           wraps ``captum.metrics.sensitivity_max``    Quantus ``MaxSensitivity``
complexity / sparseness   ours (Quantus' definitions)                 Quantus ``Complexity``/``Sparseness``
road_morf / road_lerf     ours (Rong et al. 2022), noisy linear       pytorch-grad-cam ROAD
                          imputation as tleemann/road_evaluation
morf/lerf aopc, lodds     ours (ParchGrad's pixel-removal protocol)   a transcription of the authors'
                                                                      ``evaluate_attr_with_logits``
========================  ==========================================  =================================
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from replication.attribution import postprocess
from replication.errors import ConfigError

ChannelReduction = Literal["abs_sum", "sum"]
Output = Literal["probability", "logit"]
Explainer = Callable[[Tensor, Tensor], Tensor]

PARCHGRAD_RATIOS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
ROAD_PERCENTAGES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
RISE_STEP = 224  # pixels per step in the RISE code (one 224-pixel row of a 224×224 image)
LODDS_EPS = 1e-10  # ParchGrad's log-odds: log(p_r / (p_0 + 1e-10))


def _choice(name: str, value: Any, valid: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {sorted(valid)}")


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _check_batch(inputs: Tensor, targets: Tensor, maps: Tensor | None = None) -> Tensor:
    """Validate shapes; return ``targets`` on the inputs' device."""
    if not isinstance(inputs, Tensor) or inputs.ndim != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be (batch, channels, height, width); got {shape}")
    if not isinstance(targets, Tensor) or targets.shape != (inputs.shape[0],):
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"targets must have shape ({inputs.shape[0]},) to match inputs "
                         f"{tuple(inputs.shape)}; got {shape}")
    if targets.dtype != torch.long:
        raise ValueError(f"targets must be torch.long class indices; got {targets.dtype}")
    if maps is None:
        return targets.to(inputs.device)
    if not isinstance(maps, Tensor):
        raise ValueError(f"maps must be a torch.Tensor; got {type(maps).__name__}")
    ok = (maps.ndim == 4 and maps.shape[0] == inputs.shape[0]
          and maps.shape[1] in (1, inputs.shape[1]) and maps.shape[2:] == inputs.shape[2:])
    if not ok:
        raise ValueError(f"maps of shape {tuple(maps.shape)} do not fit inputs of shape "
                         f"{tuple(inputs.shape)}: expected ({inputs.shape[0]}, 1 or "
                         f"{inputs.shape[1]}, {inputs.shape[2]}, {inputs.shape[3]}); upsample the "
                         "maps to the input resolution first")
    return targets.to(inputs.device)


def _check_model(model: nn.Module) -> None:
    if model.training:
        raise ValueError("model is in training mode (BatchNorm/Dropout would make scores depend on "
                         "the batch); call model.eval() first")


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")


def _pixel_map(maps: Tensor, channel_reduction: ChannelReduction) -> Tensor:
    """(B, C, H, W) → (B, H·W) in float64, one value per pixel."""
    _choice("channel_reduction", channel_reduction, ("abs_sum", "sum"))
    return postprocess.reduce_channels(maps, channel_reduction).flatten(1).double()


def _scores(model: nn.Module, batch: Tensor, targets: Tensor, output: Output = "probability") -> Tensor:
    """Target-class probability (softmax in float64) or logit of each row, on the CPU, float64."""
    logits = model(batch)
    if logits.ndim != 2:
        raise ValueError(f"model must return logits of shape (batch, classes); got {tuple(logits.shape)}")
    picked = logits.double()
    if output == "probability":
        picked = picked.softmax(-1)
    return picked.gather(1, targets.view(-1, 1)).squeeze(1).cpu()


def _score_jobs(model: nn.Module, n_jobs: int, build: Callable[[range], tuple[Tensor, Tensor]],
                batch_size: int, output: Output = "probability") -> Tensor:
    """Score ``n_jobs`` perturbed inputs, ``build(range)`` making (inputs, targets) for a chunk."""
    out = torch.empty(n_jobs, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, n_jobs, batch_size):
            chunk = range(start, min(start + batch_size, n_jobs))
            batch, targets = build(chunk)
            out[start:chunk.stop] = _scores(model, batch, targets, output)
    return out


def index_generators(seed: int | torch.Generator, n_images: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded from ``seed`` (an int, or a generator that advances).

    Every random metric here draws image ``i``'s noise from generator ``i`` in sample order, so
    results do not depend on ``batch_size`` and image 0 of a batch scores as it would alone.
    """
    master = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    seeds = torch.randint(0, 2**62, (n_images,), generator=master, dtype=torch.int64).tolist()
    return [torch.Generator().manual_seed(s) for s in seeds]


def _nan_where_map_not_finite(maps: Tensor, *per_image: np.ndarray) -> None:
    """Set, in place, the rows of ``per_image`` arrays of the images whose map is not finite."""
    bad = postprocess.non_finite_images(maps).cpu().numpy()
    for values in per_image:
        values[bad] = np.nan


def _ranks(pixel_map: Tensor, descending: bool = True) -> Tensor:
    """Rank of every pixel (0 = first removed/inserted); ties broken by raster order."""
    order = torch.argsort(pixel_map, dim=1, descending=descending, stable=True)
    return torch.argsort(order, dim=1)


# ----------------------------------------------------------------------------------------------
# Insertion / deletion (RISE)
# ----------------------------------------------------------------------------------------------


def rise_kernel(kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's ``gkern``: ``scipy.ndimage.gaussian_filter`` of a centred delta (reflecting borders)."""
    from scipy.ndimage import gaussian_filter

    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"blur kernel_size must be a positive odd integer; got {kernel_size}")
    delta = np.zeros((kernel_size, kernel_size))
    delta[kernel_size // 2, kernel_size // 2] = 1.0
    return torch.from_numpy(gaussian_filter(delta, sigma)).float()


def rise_blur(inputs: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's insertion substrate: each channel convolved with :func:`rise_kernel`, zero padding.

    As in the RISE code (``conv2d(x, gkern(11, 5), padding=5)``), applied in model-input space, so
    the borders fade towards 0 (the mean colour for ImageNet-normalised inputs).
    """
    channels = inputs.shape[1]
    kernel = rise_kernel(kernel_size, sigma).to(inputs)
    weight = kernel.expand(channels, 1, kernel_size, kernel_size)
    return F.conv2d(inputs, weight, padding=kernel_size // 2, groups=channels)


def _substrate(substrate: str | Tensor | Callable[[Tensor], Tensor], inputs: Tensor,
               blur_kernel_size: int, blur_sigma: float) -> Tensor:
    if isinstance(substrate, Tensor):
        out = substrate.to(inputs)
    elif callable(substrate):
        out = substrate(inputs)
    else:
        _choice("substrate", substrate, ("zeros", "blur"))
        out = torch.zeros_like(inputs) if substrate == "zeros" else rise_blur(inputs, blur_kernel_size, blur_sigma)
    try:
        return torch.broadcast_to(out, inputs.shape)
    except RuntimeError:
        raise ValueError(f"substrate of shape {tuple(out.shape)} does not broadcast to inputs of "
                         f"shape {tuple(inputs.shape)}") from None


def pixel_counts(n_pixels: int, n_steps: int | None = None, step: int | None = None) -> np.ndarray:
    """Pixels changed after each step, from 0 to ``n_pixels``.

    ``step`` (RISE): ``0, step, 2·step, …`` capped at ``n_pixels``, i.e. ⌈n_pixels/step⌉ steps.
    ``n_steps``: ``round(linspace(0, n_pixels, n_steps + 1))``, exactly ``n_steps`` steps. The two
    agree whenever ``step · n_steps == n_pixels``. Neither given: RISE's ``step = 224``.
    """
    if n_steps is not None and step is not None:
        raise ValueError(f"give n_steps or step, not both (got n_steps={n_steps}, step={step})")
    if n_steps is not None:
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1; got {n_steps}")
        return np.unique(np.rint(np.linspace(0, n_pixels, n_steps + 1)).astype(np.int64))
    step = RISE_STEP if step is None else step
    if step < 1:
        raise ValueError(f"step must be >= 1; got {step}")
    return np.minimum(np.arange(math.ceil(n_pixels / step) + 1, dtype=np.int64) * step, n_pixels)


@dataclass(frozen=True)
class CausalCurves:
    """RISE curves: ``scores[b, i]`` is p_target after ``fractions[i]`` of the pixels were changed."""

    auc: np.ndarray  # (B,) trapezoid area over fractions in [0, 1]
    fractions: np.ndarray  # (S + 1,)
    scores: np.ndarray  # (B, S + 1)


def _causal_curves(mode: Literal["insertion", "deletion"], model: nn.Module, inputs: Tensor,
                   targets: Tensor, maps: Tensor, *, n_steps: int | None, step: int | None,
                   substrate: str | Tensor | Callable[[Tensor], Tensor], channel_reduction: ChannelReduction,
                   blur_kernel_size: int, blur_sigma: float, batch_size: int) -> CausalCurves:
    targets = _check_batch(inputs, targets, maps)
    _check_model(model)
    _check_batch_size(batch_size)
    n_images, channels, height, width = inputs.shape
    ranks = _ranks(_pixel_map(maps, channel_reduction).to(inputs.device))
    counts = pixel_counts(height * width, n_steps, step)
    with torch.no_grad():
        base = _substrate(substrate, inputs, blur_kernel_size, blur_sigma)
    start, finish = (inputs, base) if mode == "deletion" else (base, inputs)
    start, finish = start.flatten(2), finish.flatten(2)
    counts_t = torch.as_tensor(counts, device=inputs.device)
    n_points = len(counts)

    def build(jobs: range) -> tuple[Tensor, Tensor]:
        idx = torch.arange(jobs.start, jobs.stop, device=inputs.device)
        image, point = idx // n_points, idx % n_points
        changed = ranks[image] < counts_t[point].unsqueeze(1)  # (J, H·W): the most salient pixels
        batch = torch.where(changed.unsqueeze(1), finish[image], start[image])
        return batch.view(-1, channels, height, width), targets[image]

    scores = _score_jobs(model, n_images * n_points, build, batch_size).view(n_images, n_points).numpy()
    _nan_where_map_not_finite(maps, scores)
    fractions = counts / (height * width)
    return CausalCurves(auc=np.trapezoid(scores, fractions, axis=1), fractions=fractions, scores=scores)


def deletion_curves(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, *,
                    n_steps: int | None = None, step: int | None = None,
                    substrate: str | Tensor | Callable[[Tensor], Tensor] = "zeros",
                    channel_reduction: ChannelReduction = "abs_sum", blur_kernel_size: int = 11,
                    blur_sigma: float = 5.0, batch_size: int = 64) -> CausalCurves:
    """RISE deletion (Petsiuk et al. 2018; ``CausalMetric('del')`` of eclique/RISE).

    Starting from the image, the most salient pixels (all channels) are replaced by ``substrate``
    (``"zeros"`` in model-input space by default, ``"blur"``, a tensor or a callable) following
    :func:`pixel_counts`; AUC of p_target by the trapezoid rule over the fraction of pixels, so
    AUCs are comparable across step counts. Lower is better.
    """
    return _causal_curves("deletion", model, inputs, targets, maps, n_steps=n_steps, step=step,
                          substrate=substrate, channel_reduction=channel_reduction,
                          blur_kernel_size=blur_kernel_size, blur_sigma=blur_sigma, batch_size=batch_size)


def insertion_curves(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, *,
                     n_steps: int | None = None, step: int | None = None,
                     substrate: str | Tensor | Callable[[Tensor], Tensor] = "blur",
                     channel_reduction: ChannelReduction = "abs_sum", blur_kernel_size: int = 11,
                     blur_sigma: float = 5.0, batch_size: int = 64) -> CausalCurves:
    """RISE insertion: start from ``substrate`` (RISE's blur, kernel 11, σ 5, by default) and put
    back the most salient pixels first; AUC as :func:`deletion_curves`. Higher is better."""
    return _causal_curves("insertion", model, inputs, targets, maps, n_steps=n_steps, step=step,
                          substrate=substrate, channel_reduction=channel_reduction,
                          blur_kernel_size=blur_kernel_size, blur_sigma=blur_sigma, batch_size=batch_size)


def deletion(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, **kwargs: Any) -> np.ndarray:
    """Deletion AUC per image (see :func:`deletion_curves` for the parameters)."""
    return deletion_curves(model, inputs, targets, maps, **kwargs).auc


def insertion(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, **kwargs: Any) -> np.ndarray:
    """Insertion AUC per image (see :func:`insertion_curves` for the parameters)."""
    return insertion_curves(model, inputs, targets, maps, **kwargs).auc


# ----------------------------------------------------------------------------------------------
# ParchGrad's pixel removal: MoRF / LeRF AOPC and log-odds
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelRemovalCurves:
    """ParchGrad E5 (``parchgrad/metric/evaluate_attr_with_logits.py``), one row per image.

    ``aopc[b, r] = p_y(x) − p_y(x_r)``, ``lodds[b, r] = log(p_y(x_r) / (p_y(x) + 1e-10))``,
    ``accuracy[b, r] = [argmax f(x_r) = y]``, ``fracdiff[b, r] = |p_ŷ(x) − p_ŷ(x_r)|`` for the
    originally predicted ŷ. The authors' summary is the mean over ratios, ratio 0 included.
    """

    order: str
    ratios: np.ndarray  # (R,)
    probability: np.ndarray  # (B,) p_y(x)
    aopc: np.ndarray  # (B, R)
    lodds: np.ndarray
    accuracy: np.ndarray
    fracdiff: np.ndarray


def pixel_removal_curves(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, *,
                         order: Literal["morf", "lerf"] = "morf", ratios: Sequence[float] = PARCHGRAD_RATIOS,
                         value: float = 0.0, channel_reduction: ChannelReduction = "abs_sum",
                         batch_size: int = 64) -> PixelRemovalCurves:
    """ParchGrad's faithfulness protocol: for each ratio r, set the first ``int(H·W·r)`` pixels of
    the ``order`` (``"morf"``: descending |map|, ``"lerf"``: ascending) in all channels to ``value``
    (0.0 in model-input space, the mean colour) and score the model once per copy (not cumulative)."""
    targets = _check_batch(inputs, targets, maps)
    _check_model(model)
    _check_batch_size(batch_size)
    _choice("order", order, ("morf", "lerf"))
    ratios_a = np.asarray(ratios, dtype=np.float64)
    if ratios_a.ndim != 1 or len(ratios_a) == 0 or (ratios_a < 0).any() or (ratios_a > 1).any():
        raise ValueError(f"ratios must be a non-empty list of fractions in [0, 1]; got {list(ratios)}")
    n_images, channels, height, width = inputs.shape
    ranks = _ranks(_pixel_map(maps, channel_reduction).to(inputs.device), descending=order == "morf")
    counts = torch.tensor([int(height * width * r) for r in ratios], device=inputs.device)
    flat = inputs.flatten(2)
    n_ratios = len(counts)

    with torch.no_grad():
        logits = model(inputs).double()
    probs = logits.softmax(-1).cpu()
    predicted = probs.argmax(-1)
    p_y = probs.gather(1, targets.cpu().view(-1, 1)).squeeze(1)
    p_hat = probs.gather(1, predicted.view(-1, 1)).squeeze(1)

    removed_probs = torch.empty(n_images * n_ratios, probs.shape[1], dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, n_images * n_ratios, batch_size):
            idx = torch.arange(start, min(start + batch_size, n_images * n_ratios), device=inputs.device)
            image, ratio = idx // n_ratios, idx % n_ratios
            removed = ranks[image] < counts[ratio].unsqueeze(1)
            batch = flat[image].masked_fill(removed.unsqueeze(1), value).view(-1, channels, height, width)
            removed_probs[start:start + len(idx)] = model(batch).double().softmax(-1).cpu()
    removed_probs = removed_probs.view(n_images, n_ratios, -1)
    p_y_r = removed_probs.gather(2, targets.cpu().view(-1, 1, 1).expand(-1, n_ratios, 1)).squeeze(2)
    p_hat_r = removed_probs.gather(2, predicted.view(-1, 1, 1).expand(-1, n_ratios, 1)).squeeze(2)
    curves = PixelRemovalCurves(
        order=order,
        ratios=ratios_a,
        probability=p_y.numpy(),
        aopc=(p_y.unsqueeze(1) - p_y_r).numpy(),
        lodds=torch.log(p_y_r / (p_y.unsqueeze(1) + LODDS_EPS)).numpy(),
        accuracy=(removed_probs.argmax(-1) == targets.cpu().unsqueeze(1)).double().numpy(),
        fracdiff=(p_hat.unsqueeze(1) - p_hat_r).abs().numpy(),
    )
    _nan_where_map_not_finite(maps, curves.aopc, curves.lodds, curves.accuracy, curves.fracdiff)
    return curves


def morf_aopc(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, **kwargs: Any) -> np.ndarray:
    """Mean over ratios (0 included) of ``p_y(x) − p_y(x_r)``, most relevant removed first. Higher is better."""
    return pixel_removal_curves(model, inputs, targets, maps, order="morf", **kwargs).aopc.mean(1)


def lerf_aopc(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, **kwargs: Any) -> np.ndarray:
    """Mean AOPC with the least relevant pixels removed first. Lower is better."""
    return pixel_removal_curves(model, inputs, targets, maps, order="lerf", **kwargs).aopc.mean(1)


def morf_lodds(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, **kwargs: Any) -> np.ndarray:
    """Mean over ratios of ``log(p_y(x_r) / (p_y(x) + 1e-10))``, MoRF. Lower (a larger drop) is better."""
    return pixel_removal_curves(model, inputs, targets, maps, order="morf", **kwargs).lodds.mean(1)


def lerf_lodds(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, **kwargs: Any) -> np.ndarray:
    """Mean log-odds with the least relevant pixels removed first. Higher (closer to 0) is better."""
    return pixel_removal_curves(model, inputs, targets, maps, order="lerf", **kwargs).lodds.mean(1)


# ----------------------------------------------------------------------------------------------
# ROAD (Rong et al. 2022) with noisy linear imputation
# ----------------------------------------------------------------------------------------------

# (row offset, column offset, weight) of the 8 neighbours, as tleemann/road_evaluation's imputer.
_ROAD_NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
                    (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))


def noisy_linear_impute(image: Tensor, removed: Tensor, *, noise: float = 0.01,
                        generator: torch.Generator | None = None) -> Tensor:
    """ROAD's noisy linear imputation of one (C, H, W) image where ``removed`` (H, W) is True.

    Each removed pixel equals the weighted mean of its 8 neighbours (weights 1/6 sideways, 1/12
    diagonal, renormalised at borders); the sparse system is solved exactly (SuperLU) in float64,
    then N(0, noise²) is added to the imputed values. Same system as pytorch-grad-cam's
    ``NoisyLinearImputer`` (vectorised set-up; noise drawn from ``generator``).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    channels, height, width = image.shape
    if removed.shape != (height, width):
        raise ValueError(f"removed mask of shape {tuple(removed.shape)} does not fit image of shape "
                         f"{tuple(image.shape)}")
    mask = removed.detach().cpu().numpy().reshape(-1).astype(bool)
    missing = np.flatnonzero(mask)
    if len(missing) == 0:
        return image.clone()
    if len(missing) == mask.size:
        raise ValueError("noisy linear imputation needs at least one kept pixel")
    pixels = image.detach().cpu().double().numpy().reshape(channels, -1)
    variable = np.full(mask.size, -1, dtype=np.int64)
    variable[missing] = np.arange(len(missing))
    rows, cols = np.divmod(missing, width)
    equation = np.arange(len(missing))
    weight_sum = np.ones(len(missing))
    rhs = np.zeros((len(missing), channels))
    a_rows, a_cols, a_vals = [], [], []
    for dr, dc, w in _ROAD_NEIGHBOURS:
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        weight_sum[~inside] -= w
        eq, neighbour = equation[inside], r[inside] * width + c[inside]
        known = ~mask[neighbour]
        rhs[eq[known]] -= w * pixels[:, neighbour[known]].T
        a_rows.append(eq[~known])
        a_cols.append(variable[neighbour[~known]])
        a_vals.append(np.full(int((~known).sum()), w))
    a_rows.append(equation)
    a_cols.append(equation)
    a_vals.append(-weight_sum)
    system = coo_matrix((np.concatenate(a_vals), (np.concatenate(a_rows), np.concatenate(a_cols))),
                        shape=(len(missing), len(missing))).tocsc()
    solution = splu(system, permc_spec="MMD_AT_PLUS_A").solve(rhs)  # (n_missing, C)
    filled = torch.from_numpy(solution.T.copy())
    if noise:
        filled = filled + noise * torch.randn(filled.shape, generator=generator, dtype=torch.float32).double()
    out = image.detach().cpu().clone().reshape(channels, -1)
    out[:, torch.from_numpy(missing)] = filled.to(out.dtype)
    return out.view(channels, height, width).to(image.device)


@dataclass(frozen=True)
class RoadCurves:
    """``scores[b, i]``: p_target after ``percentages[i]`` % of the pixels were imputed."""

    order: str
    percentages: np.ndarray  # (P,)
    probability: np.ndarray  # (B,) p_target of the untouched image
    scores: np.ndarray  # (B, P)


def road_curves(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, *,
                order: Literal["morf", "lerf"] = "morf", percentages: Sequence[int] = ROAD_PERCENTAGES,
                noise: float = 0.01, channel_reduction: ChannelReduction = "abs_sum",
                batch_size: int = 64, seed: int | torch.Generator = 0) -> RoadCurves:
    """ROAD (Rong et al. 2022): remove ``p`` % of the pixels (``p·H·W // 100``, the most relevant
    first for ``"morf"``, the least relevant for ``"lerf"``), impute them with
    :func:`noisy_linear_impute` (noise 0.01, model-input space) and score the model.

    pytorch-grad-cam's ``ROADMostRelevantFirst(q)`` / ``ROADLeastRelevantFirst(q)`` remove
    ``100 − q`` % (``q`` is the percentage kept) and return ``score − p_target(x)``; its
    ``…Average`` over 10..90 is our mean minus :attr:`RoadCurves.probability`. Cost: one sparse
    solve per image and percentage on the CPU (about 0.4 s at 90 % of 224×224).
    """
    targets = _check_batch(inputs, targets, maps)
    _check_model(model)
    _check_batch_size(batch_size)
    _choice("order", order, ("morf", "lerf"))
    if len(percentages) == 0 or any(not isinstance(p, (int, np.integer)) or not 0 <= p < 100
                                    for p in percentages):
        raise ValueError(f"percentages must be integers in [0, 100); got {list(percentages)}")
    n_images, _, height, width = inputs.shape
    ranks = _ranks(_pixel_map(maps, channel_reduction), descending=order == "morf").cpu()
    generators = index_generators(seed, n_images)
    n_removed = [int(p) * height * width // 100 for p in percentages]
    per_image = len(percentages)

    def build(jobs: range) -> tuple[Tensor, Tensor]:
        # Jobs arrive in (image, percentage) order, so each image's generator is used in the same
        # order whatever the batch size.
        batch = [noisy_linear_impute(inputs[j // per_image], (ranks[j // per_image] < n_removed[j % per_image])
                                     .view(height, width), noise=noise, generator=generators[j // per_image])
                 for j in jobs]
        return torch.stack(batch), targets[[j // per_image for j in jobs]]

    with torch.no_grad():
        original = _scores(model, inputs, targets).numpy()
    scores = _score_jobs(model, n_images * per_image, build, batch_size).view(n_images, per_image).numpy()
    _nan_where_map_not_finite(maps, scores)
    return RoadCurves(order=order, percentages=np.asarray(percentages), probability=original, scores=scores)


def road_morf(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, **kwargs: Any) -> np.ndarray:
    """ROAD most-relevant-first: mean p_target over the percentages. Lower is better."""
    return road_curves(model, inputs, targets, maps, order="morf", **kwargs).scores.mean(1)


def road_lerf(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, **kwargs: Any) -> np.ndarray:
    """ROAD least-relevant-first: mean p_target over the percentages. Higher is better."""
    return road_curves(model, inputs, targets, maps, order="lerf", **kwargs).scores.mean(1)


# ----------------------------------------------------------------------------------------------
# Infidelity (Yeh et al. 2019)
# ----------------------------------------------------------------------------------------------


def _patch_baseline(inputs: Tensor, baseline: str | float) -> Tensor:
    """Quantus' ``perturb_baseline`` per image over all its values: black = min, white = max."""
    if isinstance(baseline, (int, float)):
        return torch.full((inputs.shape[0],), float(baseline), dtype=inputs.dtype, device=inputs.device)
    _choice("patch baseline", baseline, ("black", "white", "mean"))
    flat = inputs.flatten(1)
    return {"black": flat.amin(1), "white": flat.amax(1), "mean": flat.mean(1)}[baseline]


def _infidelity_loss(attr_sums: Tensor, deltas: Tensor, normalize: bool) -> Tensor:
    """mean_s (Σ a·I_s − Δf_s)²; with ``normalize``, a is first scaled by Captum's optimal β."""
    if normalize:
        num, den = (attr_sums * deltas).sum(1), attr_sums.pow(2).sum(1)
        beta = torch.where(den == 0, torch.zeros_like(num), num / torch.where(den == 0, 1.0, den))
        attr_sums = beta.unsqueeze(1) * attr_sums
    return (attr_sums - deltas).pow(2).mean(1)


def infidelity(model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor, *,
               perturbation: Literal["patches", "gaussian"] = "patches", patch_size: int = 4,
               patch_baseline: str | float = "black", n_samples: int = 10, noise_std: float = 0.2,
               normalize: bool = False, output: Output = "probability", batch_size: int = 64,
               seed: int | torch.Generator = 0) -> np.ndarray:
    """Infidelity E_I[(Σ map·I − (f(x) − f(x − I)))²] (Yeh et al. 2019) of raw maps. Lower is better.

    ``perturbation``:

    - ``"patches"`` (default): Quantus 0.6.0 ``Infidelity``'s default: ``patch_size``×``patch_size``
      patches (4) set, one more each step in raster order and cumulatively, to ``patch_baseline``
      ("black": the image's minimum value over all channels); one sample per patch, so
      (H/p)·(W/p) forwards per image, deterministic (``n_samples`` and ``seed`` are unused).
    - ``"gaussian"``: Captum's example perturbation, I ~ N(0, ``noise_std``²) on every input value
      (0.2 as Yeh et al.'s Gaussian; model-input units), ``n_samples`` draws per image.

    ``maps`` of one channel apply to every input channel (as Quantus broadcasts them). ``normalize``
    rescales the map by the optimal β first (Captum's ``normalize``; Yeh et al.'s code always does),
    which makes the score scale-invariant. ``output="logit"`` scores logits (Quantus' default
    ``softmax=False``); the default is the target probability.
    """
    targets = _check_batch(inputs, targets, maps)
    _check_model(model)
    _check_batch_size(batch_size)
    _choice("perturbation", perturbation, ("patches", "gaussian"))
    _choice("output", output, ("probability", "logit"))
    n_images, channels, height, width = inputs.shape
    attributions = maps.to(inputs).expand_as(inputs).double()
    with torch.no_grad():
        original = _scores(model, inputs, targets, output)

    if perturbation == "patches":
        if patch_size < 1 or height % patch_size or width % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide the input height and width "
                             f"(inputs {tuple(inputs.shape)}); Quantus cannot pad these either")
        cols = width // patch_size
        n_patches = (height // patch_size) * cols
        rows_idx = torch.arange(height, device=inputs.device) // patch_size
        cols_idx = torch.arange(width, device=inputs.device) // patch_size
        patch_of_pixel = (rows_idx.view(-1, 1) * cols + cols_idx.view(1, -1)).flatten()  # (H·W,)
        base = _patch_baseline(inputs, patch_baseline)
        diff = (inputs - base.view(-1, 1, 1, 1)).double()
        per_patch = torch.zeros(n_images, n_patches, dtype=torch.float64, device=inputs.device)
        per_patch.index_add_(1, patch_of_pixel, (attributions * diff).sum(1).flatten(1))
        attr_sums = per_patch.cumsum(1).cpu()
        flat = inputs.flatten(2)

        def build(jobs: range) -> tuple[Tensor, Tensor]:
            idx = torch.arange(jobs.start, jobs.stop, device=inputs.device)
            image, patch = idx // n_patches, idx % n_patches
            replaced = (patch_of_pixel.unsqueeze(0) <= patch.unsqueeze(1)).unsqueeze(1)
            batch = torch.where(replaced, base[image].view(-1, 1, 1), flat[image])
            return batch.view(-1, channels, height, width), targets[image]

        perturbed = _score_jobs(model, n_images * n_patches, build, batch_size, output).view(n_images, n_patches)
        loss = _infidelity_loss(attr_sums, original.unsqueeze(1) - perturbed, normalize).numpy()
        _nan_where_map_not_finite(maps, loss)
        return loss

    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1; got {n_samples}")
    generators = index_generators(seed, n_images)
    attr_sums = torch.empty(n_images, n_samples, dtype=torch.float64)

    def build_gaussian(jobs: range) -> tuple[Tensor, Tensor]:
        images = [j // n_samples for j in jobs]
        noise = torch.stack([torch.randn(inputs.shape[1:], generator=generators[b]) * noise_std
                             for b in images]).to(inputs)
        for j, b, n in zip(jobs, images, noise):
            attr_sums[b, j % n_samples] = (attributions[b] * n.double()).sum().cpu()
        return inputs[images] - noise, targets[images]

    perturbed = _score_jobs(model, n_images * n_samples, build_gaussian, batch_size, output)
    deltas = original.unsqueeze(1) - perturbed.view(n_images, n_samples)
    loss = _infidelity_loss(attr_sums, deltas, normalize).numpy()
    _nan_where_map_not_finite(maps, loss)
    return loss


# ----------------------------------------------------------------------------------------------
# Max-sensitivity (Yeh et al. 2019), wrapping captum.metrics.sensitivity_max
# ----------------------------------------------------------------------------------------------


def max_sensitivity(explain: Explainer, inputs: Tensor, targets: Tensor, *, radius: float = 0.02,
                    n_samples: int = 10, norm: str = "fro", batch_size: int = 64,
                    seed: int | torch.Generator = 0) -> np.ndarray:
    """max_s ‖e(x + δ_s) − e(x)‖ / ‖e(x)‖ with δ_s ~ U[−radius, radius] on every input value.

    Wraps ``captum.metrics.sensitivity_max`` (its defaults: radius 0.02 in model-input units,
    10 samples, Frobenius norms; a zero ‖e(x)‖ counts as 1), with the noise drawn from
    :func:`image_generators`. Quantus' ``MaxSensitivity`` is the same quantity with
    ``lower_bound=0.2`` (also model-input units) and ``nr_samples=200``. ``explain(inputs,
    targets) -> maps`` is called with gradients enabled on at most ``batch_size`` inputs at a
    time; every sample re-runs it, and a random explainer should seed itself so that only the
    input noise is measured. Lower is better.
    """
    from captum.metrics import sensitivity_max

    targets = _check_batch(inputs, targets)
    _check_batch_size(batch_size)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1; got {n_samples}")
    generators = index_generators(seed, inputs.shape[0])
    results = []
    for start in range(0, inputs.shape[0], batch_size):
        group = range(start, min(start + batch_size, inputs.shape[0]))
        gens = generators[group.start:group.stop]

        def perturb(expanded: Tensor, perturb_radius: float, gens: list[torch.Generator] = gens) -> Tensor:
            per_image = expanded.shape[0] // len(gens)  # captum repeats each image per_image times
            noise = torch.stack([(torch.rand(expanded.shape[1:], generator=g) * 2 - 1) * perturb_radius
                                 for g in gens for _ in range(per_image)])
            return expanded + noise.to(expanded)

        group_targets = targets[group.start:group.stop]

        def explanation(batch: Tensor | tuple[Tensor, ...], group_targets: Tensor = group_targets) -> tuple[Tensor]:
            # captum passes the original inputs as a 1-tuple and expects a tuple back; the targets
            # are expanded here because captum treats a one-element target tensor as a scalar.
            batch = batch[0] if isinstance(batch, tuple) else batch
            with torch.enable_grad():
                maps = explain(batch, group_targets.repeat_interleave(batch.shape[0] // len(group_targets)))
            return (maps.detach(),)

        values = sensitivity_max(explanation, inputs[group.start:group.stop], perturb_func=perturb,
                                 perturb_radius=radius, n_perturb_samples=n_samples, norm_ord=norm,
                                 max_examples_per_batch=min(batch_size, len(group) * n_samples))
        results.append(values.detach().double().cpu())
    sensitivity = torch.cat(results).numpy()
    # NaN in a map propagates through captum's max; an infinite value can only come from an
    # infinite map, which has no size either.
    sensitivity[np.isinf(sensitivity)] = np.nan
    return sensitivity


# ----------------------------------------------------------------------------------------------
# Complexity and sparseness (Quantus' definitions)
# ----------------------------------------------------------------------------------------------


def _feature_map(maps: Tensor, channel_reduction: ChannelReduction | Literal["none"]) -> Tensor:
    if not isinstance(maps, Tensor) or maps.ndim != 4:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"maps must be (batch, channels, height, width); got {shape}")
    if channel_reduction == "none":
        return maps.abs().flatten(1).double()
    return _pixel_map(maps, channel_reduction).abs()


def complexity(maps: Tensor, *, channel_reduction: ChannelReduction | Literal["none"] = "abs_sum") -> np.ndarray:
    """Entropy −Σ p log(p + 1e-12) of p = |m| / Σ|m| (Bhatt et al. 2020; Quantus ``Complexity``).

    ``m`` is the per-pixel map (Σ_c |map| by default; ``"none"`` uses every channel value as
    Quantus does for multi-channel maps). NaN for an all-zero map. Lower is better.
    """
    m = _feature_map(maps, channel_reduction)
    p = m / m.sum(1, keepdim=True)
    entropy = (-(p * torch.log(p + 1e-12)).sum(1)).cpu().numpy()
    _nan_where_map_not_finite(maps, entropy)
    return entropy


def sparseness(maps: Tensor, *, channel_reduction: ChannelReduction | Literal["none"] = "abs_sum") -> np.ndarray:
    """Gini index of |m| (Chalasani et al. 2020; Quantus ``Sparseness``), in [0, 1). Higher is better.

    As Quantus (``abs=True, normalise=True``): m / max m, + 1e-7, then
    Σ_i (2i − n − 1) m_(i) / (n Σ m) over the ascending values. An all-zero map scores 0.
    """
    m = _feature_map(maps, channel_reduction)
    peak = m.amax(1, keepdim=True)
    m = torch.where(peak > 0, m / torch.where(peak > 0, peak, 1.0), m) + 1e-7
    m, _ = torch.sort(m, dim=1)
    n = m.shape[1]
    i = torch.arange(1, n + 1, dtype=m.dtype, device=m.device)
    gini = (((2 * i - n - 1) * m).sum(1) / (n * m.sum(1))).cpu().numpy()
    _nan_where_map_not_finite(maps, gini)
    return gini


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

_MAP_ARGS = ("model", "inputs", "targets", "maps")
# The curve function each ``**kwargs`` wrapper passes its options to, and the ones it sets itself.
_FORWARDS: dict[Callable[..., np.ndarray], tuple[Callable[..., Any], tuple[str, ...]]] = {
    insertion: (insertion_curves, ()), deletion: (deletion_curves, ()),
    morf_aopc: (pixel_removal_curves, ("order",)), lerf_aopc: (pixel_removal_curves, ("order",)),
    morf_lodds: (pixel_removal_curves, ("order",)), lerf_lodds: (pixel_removal_curves, ("order",)),
    road_morf: (road_curves, ("order",)), road_lerf: (road_curves, ("order",)),
}


@dataclass(frozen=True)
class Metric:
    """A metric function, its direction and the arguments it takes (from ``model, inputs,
    targets, maps, explain``)."""

    fn: Callable[..., np.ndarray]
    higher_is_better: bool
    requires: tuple[str, ...] = _MAP_ARGS
    description: str = field(default="", compare=False)

    def __call__(self, *, model: nn.Module | None = None, inputs: Tensor | None = None,
                 targets: Tensor | None = None, maps: Tensor | None = None,
                 explain: Explainer | None = None, **params: Any) -> np.ndarray:
        """Call ``fn`` with the arguments it requires (others are ignored) and ``params``."""
        given = {"model": model, "inputs": inputs, "targets": targets, "maps": maps, "explain": explain}
        missing = [name for name in self.requires if given[name] is None]
        if missing:
            raise ValueError(f"{self.fn.__name__} needs {', '.join(missing)}")
        return self.fn(*(given[name] for name in self.requires), **params)

    def options(self) -> tuple[str, ...]:
        """The metric's keyword options (what a configuration may set; the data arguments
        ``requires`` names are not options)."""
        fn, fixed = _FORWARDS.get(self.fn, (self.fn, ()))
        return tuple(p.name for p in inspect.signature(fn).parameters.values()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in fixed)


FAITHFULNESS_METRICS: dict[str, Metric] = {
    "insertion": Metric(insertion, True, description="RISE insertion AUC"),
    "deletion": Metric(deletion, False, description="RISE deletion AUC"),
    "infidelity": Metric(infidelity, False, description="Yeh et al. infidelity"),
    "max_sensitivity": Metric(max_sensitivity, False, ("explain", "inputs", "targets"),
                              description="Yeh et al. max-sensitivity"),
    "complexity": Metric(complexity, False, ("maps",), description="entropy of |map|"),
    "sparseness": Metric(sparseness, True, ("maps",), description="Gini index of |map|"),
    "road_morf": Metric(road_morf, False, description="ROAD, most relevant first"),
    "road_lerf": Metric(road_lerf, True, description="ROAD, least relevant first"),
    "morf_aopc": Metric(morf_aopc, True, description="ParchGrad MoRF AOPC"),
    "lerf_aopc": Metric(lerf_aopc, False, description="ParchGrad LeRF AOPC"),
    "morf_lodds": Metric(morf_lodds, False, description="ParchGrad MoRF log-odds"),
    "lerf_lodds": Metric(lerf_lodds, True, description="ParchGrad LeRF log-odds"),
}


def get_metric(name: str) -> Metric:
    """The registered metric called ``name``; ConfigError naming the valid names otherwise."""
    try:
        return FAITHFULNESS_METRICS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown faithfulness metric {name!r}; choose one of "
                          f"{sorted(FAITHFULNESS_METRICS)}") from None
