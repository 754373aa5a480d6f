"""The shared core: the ``Attribution`` base class, the method registry and the gradient core.

Every method is one class with one ``attribute(inputs, targets)`` call returning raw maps,
batch first, on the inputs' device. Hyper-parameters are keyword arguments of the constructor,
so a method is looked up by name and configured from params.yaml::

    method = create_method("smoothgrad", card, n_samples=50, noise_level=0.15)
    maps = method.attribute(images, targets)

Every gradient the engine takes goes through :func:`input_gradients` or :func:`layer_gradients`.
They publish the targets of the forward pass being differentiated (:func:`current_targets`), so
backward hooks that depend on the explained class (ParchGrad) work under any batching, and they
differentiate with ``torch.autograd.grad`` so no parameter ``.grad`` is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from replication.attribution import postprocess
from replication.errors import ConfigError
from replication.models.base import ModelCard

TargetsLike = Tensor | int | Sequence[int]
ModelLike = nn.Module | ModelCard

DEFAULT_INTERNAL_BATCH = 32

_CURRENT_TARGETS: ContextVar[Tensor | None] = ContextVar("current_targets", default=None)


@dataclass(frozen=True)
class Passes:
    """Model passes one map needs: forward+backward, forward-only, and forwards of the model's
    head only (the layers after the CAM layer, ``ModelCard.head``): the benchmark's floor."""

    forward_backward: int
    forward: int = 0
    head: int = 0


class Attribution(ABC):
    """A saliency method configured with its hyper-parameters.

    Subclasses set ``name`` (the registry key) and ``label`` (its display name), take the model first and their hyper-parameters
    as keyword-only constructor arguments, and implement ``_attribute``.
    """

    name: ClassVar[str]
    label: ClassVar[str]  # how figures and tables name the method

    def __init__(self, model: ModelLike):
        if isinstance(model, ModelCard):
            self.card: ModelCard | None = model
            self.model = model.model
        elif isinstance(model, nn.Module):
            self.card, self.model = None, model
        else:
            raise ConfigError(f"{self.name}: model must be an nn.Module or a ModelCard, "
                              f"not {type(model).__name__}")

    def attribute(self, inputs: Tensor, targets: TargetsLike) -> Tensor:
        """Raw attribution maps of ``inputs`` (B, C, H, W) for ``targets`` (B,) class indices."""
        return self.checked(self._attribute, inputs, targets)

    def checked(self, step: Callable[[Tensor, Tensor], Any], inputs: Tensor,
                targets: TargetsLike) -> Any:
        """``step(inputs, targets)`` on checked inputs, the targets as a (B,) long tensor on the
        inputs' device, the model in evaluation mode (every public step goes through here)."""
        inputs = check_inputs(inputs, self.name, self.card)
        targets = as_targets(targets, inputs, self.card)
        with eval_mode(self.model):
            return step(inputs.detach(), targets)

    @abstractmethod
    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor: ...

    def passes(self) -> Passes:
        """Model passes per explained image (forward+backward, forward-only)."""
        return Passes(1)

    def samples_per_image(self) -> int:
        """Model inputs one explained image expands into (for a wrapper's memory budget)."""
        passes = self.passes()
        return max(1, passes.forward_backward + passes.forward + passes.head)

    def __repr__(self) -> str:
        shown = {k: v for k, v in vars(self).items() if k not in ("card", "model")
                 and not k.startswith("_") and not isinstance(v, (Tensor, nn.Module))}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


# --- registry -----------------------------------------------------------------------------------

_METHODS: dict[str, type[Attribution]] = {}


def register_method(cls: type[Attribution]) -> type[Attribution]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in _METHODS:
        raise ValueError(f"attribution method {cls.name!r} is already registered")
    _METHODS[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    return sorted(_METHODS)


def method_class(name: str) -> type[Attribution]:
    if name not in _METHODS:
        raise ConfigError(f"unknown attribution method {name!r}; choose one of {available_methods()}")
    return _METHODS[name]


def method_label(name: str) -> str:
    """The display label of method ``name`` (figures, tables, the report)."""
    return method_class(name).label


def method_parameters(name: str) -> dict[str, Any]:
    """The hyper-parameters of method ``name`` and their defaults."""
    signature = inspect.signature(method_class(name).__init__)
    return {p.name: p.default for p in signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def create_method(name: str, model: ModelLike, **params: Any) -> Attribution:
    """The method ``name`` on ``model`` with ``params``; unknown names are errors listing the valid ones."""
    valid = method_parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"{name} has no parameter {', '.join(map(repr, unknown))}; "
                          f"its parameters are {sorted(valid)}")
    return method_class(name)(model, **params)


def attribute(method: str, model: ModelLike, inputs: Tensor, targets: TargetsLike,
              **params: Any) -> Tensor:
    """``attribute("gradcam", card, images, targets)``: raw maps, batch first, on the inputs' device."""
    return create_method(method, model, **params).attribute(inputs, targets)


# --- argument checks ----------------------------------------------------------------------------

def check_inputs(inputs: Tensor, name: str = "attribution", card: ModelCard | None = None) -> Tensor:
    """``inputs`` if they are a finite float batch (B, C, H, W) the model can take."""
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.ndim != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"{name}: inputs must be a float tensor (batch, channels, height, width); "
                         f"got {shape}")
    if card is not None:
        p = card.preprocessing
        size = f"{p.input_size}×{p.input_size}"
        wrong_size = card.fixed_input_size and inputs.shape[-2:] != (p.input_size, p.input_size)
        if inputs.shape[1] != p.channels or wrong_size:
            takes = (f"{p.channels}-channel {size} images" if card.fixed_input_size else
                     f"{p.channels}-channel images ({size} after its preprocessing)")
            raise ValueError(f"{name}: {card.name} takes {takes}; got inputs of shape "
                             f"{tuple(inputs.shape)}. Prepare them with "
                             "card.preprocessing.transform() (or card.preprocessing.normalize for "
                             "pixel tensors in [0, 1]).")
    # A NaN input makes the model's output NaN, yet gradients through ReLUs can stay finite:
    # the map would look plausible.
    bad = postprocess.non_finite_images(inputs)
    if bad.any():
        images = bad.nonzero().flatten().tolist()
        shown = ", ".join(map(str, images[:10])) + (" …" if len(images) > 10 else "")
        count = int((~torch.isfinite(inputs)).sum())
        raise ValueError(f"{name}: {count} non-finite input value(s) (NaN or ±inf) in "
                         f"{len(images)} of {len(inputs)} image(s), at batch index {shown}; no "
                         "map of such an image means anything. Check how those images were "
                         "loaded and preprocessed.")
    return inputs


def as_targets(targets: TargetsLike, inputs: Tensor, card: ModelCard | None = None) -> Tensor:
    """Targets as a (B,) long tensor on the inputs' device; an int is used for every image."""
    batch = len(inputs)
    if isinstance(targets, int) and not isinstance(targets, bool):
        targets = torch.full((batch,), targets, dtype=torch.long)
    given = targets if isinstance(targets, Tensor) else torch.as_tensor(targets)
    if given.is_floating_point() or given.is_complex() or given.dtype == torch.bool:
        # Converting would truncate silently: 3.7 would explain class 3.
        preview = ", ".join(f"{v:g}" for v in given.flatten()[:4].tolist())
        raise ValueError(f"targets must be integer class indices (Python ints or an integer "
                         f"tensor); got {given.dtype} values [{preview}]. If they are class "
                         "indices stored as floats, convert them deliberately, e.g. "
                         "targets.round().long().")
    targets = given.to(device=inputs.device, dtype=torch.long).reshape(-1)
    if targets.shape != (batch,):
        raise ValueError(f"targets must hold one class index per input: {batch} inputs, "
                         f"{targets.numel()} targets")
    limit = card.num_classes if card is not None else None
    if len(targets) and (targets.min() < 0 or (limit is not None and targets.max() >= limit)):
        raise ValueError(f"target class indices must lie in [0, {limit or 'num_classes'}); "
                         f"got {targets.min().item()}…{targets.max().item()}")
    return targets


def check_target_range(targets: Tensor, n_logits: int) -> None:
    """Every target indexes one of the model's ``n_logits`` outputs (the card's check covers
    models with a ModelCard; a bare nn.Module is checked against what it returned)."""
    if len(targets) and int(targets.max()) >= n_logits:
        raise ValueError(f"target class {int(targets.max())} is out of range: the model returned "
                         f"{n_logits} logits per image, so targets must lie in [0, {n_logits})")


def positive_int(method: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{method}: {name} must be a positive integer, got {value!r}")
    return value


def non_negative(method: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{method}: {name} must be a non-negative number, got {value!r}")
    return float(value)


def choice(method: str, name: str, value: Any, options: Sequence[str]) -> str:
    if value not in options:
        raise ConfigError(f"{method}: {name} must be one of {list(options)}, got {value!r}")
    return value


# --- model state, targets, seeds ----------------------------------------------------------------

@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode for the call (batch-norm statistics, no dropout), then the caller's mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def forward_targets(targets: Tensor) -> Iterator[None]:
    token = _CURRENT_TARGETS.set(targets)
    try:
        yield
    finally:
        _CURRENT_TARGETS.reset(token)


def current_targets() -> Tensor | None:
    """Targets of the forward pass the engine is differentiating (for target-aware hooks)."""
    return _CURRENT_TARGETS.get()


def image_generators(inputs: Tensor, seed: int) -> list[torch.Generator]:
    """One generator per image, seeded from ``seed`` and the image's content.

    Noise then depends on the image, not on its position in the batch, so a batched call equals
    calls one image at a time, and the same image gets the same noise under every model (common
    random numbers, which the randomization tests compare).
    """
    generators = []
    for image in inputs.detach():
        digest = hashlib.blake2b(struct.pack("<q", seed) + image.cpu().numpy().tobytes(),
                                 digest_size=8).digest()
        generator = torch.Generator(device=inputs.device)
        generator.manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
        generators.append(generator)
    return generators


# --- gradient core ------------------------------------------------------------------------------

def _chunks(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def target_logits(logits: Tensor, targets: Tensor) -> Tensor:
    """(B,) the logit of each row's target class."""
    if logits.ndim != 2:
        raise ValueError(f"the model must return logits (batch, classes); got {tuple(logits.shape)}")
    check_target_range(targets, logits.shape[1])
    return logits.gather(1, targets[:, None])[:, 0]


def _target_score(logits: Tensor, targets: Tensor) -> Tensor:
    return target_logits(logits, targets).sum()


def input_gradients(model: nn.Module, inputs: Tensor, targets: Tensor,
                    batch_size: int = DEFAULT_INTERNAL_BATCH) -> Tensor:
    """∂ logit[target] / ∂ input for every row of ``inputs``, ``batch_size`` rows per pass."""
    grads = torch.empty_like(inputs)
    for rows in _chunks(len(inputs), batch_size):
        x = inputs[rows].detach().requires_grad_(True)
        with torch.enable_grad(), forward_targets(targets[rows]):
            (grads[rows],) = torch.autograd.grad(_target_score(model(x), targets[rows]), x)
    return grads


@contextlib.contextmanager
def capture_output(module: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Record ``module``'s output on each forward; a clone is passed on, so in-place operations
    downstream cannot alter what was recorded."""
    store: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor):
            raise ConfigError(f"the target layer returns {type(output).__name__}, not a tensor")
        store["output"] = output
        return output.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def layer_gradients(model: nn.Module, layer: nn.Module, inputs: Tensor, targets: Tensor,
                    batch_size: int = DEFAULT_INTERNAL_BATCH, with_gradients: bool = True
                    ) -> tuple[Tensor, Tensor | None]:
    """Activations A of ``layer`` and ∂ logit[target] / ∂A (backward stops at the layer)."""
    activations, gradients = [], []
    with capture_output(layer) as store:
        for rows in _chunks(len(inputs), batch_size):
            if not with_gradients:
                with torch.no_grad():
                    model(inputs[rows])
                activations.append(store["output"])
                continue
            x = inputs[rows].detach().requires_grad_(True)  # so A is in a graph even if frozen
            with torch.enable_grad(), forward_targets(targets[rows]):
                score = _target_score(model(x), targets[rows])
                (grad,) = torch.autograd.grad(score, store["output"])
            activations.append(store["output"].detach())
            gradients.append(grad)
    if not activations:
        raise ValueError("no inputs to explain")
    return torch.cat(activations), (torch.cat(gradients) if with_gradients else None)


def accumulate_samples(n_images: int, n_samples: int, rows_per_pass: int,
                       evaluate: Callable[[Tensor, Tensor], Tensor | tuple[Tensor, ...]]
                       ) -> tuple[Tensor, ...]:
    """Per image, the sums over its samples of what ``evaluate`` returns.

    The (image, sample) pairs are visited image-major, ``rows_per_pass`` at a time, and
    ``evaluate(image_index, sample_index)`` returns one row per pair (or a tuple of such
    tensors). Each image's samples are visited in order whatever the chunking, so per-image
    random streams give the same draws batched or one image at a time. Sums are taken per
    contiguous run of an image's rows (no atomic scatter: deterministic on GPUs too).
    """
    totals: list[Tensor] | None = None
    flat = torch.arange(n_images * n_samples)
    for rows in _chunks(len(flat), rows_per_pass):
        image, sample = flat[rows] // n_samples, flat[rows] % n_samples
        values = evaluate(image, sample)
        values = values if isinstance(values, tuple) else (values,)
        if totals is None:
            totals = [v.new_zeros((n_images, *v.shape[1:])) for v in values]
        runs = torch.unique_consecutive(image, return_counts=True)
        start = 0
        for index, count in zip(runs[0].tolist(), runs[1].tolist()):
            for total, value in zip(totals, values):
                total[index] += value[start:start + count].sum(0)
            start += count
    if totals is None:
        raise ValueError("no inputs to explain")
    return tuple(totals)


def resolve_layer(method: str, card: ModelCard | None, model: nn.Module,
                  layer: str | nn.Module | None) -> nn.Module:
    """The target layer: a module, a module name, or ``None`` for the model card's CAM layer."""
    if isinstance(layer, nn.Module):
        return layer
    if layer is None:
        if card is None:
            raise ConfigError(f"{method} needs a target layer: pass layer='<module name>' or a "
                              "ModelCard, whose cam_layer is the default")
        layer = card.cam_layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ConfigError(f"{method}: the model has no layer {layer!r} (its modules include "
                          f"{names} …)") from None


def baseline_tensor(method: str, baseline: str | float | Tensor, inputs: Tensor,
                    card: ModelCard | None) -> Tensor:
    """A baseline broadcastable to ``inputs``, in model-input space.

    ``"zeros"``: zeros in model-input space (the authors' IG; mid-grey for mean/std-normalised
    ImageNet models); ``"black"``: pixel value 0 through the model's normalisation; a number or a
    tensor of shape (C, H, W) or (B, C, H, W) is used as given.
    """
    if isinstance(baseline, Tensor):
        baseline = baseline.to(device=inputs.device, dtype=inputs.dtype)
        if baseline.shape != inputs.shape[1:] and baseline.shape != inputs.shape:
            raise ValueError(f"{method}: baseline shape {tuple(baseline.shape)} fits neither an "
                             f"image {tuple(inputs.shape[1:])} nor the batch {tuple(inputs.shape)}")
        return baseline.expand_as(inputs)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(inputs, float(baseline))
    if baseline == "zeros":
        return torch.zeros_like(inputs)
    if baseline == "black":
        if card is None:
            raise ConfigError(f"{method}: baseline='black' needs a ModelCard (its normalisation "
                              "says what pixel 0 is in model-input space)")
        return card.preprocessing.normalize(torch.zeros_like(inputs))
    raise ConfigError(f"{method}: baseline must be 'zeros', 'black', a number or a tensor; "
                      f"got {baseline!r}")

