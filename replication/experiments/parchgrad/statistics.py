"""ParchGrad channel statistics: GAP of ReLU(conv output), class-wise t-tests, Shapiro–Wilk.

The offline half of ParchGrad's class-wise channel selection (notes §1.4). For every conv
channel the GAP of ReLU(pre-BatchNorm conv output) is gathered over a statistics set, then

- ``class`` mode: per class k a one-sided two-sample t-test "mean GAP of class k > mean GAP of
  the other classes", stored as float64 log p (no underflow);
- ``instance`` mode: the GAP mean and standard deviation of each channel over the set (for sets
  with one image per class, where the class test is degenerate);
- both modes: the Shapiro–Wilk p-value of each channel's GAP.

Authors' behaviour vs corrections (each a named option):

- ``equal_var=True`` (default) is the authors' pooled Student test (scipy's default, although
  their function is called ``welches``); ``equal_var=False`` is Welch's test.
- ``pvalue_precision="float32"`` reproduces the authors' float32 p-value tensors, where every
  p < ~1e-45 is exactly 0 and such channels tie; ``"float64"`` (default) keeps exact log p.
- ``authors_stats_bug=True`` reproduces the authors' ``h`` bug: every conv receives the class
  statistics of the *last* conv's first C_l channels; ``False`` (default) is per-layer.
- ``shapiro_max_samples=None`` (default) runs Shapiro–Wilk on all images as the authors did
  (scipy warns that p may be inaccurate above 5000); an integer runs it on a seeded subsample.
"""

from __future__ import annotations

import math
import os
import platform
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy
import torch
from scipy import special, stats
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from replication.attribution import select_channels
from replication.attribution.channel_statistics import (MODES, ChannelStatistics,
                                                        LayerStatistics, Mode)
from replication.data import mnist
from replication.data.tensors import ImageNetImages, mnist_tensors
from replication.errors import ConfigError, DataError
from replication.models.base import ModelCard

PValuePrecision = Literal["float64", "float32"]
PVALUE_PRECISIONS = ("float64", "float32")
SHAPIRO_THRESHOLD = 0.05  # the authors' p_value_threshold
# scipy's t.logsf is exact until p leaves the float64 range (log p ≈ -745); below this
# threshold the log-space continued fraction takes over.
_LOGSF_SWITCH = -500.0
# float64 bytes per channel chunk when computing t-tests (bounds memory for 50,000 images).
_CHUNK_BYTES = 1 << 27

# Descriptions stored in ``meta["statistics_set"]``: what each set is and what it implies.
STATISTICS_SETS = {
    "mnist_train": "MNIST training images 5000–59999 (55,000; the first 5,000 are the "
                   "validation split and are excluded); class-wise test, ~5,500 per class",
    "fashion_mnist_train": "Fashion-MNIST training images 5000–59999 (55,000; the first 5,000 "
                           "are the validation split and are excluded); class-wise test",
    "imagenet_sample": "the 1000-image ImageNet sample (one image per class): the class test is "
                       "degenerate, so the instance-wise statistics (GAP mean/std) are used",
    "ilsvrc2012_val": "ILSVRC2012 validation, 50,000 images (50 per class), as the authors did; "
                      "LEAKAGE: the same images are later explained and evaluated",
    "ilsvrc2012_train": "ILSVRC2012 training images (corrected option: disjoint from the "
                        "evaluated validation images)",
}


# --------------------------------------------------------------------------- GAP gathering

def conv_names(model: nn.Module) -> list[str]:
    """Every ``nn.Conv2d`` (subclasses included) in ``model.named_modules()`` order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def _resolve_convs(model: nn.Module, convs: Sequence[str] | None) -> list[str]:
    available = conv_names(model)
    if convs is None:
        if not available:
            raise ConfigError(f"{type(model).__name__} has no Conv2d: ParchGrad statistics "
                              "need a convolutional model")
        return available
    missing = [name for name in convs if name not in available]
    if missing:
        raise ConfigError(f"{missing} are not Conv2d modules of {type(model).__name__}; "
                          f"its convs are {available[:8]}{' …' if len(available) > 8 else ''}")
    if len(set(convs)) != len(convs):
        raise ConfigError(f"conv names repeat in {list(convs)}")
    order = {name: i for i, name in enumerate(available)}
    return sorted(convs, key=order.__getitem__)


def _dataset_size(loader: Iterable) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def _split_batch(batch) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise DataError("the statistics loader must yield (images, labels) batches")
    inputs, labels = batch[0], batch[1]
    return inputs, torch.as_tensor(labels, dtype=torch.int64)


def gather_gap(model: nn.Module, loader: Iterable, convs: Sequence[str] | None = None, *,
               device: str | torch.device | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """GAP over (H, W) of ReLU(conv output) per image and channel, for every (or each named) conv.

    Forward hooks on the Conv2d modules see the pre-BatchNorm output, as the authors' hooks
    did. Runs batched under ``no_grad`` in eval mode (the training flag is restored). Returns
    ``gaps[name]`` (N, C_l) float32 in ``named_modules`` order and the labels (N,) int64.
    Buffers are preallocated when the loader has a sized ``dataset``.
    """
    names = _resolve_convs(model, convs)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    total = _dataset_size(loader)
    buffers: dict[str, Tensor] = {}
    chunks: dict[str, list[Tensor]] = {name: [] for name in names}
    calls: dict[str, int] = {}
    state = {"offset": 0}

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs, output: Tensor) -> None:
            calls[name] = calls.get(name, 0) + 1
            gap = torch.relu(output).mean(dim=(2, 3)).float().cpu()
            if total is None:
                chunks[name].append(gap)
            else:
                start = state["offset"]
                buffers[name][start:start + gap.shape[0]] = gap
        return hook

    handles = []
    for name in names:
        module = model.get_submodule(name)
        if total is not None:
            buffers[name] = torch.empty(total, module.out_channels, dtype=torch.float32)
        handles.append(module.register_forward_hook(make_hook(name)))
    labels_out = torch.empty(total, dtype=torch.int64) if total is not None else None
    label_chunks: list[Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                inputs, labels = _split_batch(batch)
                calls.clear()
                start, size = state["offset"], inputs.shape[0]
                if total is not None and start + size > total:
                    raise DataError(f"the loader yielded more than its dataset's {total} images")
                model(inputs.to(device))
                wrong = {n: calls.get(n, 0) for n in names if calls.get(n, 0) != 1}
                if wrong:
                    raise DataError(f"convs ran {wrong} times in one forward pass (expected "
                                    "once each): a per-image GAP is undefined for them; pass "
                                    "`convs` without them")
                if total is None:
                    label_chunks.append(labels)
                else:
                    labels_out[start:start + size] = labels
                state["offset"] = start + size
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if total is None:
        if not label_chunks:
            raise DataError("the statistics loader yielded no images")
        return {n: torch.cat(chunks[n]) for n in names}, torch.cat(label_chunks)
    if state["offset"] != total:
        raise DataError(f"the loader yielded {state['offset']} images but its dataset has "
                        f"{total}: use a loader without drop_last or sampling")
    return buffers, labels_out


# --------------------------------------------------------------------------- t-tests

def _log_betainc_small_x(a: np.ndarray, b: float, x: np.ndarray, log_x: np.ndarray,
                         log_1mx: np.ndarray, max_iter: int = 10_000) -> np.ndarray:
    """log I_x(a, b) by the Lentz continued fraction with the prefactor in log space.

    Valid (and fast) for x < (a + 1) / (a + b + 2), which holds wherever p underflows.
    """
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0

    def guard(v: np.ndarray) -> np.ndarray:
        return np.where(np.abs(v) < tiny, tiny, v)

    c = np.ones_like(x)
    d = 1.0 / guard(1.0 - qab * x / qap)
    h = d.copy()
    active = np.ones(x.shape, dtype=bool)
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        coef = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 / guard(1.0 + coef * d)
        c = guard(1.0 + coef / c)
        h = np.where(active, h * d * c, h)
        coef = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 / guard(1.0 + coef * d)
        c = guard(1.0 + coef / c)
        delta = d * c
        h = np.where(active, h * delta, h)
        active &= np.abs(delta - 1.0) > eps
        if not active.any():
            break
    return a * log_x + b * log_1mx - special.betaln(a, b) - np.log(a) + np.log(h)


def t_logsf(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """log P(T > t) for Student's t with ``df`` degrees of freedom, in float64, no underflow.

    scipy's ``t.logsf`` returns -inf once p < ~1e-308 (t ≈ 38 at df = 50,000); there the
    tail is computed as log(½ I_x(df/2, ½)), x = df / (df + t²), in log space.
    """
    t = np.asarray(t, dtype=np.float64)
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), t.shape)
    with np.errstate(invalid="ignore"):
        out = np.asarray(stats.t.logsf(t, df), dtype=np.float64).copy()
    deep = np.isfinite(t) & (t > 0) & np.isfinite(df) & ~(out > _LOGSF_SWITCH)
    if deep.any():
        tt, nu = t[deep], df[deep]
        log_nu, log_t2 = np.log(nu), 2.0 * np.log(tt)
        log_den = np.logaddexp(log_nu, log_t2)
        log_x, log_1mx = log_nu - log_den, log_t2 - log_den
        out[deep] = math.log(0.5) + _log_betainc_small_x(nu / 2.0, 0.5, np.exp(log_x),
                                                         log_x, log_1mx)
    return out


def _class_t_chunk(x: Tensor, labels: Tensor, counts: Tensor, num_classes: int,
                   equal_var: bool) -> tuple[np.ndarray, np.ndarray]:
    """t statistics and degrees of freedom (K, c) for one channel chunk x (N, c) float64."""
    n = x.shape[0]
    n_k = counts.to(torch.float64)[:, None]                                   # (K, 1)
    n_r = n - n_k
    total = x.sum(dim=0)                                                      # (c,)
    centered = x - total / n
    m2_total = (centered * centered).sum(dim=0)
    sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64).index_add_(0, labels, x)
    # Empty groups give 0/0 = NaN means, and zero variances 0/0 = NaN t: both end as p = 1.
    mean_k = sums / n_k
    mean_r = (total - sums) / n_r
    within = x - mean_k[labels]
    m2_k = torch.zeros_like(sums).index_add_(0, labels, within * within)
    # Partition of the total sum of squares: total = within k + within rest + between.
    between = n_k * n_r / n * (mean_k - mean_r) ** 2
    m2_r = (m2_total - m2_k - between).clamp_min(0.0)
    diff = mean_k - mean_r
    if equal_var:
        dof = torch.full_like(diff, float(n - 2))
        pooled = (m2_k + m2_r) / dof
        se = torch.sqrt(pooled * (1.0 / n_k + 1.0 / n_r))
    else:
        var_k, var_r = m2_k / (n_k - 1.0), m2_r / (n_r - 1.0)
        a, b = var_k / n_k, var_r / n_r
        se = torch.sqrt(a + b)
        dof = (a + b) ** 2 / (a * a / (n_k - 1.0) + b * b / (n_r - 1.0))
    return (diff / se).numpy(), dof.expand_as(diff).numpy()


def class_log_pvalues(gap: Tensor, labels: Tensor, num_classes: int,
                      equal_var: bool = True) -> Tensor:
    """log p (C, K) float64 of the one-sided test "mean GAP of class k > mean of the others".

    ``equal_var=True`` is the pooled Student test the authors ran (scipy's default);
    ``False`` is Welch's. Equals ``scipy.stats.ttest_ind(x[y==k], x[y!=k],
    alternative="greater", equal_var=...)`` with log p from a non-underflowing tail. An
    undefined test (NaN: zero variance, an absent class, Welch with one image) gets p = 1
    (log p = 0), as the authors' NaN → 1.
    """
    if gap.ndim != 2 or labels.ndim != 1 or labels.shape[0] != gap.shape[0]:
        raise DataError(f"gap must be (N, C) and labels (N,); got {tuple(gap.shape)} and "
                        f"{tuple(labels.shape)}")
    labels = labels.to(torch.int64).cpu()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}); got "
                        f"[{int(labels.min())}, {int(labels.max())}]")
    n, channels = gap.shape
    if n < 3:
        raise DataError(f"a two-sample t-test needs at least 3 images; got {n}")
    counts = torch.bincount(labels, minlength=num_classes)
    out = torch.empty(channels, num_classes, dtype=torch.float64)
    step = max(1, _CHUNK_BYTES // (8 * n * 3))
    for start in range(0, channels, step):
        x = gap[:, start:start + step].detach().cpu().to(torch.float64)
        t, dof = _class_t_chunk(x, labels, counts, num_classes, equal_var)
        log_p = t_logsf(t, dof)
        log_p[np.isnan(log_p)] = 0.0
        out[start:start + step] = torch.from_numpy(log_p.T.copy())
    return out


def float32_tied(log_p: Tensor) -> Tensor:
    """log p as the authors stored it: p cast to float32, so p < ~1e-45 becomes 0 (log -inf)."""
    return torch.exp(log_p.to(torch.float64)).to(torch.float32).to(torch.float64).log()


def float32_underflow(log_p: Tensor) -> Tensor:
    """Which p-values are exactly 0 once cast to float32 (the authors' ties)."""
    return torch.exp(log_p.to(torch.float64)).to(torch.float32) == 0


# --------------------------------------------------------------------------- Shapiro–Wilk

def shapiro_pvalues(gap: Tensor, max_samples: int | None = None,
                    seed: int = 0) -> tuple[Tensor, dict]:
    """Shapiro–Wilk p per channel of ``gap`` (N, C), float64; NaN → 1 as the authors.

    ``max_samples=None`` uses every image, as the authors (scipy warns that p may be
    inaccurate for N > 5000; warnings go into the returned dict, not to the console). An
    integer draws one seeded subsample of images shared by all channels. The dict records
    what was done.
    """
    n = gap.shape[0]
    if max_samples is not None and max_samples < 3:
        raise ConfigError(f"shapiro_max_samples must be None or ≥ 3; got {max_samples}")
    values = gap.detach().cpu().to(torch.float64).numpy()
    if max_samples is not None and max_samples < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
        values = values[rows]
    used = values.shape[0]
    if used < 3:
        raise DataError(f"Shapiro–Wilk needs at least 3 images; got {used}")
    out = np.empty(values.shape[1], dtype=np.float64)
    step = max(1, _CHUNK_BYTES // (8 * used))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for start in range(0, values.shape[1], step):
            out[start:start + step] = stats.shapiro(values[:, start:start + step], axis=0).pvalue
    out[np.isnan(out)] = 1.0
    messages = sorted({str(w.message).split(". ")[0] for w in caught})
    info = {"n_used": int(used), "n_available": int(n),
            "subsampled": bool(used < n), "seed": int(seed) if used < n else None,
            "scipy_warnings": messages,
            "note": ("p-values for N > 5000 may be inaccurate (scipy); the authors ran it on "
                     "50,000 images") if used > 5000 else ""}
    return torch.from_numpy(out), info


# --------------------------------------------------------------------------- statistics

def _check_options(mode: str, pvalue_precision: str, authors_stats_bug: bool) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown statistics mode {mode!r}; choose one of {list(MODES)}")
    if pvalue_precision not in PVALUE_PRECISIONS:
        raise ConfigError(f"unknown pvalue_precision {pvalue_precision!r}; choose one of "
                          f"{list(PVALUE_PRECISIONS)}")
    if authors_stats_bug and mode != "class":
        raise ConfigError("authors_stats_bug reproduces a bug of the class-wise test; it has no "
                          "meaning in instance mode: set it to false or use mode='class'")


def statistics_from_gaps(gaps: dict[str, Tensor], labels: Tensor, num_classes: int,
                         mode: Mode = "class", *, layers: Sequence[str] | None = None,
                         equal_var: bool = True, pvalue_precision: PValuePrecision = "float64",
                         authors_stats_bug: bool = False, shapiro: bool = True,
                         shapiro_max_samples: int | None = None, seed: int = 0,
                         meta: dict | None = None) -> ChannelStatistics:
    """ChannelStatistics from gathered GAPs (``gather_gap``), for ``layers`` (default: all).

    Gather once, call this twice to get corrected and bug-compatible statistics (claim C12).
    With ``authors_stats_bug=True`` the class test of every layer uses the GAP of the *last*
    entry of ``gaps`` (which must be the model's last conv, as in the authors' loop); Shapiro
    and mean/std stay per layer, as in the authors' code.
    """
    _check_options(mode, pvalue_precision, authors_stats_bug)
    if not gaps:
        raise DataError("no GAPs given: gather_gap found no conv to hook")
    names = list(gaps) if layers is None else list(layers)
    missing = [n for n in names if n not in gaps]
    if missing:
        raise ConfigError(f"no GAPs gathered for {missing}; gathered {list(gaps)}")
    labels = labels.to(torch.int64).cpu()
    counts = torch.bincount(labels, minlength=num_classes)
    if mode == "class" and int(counts.max()) < 2:
        raise DataError(f"every class of the statistics set has at most one image "
                        f"({len(labels)} images, {int((counts > 0).sum())} classes): the class "
                        "test is degenerate; use mode='instance' for such a set")
    started = time.perf_counter()
    last_name = list(gaps)[-1]
    bug_log_p: Tensor | None = None
    if authors_stats_bug:
        last_channels = gaps[last_name].shape[1]
        too_wide = {n: gaps[n].shape[1] for n in names if gaps[n].shape[1] > last_channels}
        if too_wide:
            raise ConfigError(f"authors_stats_bug: convs {too_wide} have more channels than the "
                              f"last conv {last_name} ({last_channels}); the authors' code would "
                              "have crashed here, so there is nothing to reproduce")
        bug_log_p = class_log_pvalues(gaps[last_name], labels, num_classes, equal_var)
    layer_stats: dict[str, LayerStatistics] = {}
    shapiro_info: dict | None = None
    shapiro_warnings: set[str] = set()
    for name in names:
        gap = gaps[name]
        values = gap.to(torch.float64)
        layer = LayerStatistics(gap_mean=values.mean(dim=0),
                                gap_std=values.std(dim=0) if len(values) > 1
                                else torch.zeros(values.shape[1], dtype=torch.float64))
        if mode == "class":
            if bug_log_p is not None:
                log_p = bug_log_p[:gap.shape[1]].clone()
            else:
                log_p = class_log_pvalues(gap, labels, num_classes, equal_var)
            layer.log_p = float32_tied(log_p) if pvalue_precision == "float32" else log_p
        if shapiro:
            layer.shapiro_p, shapiro_info = shapiro_pvalues(gap, shapiro_max_samples, seed)
            shapiro_warnings.update(shapiro_info["scipy_warnings"])
        layer_stats[name] = layer
    if shapiro_info is not None:
        shapiro_info["scipy_warnings"] = sorted(shapiro_warnings)  # over every layer
    present = counts[counts > 0]
    info = dict(meta or {})
    info.update({
        "mode": mode, "n_images": int(len(labels)), "num_classes": int(num_classes),
        "class_counts": {"min": int(present.min()), "max": int(present.max()),
                         "classes_present": int(len(present))},
        "options": {"equal_var": bool(equal_var), "pvalue_precision": pvalue_precision,
                    "authors_stats_bug": bool(authors_stats_bug), "shapiro": bool(shapiro),
                    "shapiro_max_samples": shapiro_max_samples, "seed": int(seed)},
        "test": ("none (instance mode)" if mode == "instance" else
                 "one-sided two-sample t-test, class k > rest, "
                 + ("pooled Student (authors)" if equal_var else "Welch (option)")),
        "gap": "mean over H, W of ReLU(Conv2d output), pre-BatchNorm (authors' hooks)",
        "gap_std": "unbiased (N - 1) standard deviation over the set",
        "bug_source_layer": last_name if authors_stats_bug else None,
        "shapiro_info": shapiro_info,
        # str(): torch's TorchVersion would not load with weights_only=True
        "scipy_version": str(scipy.__version__), "torch_version": str(torch.__version__),
        "numpy_version": str(np.__version__), "python": platform.python_version(),
    })
    info["seconds_statistics"] = round(time.perf_counter() - started, 3)
    return ChannelStatistics(mode, layer_stats, info)


class _TensorBatches:
    """Slices of a TensorDataset's tensors: no per-item indexing and collation for 55,000.

    ``dataset`` is kept so that ``gather_gap`` preallocates its buffers.
    """

    def __init__(self, dataset: TensorDataset, batch_size: int):
        self.dataset, self.batch_size = dataset, batch_size

    def __iter__(self):
        inputs, labels = self.dataset.tensors[:2]
        for start in range(0, len(inputs), self.batch_size):
            yield inputs[start:start + self.batch_size], labels[start:start + self.batch_size]


def statistics_loader(data: Dataset | DataLoader | Iterable, batch_size: int = 256,
                      num_workers: int = 0) -> Iterable:
    """In-order (images, labels) batches for ``gather_gap``: TensorDatasets are sliced
    directly, other datasets go through a DataLoader; loaders and iterables pass through."""
    if isinstance(data, TensorDataset):
        return _TensorBatches(data, batch_size)
    if isinstance(data, DataLoader) or not isinstance(data, Dataset):
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def compute_channel_statistics(card: ModelCard, data: Dataset | DataLoader | Iterable,
                               mode: Mode = "class", *, convs: Sequence[str] | None = None,
                               equal_var: bool = True,
                               pvalue_precision: PValuePrecision = "float64",
                               authors_stats_bug: bool = False, shapiro: bool = True,
                               shapiro_max_samples: int | None = None, seed: int = 0,
                               batch_size: int = 256, num_workers: int = 0,
                               device: str | torch.device | None = None,
                               statistics_set: str = "") -> ChannelStatistics:
    """Gather GAPs of ``card.model`` over ``data`` and compute ``mode`` statistics.

    ``convs=None`` stores every conv (what ``layer_ratio`` hooking needs); with the authors'
    bug the model's last conv is gathered too, since every layer takes its statistics.
    ``statistics_set`` is a key of ``STATISTICS_SETS`` or a free description for ``meta``.
    Defaults are the corrected statistics; see the module docstring for the authors' options.
    """
    _check_options(mode, pvalue_precision, authors_stats_bug)
    all_convs = conv_names(card.model)
    wanted = _resolve_convs(card.model, convs)
    gather = list(wanted)
    if authors_stats_bug and all_convs and all_convs[-1] not in gather:
        gather.append(all_convs[-1])
    loader = statistics_loader(data, batch_size, num_workers)
    started = time.perf_counter()
    gaps, labels = gather_gap(card.model, loader, gather, device=device)
    gather_seconds = time.perf_counter() - started
    meta = {"model": card.name,
            "statistics_set": STATISTICS_SETS.get(statistics_set, statistics_set),
            "statistics_set_key": statistics_set if statistics_set in STATISTICS_SETS else None,
            "layers_stored": "all convs" if convs is None else "requested convs",
            "seconds_gather": round(gather_seconds, 3)}
    result = statistics_from_gaps(
        gaps, labels, card.num_classes, mode, layers=wanted, equal_var=equal_var,
        pvalue_precision=pvalue_precision, authors_stats_bug=authors_stats_bug,
        shapiro=shapiro, shapiro_max_samples=shapiro_max_samples, seed=seed, meta=meta)
    result.meta["seconds"] = round(time.perf_counter() - started, 3)
    return result


# --------------------------------------------------------------------------- statistics sets

def mnist_statistics_set(folder: str | os.PathLike, validation_size: int = 5000) -> TensorDataset:
    """The 55,000 training images of a prepared MNIST / Fashion-MNIST folder, labels included.

    The first ``validation_size`` training images are the validation split and are excluded.
    """
    pixels, labels = mnist_tensors(folder, "train")
    train, _ = mnist.train_validation_split(len(labels), validation_size)
    return TensorDataset(pixels[train], labels[train])


def imagenet_statistics_set(folder: str | os.PathLike, card: ModelCard,
                            indices: list[int] | None = None) -> ImageNetImages:
    """A prepared ImageNet folder (sample or ILSVRC2012 val) through ``card``'s preprocessing."""
    if card.preprocessing.channels != 3:
        raise ConfigError(f"{card.name} is not an ImageNet model: its input has "
                          f"{card.preprocessing.channels} channel(s)")
    return ImageNetImages(folder, card.preprocessing.transform(), indices)


# --------------------------------------------------------------------------- summaries

def select_high(log_p: Tensor, q: float) -> Tensor:
    """H masks (C, K) for every class at channel portion q: the ParchGrad method's own rule
    (p ≤ the k-th smallest p, k = max(1, int(C·q)); ties at the threshold are all kept, so |H|
    can exceed int(C·q): the float32 tie problem)."""
    if not 0 < q <= 1:
        raise ConfigError(f"channel portion q must be in (0, 1]; got {q}")
    return select_channels(log_p.T, q, None, None, None).T


def _fraction(mask: Tensor) -> float:
    return float(mask.to(torch.float64).mean()) if mask.numel() else float("nan")


def statistics_summary(stats_: ChannelStatistics, gaps: dict[str, Tensor] | None = None,
                       q: float = 0.1) -> dict:
    """Per-conv numbers for the metrics file.

    ``shapiro_below_0.05`` is claim C11's fraction (channels the authors' filter keeps);
    ``float32_underflow`` the fraction of (channel, class) p-values that are exactly 0 in
    float32; ``classes_tied_beyond_q`` the fraction of classes whose float32 zeros alone exceed
    int(C·q) channels, so that q no longer bounds |H|; ``dead_channels`` (needs ``gaps``) the
    fraction of channels whose GAP is 0 on every image.
    """
    layers: dict[str, dict] = {}
    totals = {"channels": 0, "shapiro_below": 0, "shapiro_channels": 0}
    for name, layer in stats_.layers.items():
        channels = layer.channels
        entry: dict = {"channels": channels}
        totals["channels"] += channels
        if layer.shapiro_p is not None:
            below = int((layer.shapiro_p < SHAPIRO_THRESHOLD).sum())
            entry["shapiro_below_0.05"] = below / channels
            totals["shapiro_below"] += below
            totals["shapiro_channels"] += channels
        if layer.log_p is not None:
            zeros = float32_underflow(layer.log_p)
            entry["float32_underflow"] = _fraction(zeros)
            entry["classes_tied_beyond_q"] = _fraction(zeros.sum(dim=0) > max(1, int(channels * q)))
            entry["log_p_min"] = float(layer.log_p.min())
            entry["log_p_median"] = float(layer.log_p.median())
        if layer.gap_std is not None:
            entry["zero_std_channels"] = _fraction(layer.gap_std == 0)
        if gaps is not None and name in gaps:
            entry["dead_channels"] = _fraction((gaps[name] == 0).all(dim=0))
        layers[name] = entry
    summary: dict = {"mode": stats_.mode, "layers_count": len(layers),
                     "channels": totals["channels"], "q_for_ties": q, "layers": layers}
    if totals["shapiro_channels"]:
        summary["shapiro_below_0.05"] = {"count": totals["shapiro_below"],
                                         "channels": totals["shapiro_channels"],
                                         "fraction": totals["shapiro_below"]
                                         / totals["shapiro_channels"]}
    if stats_.mode == "class":
        zeros = sum(int(float32_underflow(l.log_p).sum()) for l in stats_.layers.values())
        pairs = sum(l.log_p.numel() for l in stats_.layers.values())
        summary["float32_underflow"] = {"count": zeros, "pairs": pairs, "fraction": zeros / pairs}
    for key in ("model", "statistics_set", "n_images", "options", "seconds", "shapiro_info"):
        if key in stats_.meta:
            summary[key] = stats_.meta[key]
    return summary


def last_layer_copy(stats_: ChannelStatistics) -> dict[str, bool]:
    """Per layer: is its log p the first C_l rows of the last layer's (the authors' bug)?

    The check of claim C12 for any class statistics, the authors' shipped pickles included.
    """
    if stats_.mode != "class":
        raise ConfigError("last_layer_copy needs class-mode statistics")
    names = list(stats_.layers)
    last = stats_.layers[names[-1]].log_p
    result = {}
    for name in names:
        own = stats_.layers[name].log_p
        result[name] = bool(own.shape[0] <= last.shape[0] and own.shape[1] == last.shape[1]
                            and torch.equal(own, last[:own.shape[0]]))
    return result


def selection_difference(corrected: ChannelStatistics, bug_compatible: ChannelStatistics,
                         q: float = 0.1, layers: Sequence[str] | None = None,
                         shapiro_threshold: float | None = None) -> pd.DataFrame:
    """How much the authors' bug changes the selected H sets (claim C12).

    Per layer (default: the layers both hold), H by ``select_high`` at channel portion ``q``
    for every class, optionally with the Shapiro filter (p < threshold); the Jaccard index of
    corrected vs bug-compatible H, its mean and minimum over classes, and the fraction of
    classes with identical H. Empty unions count as identical (Jaccard 1).
    """
    for stats_ in (corrected, bug_compatible):
        if stats_.mode != "class":
            raise ConfigError("selection_difference compares class-mode statistics")
    names = [n for n in corrected.layers if n in bug_compatible.layers] if layers is None \
        else list(layers)
    rows = []
    for name in names:
        a_layer, b_layer = corrected.layer(name), bug_compatible.layer(name)
        if a_layer.log_p.shape != b_layer.log_p.shape:
            raise DataError(f"{name}: corrected {tuple(a_layer.log_p.shape)} and bug-compatible "
                            f"{tuple(b_layer.log_p.shape)} statistics differ in shape")
        masks = []
        for layer in (a_layer, b_layer):
            high = select_high(layer.log_p, q)
            if shapiro_threshold is not None:
                if layer.shapiro_p is None:
                    raise DataError(f"{name}: no Shapiro p-values to filter with")
                high &= (layer.shapiro_p < shapiro_threshold)[:, None]
            masks.append(high)
        inter = (masks[0] & masks[1]).sum(dim=0).to(torch.float64)
        union = (masks[0] | masks[1]).sum(dim=0).to(torch.float64)
        jaccard = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
        rows.append({"layer": name, "channels": a_layer.channels, "q": q,
                     "h_size_corrected": float(masks[0].sum(dim=0).double().mean()),
                     "h_size_bug": float(masks[1].sum(dim=0).double().mean()),
                     "jaccard_mean": float(jaccard.mean()), "jaccard_min": float(jaccard.min()),
                     "identical_classes": _fraction(jaccard == 1)})
    return pd.DataFrame(rows)
