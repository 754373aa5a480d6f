"""What ParchGrad needs to split a conv's channels into class-relevant (H) and the rest (L).

The statistics are computed once per model over a statistics set; the ParchGrad attribution
method only reads them. For every conv channel the GAP of ReLU(pre-BatchNorm conv output) is
gathered over the set (``gather_gap``), then (``ChannelStatistics.from_gaps``, or ``fit`` for
both steps):

- ``class`` mode: per conv, ``log_p[c, k]`` = log p-value of the one-sided test "GAP of channel c
  is larger on class k than on the other classes" (pooled Student, the authors', or Welch). Kept
  as float64 log-p: with thousands of samples the p-values underflow float32 to exact zeros,
  which the authors' code then ties (``pvalue_precision="float32"`` reproduces that);
- ``instance`` mode: per conv, the mean and standard deviation of each channel's GAP over the
  set; the test is a z-test of the explained image's own GAP (for sets with one image per class,
  where a class test is degenerate).

``shapiro_p`` is the Shapiro–Wilk p-value of each channel's GAP over the set (the authors keep
channels with p < 0.05, i.e. *non*-normal ones; optional). ``shapiro_max_samples=None`` runs it
on all images as the authors did (scipy warns that p may be inaccurate above 5000); an integer
runs it on a seeded subsample.

    statistics = ChannelStatistics.fit(card, dataset, "class")   # any ModelCard with convs
    maps = create_method("parchgrad", card, statistics=statistics).attribute(images, labels)
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from replication.attribution._significance import (class_log_pvalues, float32_tied,
                                                   shapiro_pvalues)
from replication.errors import ConfigError, DataError, missing_input
from replication.fileio import atomic_open
from replication.models.base import ModelCard
from replication.progress import progress

Mode = Literal["class", "instance"]
MODES = ("class", "instance")
PValuePrecision = Literal["float64", "float32"]
PVALUE_PRECISIONS = ("float64", "float32")


@dataclass
class LayerStatistics:
    """Statistics of one conv's output channels (C of them)."""

    log_p: Tensor | None = None      # (C, num_classes) float64, class mode
    gap_mean: Tensor | None = None   # (C,) instance mode
    gap_std: Tensor | None = None    # (C,) instance mode
    shapiro_p: Tensor | None = None  # (C,) optional Shapiro–Wilk filter

    @property
    def channels(self) -> int:
        for value in (self.log_p, self.gap_mean, self.shapiro_p):
            if value is not None:
                return int(value.shape[0])
        raise DataError("layer statistics hold no tensor")

    def tensors(self) -> dict[str, Tensor]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class ChannelStatistics:
    """Per hooked conv (module name) statistics, and how they were made (``meta``)."""

    mode: Mode
    layers: dict[str, LayerStatistics]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown statistics mode {self.mode!r}; choose one of {list(MODES)}")
        needed = ("log_p",) if self.mode == "class" else ("gap_mean", "gap_std")
        for name, layer in self.layers.items():
            missing = [k for k in needed if getattr(layer, k) is None]
            if missing:
                raise DataError(f"{self.mode}-mode statistics of layer {name} lack {missing}")

    def layer(self, name: str) -> LayerStatistics:
        if name not in self.layers:
            raise ConfigError(f"no ParchGrad statistics for layer {name!r}; the statistics "
                              f"cover {sorted(self.layers)}")
        return self.layers[name]

    def save(self, path: str | os.PathLike) -> None:
        payload = {"mode": self.mode, "meta": self.meta,
                   "layers": {n: layer.tensors() for n, layer in self.layers.items()}}
        with atomic_open(path) as handle:
            torch.save(payload, handle)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ChannelStatistics":
        path = Path(path)
        if not path.is_file():
            raise missing_input(path, "the ParchGrad channel statistics")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        layers = {n: LayerStatistics(**t) for n, t in payload["layers"].items()}
        return cls(payload["mode"], layers, payload.get("meta", {}))

    @classmethod
    def from_gaps(cls, gaps: dict[str, Tensor], labels: Tensor, num_classes: int,
                  mode: Mode = "class", *, layers: Sequence[str] | None = None,
                  equal_var: bool = True, pvalue_precision: PValuePrecision = "float64",
                  shapiro: bool = True, shapiro_max_samples: int | None = None, seed: int = 0,
                  meta: dict | None = None) -> "ChannelStatistics":
        """Statistics of ``layers`` (default: all) from gathered GAPs (``gather_gap``).

        ``meta`` (what the statistics describe: model, set) is kept and completed with how they
        were made. ``seed`` draws the Shapiro subsample when ``shapiro_max_samples`` is set.
        """
        check_options(mode, pvalue_precision)
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
                            f"({len(labels)} images, {int((counts > 0).sum())} classes): the "
                            "class test is degenerate; use mode='instance' for such a set")
        started = time.perf_counter()
        layer_stats: dict[str, LayerStatistics] = {}
        shapiro_info: dict | None = None
        shapiro_warnings: set[str] = set()
        for name in names:
            gap = gaps[name]
            layer = spread(gap)
            if mode == "class":
                log_p = class_log_pvalues(gap, labels, num_classes, equal_var)
                layer.log_p = float32_tied(log_p) if pvalue_precision == "float32" else log_p
            if shapiro:
                layer.shapiro_p, shapiro_info = shapiro_pvalues(gap, shapiro_max_samples, seed)
                shapiro_warnings.update(shapiro_info["scipy_warnings"])
            layer_stats[name] = layer
        if shapiro_info is not None:
            shapiro_info["scipy_warnings"] = sorted(shapiro_warnings)  # over every layer
        info = {**(meta or {}), **describe(mode, labels, num_classes, counts, equal_var),
                "options": {"equal_var": bool(equal_var), "pvalue_precision": pvalue_precision,
                            "shapiro": bool(shapiro), "shapiro_max_samples": shapiro_max_samples,
                            "seed": int(seed)},
                "shapiro_info": shapiro_info, **versions(),
                "seconds_statistics": round(time.perf_counter() - started, 3)}
        return cls(mode, layer_stats, info)

    @classmethod
    def fit(cls, model: ModelCard | nn.Module, data: Dataset | DataLoader | Iterable,
            mode: Mode = "class", *, num_classes: int | None = None,
            convs: Sequence[str] | None = None, batch_size: int = 256,
            device: str | torch.device | None = None, meta: dict | None = None,
            **options) -> "ChannelStatistics":
        """Gather the GAPs of the model's convs (default: all, what layer-ratio hooking needs)
        over ``data`` (a dataset or loader of (images, labels)) on ``device`` and compute
        ``mode`` statistics; ``options`` are those of ``from_gaps``. A ModelCard gives its
        name and number of classes; a bare module needs ``num_classes``."""
        card = model if isinstance(model, ModelCard) else None
        module = card.model if card is not None else model
        if num_classes is None:
            if card is None:
                raise ConfigError("ChannelStatistics.fit needs num_classes for a bare module")
            num_classes = card.num_classes
        started = time.perf_counter()
        gaps, labels = gather_gap(module, statistics_loader(data, batch_size), convs,
                                  device=device)
        info = {**({"model": card.name} if card is not None else {}), **(meta or {}),
                "seconds_gather": round(time.perf_counter() - started, 3)}
        result = cls.from_gaps(gaps, labels, num_classes, mode, meta=info, **options)
        result.meta["seconds"] = round(time.perf_counter() - started, 3)
        return result


def check_options(mode: str, pvalue_precision: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown statistics mode {mode!r}; choose one of {list(MODES)}")
    if pvalue_precision not in PVALUE_PRECISIONS:
        raise ConfigError(f"unknown pvalue_precision {pvalue_precision!r}; choose one of "
                          f"{list(PVALUE_PRECISIONS)}")


def spread(gap: Tensor) -> LayerStatistics:
    """The GAP mean and (unbiased) standard deviation of each channel over the set."""
    values = gap.to(torch.float64)
    return LayerStatistics(gap_mean=values.mean(dim=0),
                           gap_std=values.std(dim=0) if len(values) > 1
                           else torch.zeros(values.shape[1], dtype=torch.float64))


def describe(mode: str, labels: Tensor, num_classes: int, counts: Tensor,
             equal_var: bool) -> dict:
    """What the statistics are (the first entries of ``meta``)."""
    present = counts[counts > 0]
    return {"mode": mode, "n_images": int(len(labels)), "num_classes": int(num_classes),
            "class_counts": {"min": int(present.min()), "max": int(present.max()),
                             "classes_present": int(len(present))},
            "test": ("none (instance mode)" if mode == "instance" else
                     "one-sided two-sample t-test, class k > rest, "
                     + ("pooled Student (authors)" if equal_var else "Welch (option)")),
            "gap": "mean over H, W of ReLU(Conv2d output), pre-BatchNorm (authors' hooks)",
            "gap_std": "unbiased (N - 1) standard deviation over the set"}


def versions() -> dict:
    import scipy

    # str(): torch's TorchVersion would not load with weights_only=True
    return {"scipy_version": str(scipy.__version__), "torch_version": str(torch.__version__),
            "numpy_version": str(np.__version__), "python": platform.python_version()}


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


class _GapRecorder:
    """Forward hooks that write each conv's per-image GAP into (preallocated) buffers."""

    def __init__(self, model: nn.Module, names: list[str], total: int | None):
        self.names, self.total, self.offset = names, total, 0
        self.buffers: dict[str, Tensor] = {}
        self.chunks: dict[str, list[Tensor]] = {name: [] for name in names}
        self.calls: dict[str, int] = {}
        self.handles = []
        for name in names:
            module = model.get_submodule(name)
            if total is not None:
                self.buffers[name] = torch.empty(total, module.out_channels, dtype=torch.float32)
            self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs, output: Tensor) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1
            gap = torch.relu(output).mean(dim=(2, 3)).float().cpu()
            if self.total is None:
                self.chunks[name].append(gap)
            else:
                self.buffers[name][self.offset:self.offset + gap.shape[0]] = gap
        return hook

    def check_once(self) -> None:
        wrong = {n: self.calls.get(n, 0) for n in self.names if self.calls.get(n, 0) != 1}
        if wrong:
            raise DataError(f"convs ran {wrong} times in one forward pass (expected once each): "
                            "a per-image GAP is undefined for them; pass `convs` without them")

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def gather_gap(model: nn.Module, loader: Iterable, convs: Sequence[str] | None = None, *,
               device: str | torch.device | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """GAP over (H, W) of ReLU(conv output) per image and channel, for every (or each named) conv.

    Forward hooks on the Conv2d modules see the pre-BatchNorm output, as the authors' hooks
    did. Runs batched under ``no_grad`` in eval mode (the training flag is restored) on
    ``device`` (default: where the model is). Returns ``gaps[name]`` (N, C_l) float32 in
    ``named_modules`` order and the labels (N,) int64. Buffers are preallocated when the
    loader has a sized ``dataset``.
    """
    names = _resolve_convs(model, convs)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    total = _dataset_size(loader)
    recorder = _GapRecorder(model, names, total)
    labels_out = torch.empty(total, dtype=torch.int64) if total is not None else None
    label_chunks: list[Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in progress(loader, "channel GAPs", unit="batch"):
                inputs, labels = _split_batch(batch)
                recorder.calls.clear()
                start, size = recorder.offset, inputs.shape[0]
                if total is not None and start + size > total:
                    raise DataError(f"the loader yielded more than its dataset's {total} images")
                model(inputs.to(device))
                recorder.check_once()
                if total is None:
                    label_chunks.append(labels)
                else:
                    labels_out[start:start + size] = labels
                recorder.offset = start + size
    finally:
        recorder.remove()
        model.train(was_training)
    if total is None:
        if not label_chunks:
            raise DataError("the statistics loader yielded no images")
        return {n: torch.cat(recorder.chunks[n]) for n in names}, torch.cat(label_chunks)
    if recorder.offset != total:
        raise DataError(f"the loader yielded {recorder.offset} images but its dataset has "
                        f"{total}: use a loader without drop_last or sampling")
    return recorder.buffers, labels_out


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
