"""The gradient family: Gradient, Gradient⊙Input, Integrated Gradients, Guided Backprop.

All use the engine's gradient core (checked against Captum in the tests); Captum itself
computes the alternative IG integration rules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from replication.attribution._base import (DEFAULT_INTERNAL_BATCH, Attribution, ModelLike, Passes,
                                           accumulate_samples, baseline_tensor, choice,
                                           input_gradients, positive_int, register_method)
from replication.errors import ConfigError

RELU_MODULES = (nn.ReLU, nn.ReLU6)
ENGINE_RULES = ("authors_riemann", "trapezoid")  # IG rules computed on the engine's core


@register_method
class Gradient(Attribution):
    """∂ logit_c / ∂x (Simonyan et al. 2014), signed: no absolute value (unlike Captum's default)."""

    name = "gradient"
    label = "Gradient"

    def __init__(self, model: ModelLike, *, internal_batch_size: int = DEFAULT_INTERNAL_BATCH):
        super().__init__(model)
        self.internal_batch_size = positive_int(self.name, "internal_batch_size", internal_batch_size)

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return input_gradients(self.model, inputs, targets, self.internal_batch_size)


@register_method
class InputXGradient(Gradient):
    """x ⊙ ∂ logit_c / ∂x, with x in model-input space (as the authors' code)."""

    name = "input_x_gradient"
    label = "Gradient⊙Input"

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return inputs * super()._attribute(inputs, targets)


@register_method
class IntegratedGradients(Attribution):
    """(x − x̄) ⊙ ∫₀¹ ∇f(x̄ + α(x − x̄)) dα (Sundararajan et al. 2017).

    ``integration="authors_riemann"`` (default) is the Sanity Checks authors' rule (PAIR saliency):
    the equal-weight mean of the gradients at ``linspace(0, 1, steps)``, both end points
    included. ``"trapezoid"``: the trapezoid rule on the same points, end points weighted ½ (the
    ParchGrad authors' rule). Both run on the engine's gradient core, so they compose with hooks
    (ParchGrad). ``gausslegendre`` (Captum's default) and ``riemann_trapezoid``/``_left``/
    ``_right``/``_middle`` are Captum ``IntegratedGradients``; note that Captum's
    ``riemann_trapezoid`` weights sum to (steps − 1)/steps, not 1.
    The baseline defaults to zeros in model-input space (mid-grey for mean/std-normalised
    ImageNet models, black for MNIST); ``"black"`` is pixel value 0.
    """

    name = "integrated_gradients"
    label = "Integrated Gradients"
    INTEGRATIONS = ("authors_riemann", "trapezoid", "gausslegendre", "riemann_trapezoid",
                    "riemann_left", "riemann_right", "riemann_middle")

    def __init__(self, model: ModelLike, *, steps: int = 50, baseline: str | float | Tensor = "zeros",
                 integration: str = "authors_riemann",
                 internal_batch_size: int = DEFAULT_INTERNAL_BATCH):
        super().__init__(model)
        self.steps = positive_int(self.name, "steps", steps)
        self.baseline = baseline
        self.integration = choice(self.name, "integration", integration, self.INTEGRATIONS)
        self.internal_batch_size = positive_int(self.name, "internal_batch_size", internal_batch_size)

    def passes(self) -> Passes:
        return Passes(self.steps)

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        baseline = baseline_tensor(self.name, self.baseline, inputs, self.card)
        if self.integration not in ENGINE_RULES:
            from captum.attr import IntegratedGradients as CaptumIG

            with torch.enable_grad():
                return CaptumIG(self.model).attribute(
                    inputs, baselines=baseline, target=targets, n_steps=self.steps,
                    method=self.integration, internal_batch_size=self.internal_batch_size)
        alphas = torch.linspace(0.0, 1.0, self.steps, device=inputs.device, dtype=inputs.dtype)
        weights = torch.full_like(alphas, 1.0 / self.steps)
        if self.integration == "trapezoid" and self.steps > 1:
            weights = torch.full_like(alphas, 1.0 / (self.steps - 1))
            weights[[0, -1]] /= 2
        delta = inputs - baseline

        def gradients_on_path(image: Tensor, step: Tensor) -> Tensor:
            image, step = image.to(inputs.device), step.to(inputs.device)
            points = baseline[image] + alphas[step].view(-1, 1, 1, 1) * delta[image]
            grads = input_gradients(self.model, points, targets[image], len(points))
            return grads * weights[step].view(-1, 1, 1, 1)

        (total,) = accumulate_samples(len(inputs), self.steps, self.internal_batch_size,
                                      gradients_on_path)
        return delta * total


@contextlib.contextmanager
def guided_relus(model: nn.Module, method: str = "guided_backprop") -> Iterator[None]:
    """Guided-ReLU backward on every ReLU and ReLU6 module: only positive gradients pass.

    The hook clamps the gradient arriving at each ReLU output to ≥ 0; the module's own backward
    then applies its mask (x > 0 for ReLU, 0 < x < 6 for ReLU6), giving
    1[x > 0] · 1[g > 0] · g (Springenberg et al. 2015). Captum's GuidedBackprop overrides
    ``nn.ReLU`` only and silently returns the plain gradient through ReLU6 (EfficientNet-Lite0).
    """
    relus = [m for m in model.modules() if isinstance(m, RELU_MODULES)]
    if not relus:
        raise ConfigError(f"{method} needs ReLU modules, and this model has none (functional "
                          "F.relu calls cannot be hooked): use a model from replication.models, "
                          "or make it hook-safe with replication.models.make_hook_safe")
    if any(m.inplace for m in relus):
        raise ConfigError(f"{method}: the model has in-place ReLUs, whose hooked outputs are "
                          "overwritten; call replication.models.make_hook_safe(model) first")

    def guide(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        if output.requires_grad:
            output.register_hook(lambda grad: grad.clamp(min=0))

    handles = [m.register_forward_hook(guide) for m in relus]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@register_method
class GuidedBackprop(Gradient):
    """Guided Backpropagation (Springenberg et al. 2015) on ReLU and ReLU6 modules."""

    name = "guided_backprop"
    label = "Guided Backprop"

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        with guided_relus(self.model, self.name):
            return super()._attribute(inputs, targets)
