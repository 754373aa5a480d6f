"""CAMs whose gradients are averaged over sampled inputs: Smooth Grad-CAM++, Integrated
Grad-CAM, Expected Grad-CAM and Expected Grad-CAM++ (our documented reconstruction;
paper_notes/expected_gradcam.md).

Each visits (image, sample) pairs in chunks through the CAM core; random draws come from one
stream per image (seed + image content), consumed in sample order, so results do not depend on
the batching.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from replication.attribution._base import (DEFAULT_INTERNAL_BATCH, ModelLike, Passes,
                                           accumulate_samples, baseline_tensor, choice,
                                           image_generators, layer_gradients, non_negative,
                                           positive_int, register_method)
from replication.attribution._cam import CAM, gradcam_pp_weights
from replication.attribution._smoothing import image_noise
from replication.errors import ConfigError


def powers(g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """g, g², g³: the derivatives Grad-CAM++'s weights average (under its exponential
    assumption) when the gradients are sampled."""
    return g, g * g, g * g * g


class _SampledCAM(CAM):
    """Shared helpers: layer gradients at a batch of sampled points; the map of the clean
    inputs' activations weighted from the sampled gradients."""

    def _layer_gradients(self, points: Tensor, targets: Tensor) -> Tensor:
        return layer_gradients(self.model, self.layer, points, targets, len(points))[1]

    def _activations(self, points: Tensor) -> Tensor:
        dummy = torch.zeros(len(points), dtype=torch.long, device=points.device)
        return layer_gradients(self.model, self.layer, points, dummy, self.internal_batch_size,
                               with_gradients=False)[0]

    def _weighted_inputs(self, inputs: Tensor, targets: Tensor,
                         gradients: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """The inputs' activations and the channel weights of the sampled ``gradients``."""
        activations = self._activations(inputs)
        return activations, self.channel_weights(activations, gradients, inputs, targets)


class _AveragedPlusPlus:
    """Grad-CAM++'s rule on derivatives averaged over samples: ``gradients`` = (d1, d2, d3),
    the means of g, g², g³ (``powers``)."""

    def channel_weights(self, activations, gradients, inputs, targets):
        return gradcam_pp_weights(activations, *gradients)


@register_method
class SmoothGradCAMPlusPlus(_AveragedPlusPlus, _SampledCAM):
    """Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ weights from derivatives averaged over
    ``n_samples`` inputs with Gaussian noise of absolute std ``noise_std`` (model-input space).

    d1, d2, d3 = mean g, mean g², mean g³ over the noisy samples; α = d2 / (2 d2 + Σ A · d3)
    (TorchCAM's correction of the paper's numerator); W = Σ α · ReLU(d1); the map uses the clean
    input's activations. Defaults n_samples=4, noise_std=0.3 are TorchCAM's. TorchCAM itself
    weights ReLU of the *last* sample's gradient and its activations; ours averages, as the
    paper's smoothing intends (the tests show both agree without noise).
    """

    name = "smooth_gradcam_pp"
    label = "Smooth Grad-CAM++"

    def __init__(self, model: ModelLike, *, layer: str | nn.Module | None = None, n_samples: int = 4,
                 noise_std: float = 0.3, seed: int = 0, relu: bool = True,
                 internal_batch_size: int = DEFAULT_INTERNAL_BATCH):
        super().__init__(model, layer=layer, relu=relu, internal_batch_size=internal_batch_size)
        self.n_samples = positive_int(self.name, "n_samples", n_samples)
        self.noise_std = non_negative(self.name, "noise_std", noise_std)
        self.seed = int(seed)

    def passes(self) -> Passes:
        return Passes(self.n_samples, 1)

    def _activations_and_weights(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        generators = image_generators(inputs, self.seed)

        def derivatives(image: Tensor, _sample: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            image = image.to(inputs.device)
            noisy = inputs[image] + self.noise_std * image_noise(inputs, generators, image)
            return powers(self._layer_gradients(noisy, targets[image]))

        sums = accumulate_samples(len(inputs), self.n_samples, self.internal_batch_size, derivatives)
        return self._weighted_inputs(inputs, targets, tuple(s / self.n_samples for s in sums))


@register_method
class IntegratedGradCAM(_SampledCAM):
    """Integrated Grad-CAM (Sattarzadeh et al. 2021) along x_i = x̄ + (i/m)(x − x̄), i = 0…m−1.

    ``form="authors_code"`` (default): the official notebook's sum of the m per-step Grad-CAM
    maps, each ReLU(Σ_k A_k(x_i) · mean ∂y/∂A_k(x_i)). ``form="path_weights"``: Grad-CAM on the
    clean activations with weights from the path-averaged gradients, the form Expected Grad-CAM
    reduces to with a fixed baseline, σ = 0 and the α grid. The baseline ``"zeros"`` is the
    notebook's ``input * 0`` (mid-grey for mean/std-normalised models); ``"black"`` is pixel 0.
    """

    name = "integrated_gradcam"
    label = "Integrated Grad-CAM"
    FORMS = ("authors_code", "path_weights")

    def __init__(self, model: ModelLike, *, layer: str | nn.Module | None = None, steps: int = 50,
                 baseline: str | float | Tensor = "zeros", form: str = "authors_code",
                 relu: bool = True, internal_batch_size: int = DEFAULT_INTERNAL_BATCH):
        super().__init__(model, layer=layer, relu=relu, internal_batch_size=internal_batch_size)
        self.steps = positive_int(self.name, "steps", steps)
        self.baseline = baseline
        self.form = choice(self.name, "form", form, self.FORMS)

    def passes(self) -> Passes:
        return Passes(self.steps, int(self.form == "path_weights"))

    def _path_sum(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Per image, the sum over the path of the per-step maps (``authors_code``) or of the
        layer gradients (``path_weights``)."""
        baseline = baseline_tensor(self.name, self.baseline, inputs, self.card)
        delta = inputs - baseline

        def along_path(image: Tensor, step: Tensor) -> Tensor:
            image, step = image.to(inputs.device), step.to(inputs.device)
            points = baseline[image] + (step.to(inputs.dtype) / self.steps).view(-1, 1, 1, 1) * delta[image]
            if self.form == "path_weights":
                return self._layer_gradients(points, targets[image])
            activations, gradients = layer_gradients(self.model, self.layer, points,
                                                     targets[image], len(points))
            return self.combine(activations, gradients.mean((2, 3), keepdim=True))

        (total,) = accumulate_samples(len(inputs), self.steps, self.internal_batch_size, along_path)
        return total

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if self.form == "authors_code":
            return self._path_sum(inputs, targets)
        return super()._attribute(inputs, targets)

    def _activations_and_weights(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if self.form == "authors_code":
            raise ConfigError("integrated_gradcam: form='authors_code' sums the per-step maps, "
                              "so no single activations and weights make the map; use "
                              "form='path_weights'")
        return self._weighted_inputs(inputs, targets, self._path_sum(inputs, targets) / self.steps)

    def channel_weights(self, activations, gradients, inputs, targets):
        """Grad-CAM's rule on the path-averaged gradients."""
        return gradients.mean((2, 3), keepdim=True)


@register_method
class ExpectedGradCAM(_SampledCAM):
    """Expected Grad-CAM (Buono et al. 2024), reconstructed: the paper's code is unreleased.

    Per draw m: a reference x'_m from ``references`` (real images, model-input space), α_m ~
    U(0, 1) and ε_m ~ N(0, σ²); z_m = x'_m + α_m (x + ε_m − x'_m).

    - ``variant="eg_weights"`` (default): Ĝ = mean_m ∂y_c/∂A(z_m); W_k = mean_ij Ĝ_k; the map is
      ReLU(Σ_k W_k A_k(x)) — Grad-CAM with only its gradient replaced.
    - ``variant="layer_eg"``: Φ = mean_m (A(x + ε_m) − A(x'_m)) ⊙ ∂y_c/∂A(z_m); map ReLU(Σ_k Φ_k)
      (Expected Gradients at the layer, as Captum's LayerGradientShap).

    ``sigma`` is in [0, 1] pixel units, divided by the model's normalisation std (model-input
    units when the model is a bare module). ``references`` may also be ``"zeros"``/``"black"``
    (a single baseline) or ``"input"`` (x' = x). ``alpha`` is ``"uniform"``, ``"grid"``
    (α_m = m/M, m = 0…M−1, the Integrated Grad-CAM path) or a fixed number. Special cases
    (tests): σ = 0, α = 1 is Grad-CAM; a fixed baseline, σ = 0, the grid is Integrated Grad-CAM
    (``form="path_weights"``); references="input", α = 1, σ > 0 is SmoothGrad-CAM.
    """

    name = "expected_gradcam"
    label = "Expected Grad-CAM"
    VARIANTS = ("eg_weights", "layer_eg")

    def __init__(self, model: ModelLike, *, layer: str | nn.Module | None = None,
                 references: Tensor | str | None = None, n_samples: int = 50, sigma: float = 0.15,
                 alpha: str | float = "uniform", variant: str = "eg_weights", seed: int = 0,
                 relu: bool = True, internal_batch_size: int = DEFAULT_INTERNAL_BATCH):
        super().__init__(model, layer=layer, relu=relu, internal_batch_size=internal_batch_size)
        if references is None:
            raise ConfigError("expected_gradcam needs a reference distribution: pass references="
                              "<tensor of real images (R, C, H, W) in model-input space>, or "
                              "'zeros', 'black' or 'input'")
        if isinstance(references, Tensor) and references.ndim != 4:
            raise ValueError(f"expected_gradcam: references must be (R, C, H, W); got "
                             f"{tuple(references.shape)}")
        self.references = references
        self.n_samples = positive_int(self.name, "n_samples", n_samples)
        self.sigma = non_negative(self.name, "sigma", sigma)
        if not (alpha in ("uniform", "grid") or (isinstance(alpha, (int, float))
                                                  and not isinstance(alpha, bool) and 0 <= alpha <= 1)):
            raise ConfigError(f"expected_gradcam: alpha must be 'uniform', 'grid' or a number in "
                              f"[0, 1]; got {alpha!r}")
        self.alpha = alpha
        self.variant = choice(self.name, "variant", variant, self.VARIANTS)
        self.seed = int(seed)

    def passes(self) -> Passes:
        if self.variant == "layer_eg":
            return Passes(self.n_samples, 2 * self.n_samples)
        return Passes(self.n_samples, 1)

    def _noise_scale(self, inputs: Tensor) -> Tensor:
        if self.card is None:
            return torch.full((1, 1, 1, 1), self.sigma, device=inputs.device, dtype=inputs.dtype)
        std = torch.tensor(self.card.preprocessing.std, device=inputs.device, dtype=inputs.dtype)
        return (self.sigma / std).view(1, -1, 1, 1)

    def _pool(self, inputs: Tensor) -> Tensor | None:
        """The reference images (R, C, H, W); ``None`` when the baseline is the input itself."""
        if isinstance(self.references, Tensor):
            return self.references.to(device=inputs.device, dtype=inputs.dtype)
        if self.references == "input":
            return None
        return baseline_tensor(self.name, self.references, inputs[:1], self.card)

    def _draw(self, inputs: Tensor, pool: Tensor | None, generators: list[torch.Generator],
              image: Tensor, sample: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Baselines x', perturbed inputs x + ε and path points z of the rows. Every stream is
        drawn in the same order (reference, α, ε) whatever the options, so that e.g. a σ sweep
        reuses the same references and α."""
        size = 1 if pool is None else len(pool)
        indices, alphas, noise = [], [], []
        for i in image.tolist():  # per row: reference, α, ε, in this order
            indices.append(int(torch.randint(0, size, (1,), generator=generators[i],
                                             device=inputs.device)))
            alphas.append(torch.rand((), generator=generators[i], device=inputs.device))
            noise.append(torch.randn(inputs.shape[1:], generator=generators[i],
                                     device=inputs.device, dtype=inputs.dtype))
        noise = torch.stack(noise) * self._noise_scale(inputs)
        if self.alpha == "uniform":
            alpha = torch.stack(alphas).to(inputs.dtype)
        elif self.alpha == "grid":
            alpha = sample.to(device=inputs.device, dtype=inputs.dtype) / self.n_samples
        else:
            alpha = torch.full((len(image),), float(self.alpha), device=inputs.device,
                               dtype=inputs.dtype)
        baselines = inputs[image] if pool is None else pool[indices]
        perturbed = inputs[image] + noise
        points = baselines + alpha.view(-1, 1, 1, 1) * (perturbed - baselines)
        return baselines, perturbed, points

    def _mean_over_draws(self, inputs: Tensor, targets: Tensor,
                         terms: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, ...]]
                         ) -> tuple[Tensor, ...]:
        """Per image, the means over its draws of ``terms(baselines, perturbed, gradients)``
        (the layer gradients at the path points z)."""
        generators, pool = image_generators(inputs, self.seed), self._pool(inputs)

        def draws(image: Tensor, sample: Tensor) -> tuple[Tensor, ...]:
            image = image.to(inputs.device)
            baselines, perturbed, points = self._draw(inputs, pool, generators, image, sample)
            return terms(baselines, perturbed, self._layer_gradients(points, targets[image]))

        sums = accumulate_samples(len(inputs), self.n_samples, self.internal_batch_size, draws)
        return tuple(s / self.n_samples for s in sums)

    def _layer_eg_terms(self, baselines: Tensor, perturbed: Tensor,
                        gradients: Tensor) -> tuple[Tensor]:
        return ((self._activations(perturbed) - self._activations(baselines)) * gradients,)

    def _activations_and_weights(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if self.variant == "layer_eg":
            # Φ already holds the activation differences: element-wise weights on unit
            # activations, so the map is ReLU(Σ_k Φ_k).
            (phi,) = self._mean_over_draws(inputs, targets, self._layer_eg_terms)
            return torch.ones_like(phi), phi
        (expected,) = self._mean_over_draws(inputs, targets, lambda _b, _p, g: (g,))
        return self._weighted_inputs(inputs, targets, expected)

    def channel_weights(self, activations, gradients, inputs, targets):
        """Grad-CAM's rule on the expected gradients Ĝ."""
        return gradients.mean((2, 3), keepdim=True)


@register_method
class ExpectedGradCAMPlusPlus(_AveragedPlusPlus, ExpectedGradCAM):
    """Expected Grad-CAM++ (ours, for claim C8 "substitute of … any method built therefrom").

    Grad-CAM++'s weights (eq. 19) from d1, d2, d3 = the means of g, g², g³ over Expected
    Grad-CAM's draws (reference, α, ε), as Smooth Grad-CAM++ averages them over noise; the map
    uses the clean input's activations. It draws exactly as ``expected_gradcam`` (same streams),
    so σ = 0, α = 1 gives Grad-CAM++. The ``eg_weights`` form only: it replaces the gradient.
    """

    name = "expected_gradcam_pp"
    label = "Expected Grad-CAM++"

    def __init__(self, model: ModelLike, *, layer: str | nn.Module | None = None,
                 references: Tensor | str | None = None, n_samples: int = 50, sigma: float = 0.15,
                 alpha: str | float = "uniform", seed: int = 0, relu: bool = True,
                 internal_batch_size: int = DEFAULT_INTERNAL_BATCH):
        super().__init__(model, layer=layer, references=references, n_samples=n_samples,
                         sigma=sigma, alpha=alpha, variant="eg_weights", seed=seed, relu=relu,
                         internal_batch_size=internal_batch_size)

    def _activations_and_weights(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        derivatives = self._mean_over_draws(inputs, targets, lambda _b, _p, g: powers(g))
        return self._weighted_inputs(inputs, targets, derivatives)

