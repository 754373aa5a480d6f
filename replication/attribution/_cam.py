"""The CAM family on one small core.

The core captures the target layer's activations A (B, K, h, w) and the gradients ∂y_c/∂A
once; a variant only says how its weights W are computed (``channel_weights``), and the map is
ReLU(Σ_k W_k ⊙ A_k) at the layer's resolution (B, 1, h, w). Channel weights have shape
(B, K, 1, 1); element-wise variants (HiResCAM, LayerCAM) return (B, K, h, w). The public step
``activations_and_weights(inputs, targets)`` returns the A and W a map combines, for studies of
the weights themselves (e.g. which channels a method ranks first). Upsampling to the input is a post-processing
step (``postprocess.upsample``), except where the method itself defines it (Guided Grad-CAM).
Checked against pytorch-grad-cam in the tests (which min-max normalises and resizes every map).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from replication.attribution._base import (DEFAULT_INTERNAL_BATCH, Attribution, ModelLike, Passes,
                                           TargetsLike, accumulate_samples, layer_gradients,
                                           positive_int, register_method, resolve_layer,
                                           target_logits)
from replication.attribution._gradient import GuidedBackprop
from replication.errors import ConfigError

EPS_PLUSPLUS = 1e-6  # pytorch-grad-cam's, for Grad-CAM++
EPS_XGRAD = 1e-7


class CAM(Attribution):
    """Base of every CAM: hooks, activations, gradients; subclasses implement
    ``channel_weights`` (methods that sample the gradients override
    ``_activations_and_weights``)."""

    uses_gradients = True

    def __init__(self, model: ModelLike, *, layer: str | nn.Module | None = None, relu: bool = True,
                 internal_batch_size: int = DEFAULT_INTERNAL_BATCH):
        super().__init__(model)
        self.layer = resolve_layer(self.name, self.card, self.model, layer)
        self.relu = bool(relu)
        self.internal_batch_size = positive_int(self.name, "internal_batch_size", internal_batch_size)

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return self.combine(*self._activations_and_weights(inputs, targets))

    def activations_and_weights(self, inputs: Tensor, targets: TargetsLike
                                ) -> tuple[Tensor, Tensor]:
        """The activations A and weights W whose ``combine`` is the map of ``inputs`` for
        ``targets`` (checked as in ``attribute``)."""
        return self.checked(self._activations_and_weights, inputs, targets)

    def _activations_and_weights(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        activations, gradients = self.capture(inputs, targets, self.uses_gradients)
        self._known_channels = int(activations.shape[1])
        return activations, self.channel_weights(activations, gradients, inputs, targets)

    def capture(self, inputs: Tensor, targets: Tensor, with_gradients: bool = True
                ) -> tuple[Tensor, Tensor | None]:
        activations, gradients = layer_gradients(self.model, self.layer, inputs, targets,
                                                 self.internal_batch_size, with_gradients)
        if activations.ndim != 4:
            raise ConfigError(f"{self.name}: the target layer must output (batch, channels, "
                              f"height, width); it gave {tuple(activations.shape)}")
        return activations, gradients

    def combine(self, activations: Tensor, weights: Tensor) -> Tensor:
        cam = (weights * activations).sum(1, keepdim=True)
        return F.relu(cam) if self.relu else cam

    def channel_weights(self, activations: Tensor, gradients: Tensor | None, inputs: Tensor,
                        targets: Tensor) -> Tensor:
        """The variant's weights W from the layer's activations and gradients."""
        raise NotImplementedError


@register_method
class GradCAM(CAM):
    """W_k = mean_ij ∂y_c/∂A_k,ij (Selvaraju et al. 2017)."""

    name = "gradcam"
    label = "Grad-CAM"

    def channel_weights(self, activations, gradients, inputs, targets):
        return gradients.mean((2, 3), keepdim=True)


def gradcam_pp_weights(activations: Tensor, d1: Tensor, d2: Tensor, d3: Tensor) -> Tensor:
    """Grad-CAM++ eq. 19 (Chattopadhyay et al. 2018), as pytorch-grad-cam computes it.

    α = d2 / (2·d2 + Σ_ab A_ab · d3), zero where d1 = 0; W = Σ_ij α · ReLU(d1), where d1, d2, d3
    stand for the first three derivatives (g, g², g³ under the paper's exponential assumption).
    """
    alpha = d2 / (2 * d2 + activations.sum((2, 3), keepdim=True) * d3 + EPS_PLUSPLUS)
    alpha = torch.where(d1 != 0, alpha, torch.zeros_like(alpha))
    return (alpha * F.relu(d1)).sum((2, 3), keepdim=True)


@register_method
class GradCAMPlusPlus(CAM):
    """Grad-CAM++ (Chattopadhyay et al. 2018), eq. 19."""

    name = "gradcam_pp"
    label = "Grad-CAM++"

    def channel_weights(self, activations, gradients, inputs, targets):
        g2 = gradients * gradients
        return gradcam_pp_weights(activations, gradients, g2, g2 * gradients)


@register_method
class XGradCAM(CAM):
    """W_k = Σ_ij (A_k,ij / Σ_ab A_k,ab) · ∂y_c/∂A_k,ij (Fu et al. 2020)."""

    name = "xgradcam"
    label = "XGrad-CAM"

    def channel_weights(self, activations, gradients, inputs, targets):
        normaliser = activations.sum((2, 3), keepdim=True) + EPS_XGRAD
        return (gradients * activations / normaliser).sum((2, 3), keepdim=True)


@register_method
class LayerCAM(CAM):
    """Element-wise W = ReLU(∂y_c/∂A) (Jiang et al. 2021)."""

    name = "layercam"
    label = "LayerCAM"

    def channel_weights(self, activations, gradients, inputs, targets):
        return F.relu(gradients)


@register_method
class HiResCAM(CAM):
    """Element-wise W = ∂y_c/∂A (Draelos & Carin 2020)."""

    name = "hirescam"
    label = "HiResCAM"

    def channel_weights(self, activations, gradients, inputs, targets):
        return gradients


class _PerturbationCAM(CAM):
    """A CAM whose weights come from forward passes over (image, channel) pairs."""

    uses_gradients = False

    def passes(self) -> Passes:
        return Passes(0, 1 + self._channels())

    def _channels(self) -> int:
        """Channels K of the target layer: one forward pass per channel."""
        if getattr(self, "_known_channels", None) is None:
            if self.card is None:
                raise ConfigError(f"{self.name}: the pass count depends on the target layer's "
                                  "channels; call attribute() once or pass a ModelCard")
            p = self.card.preprocessing
            device = next(self.model.parameters()).device
            probe = torch.zeros(1, p.channels, p.input_size, p.input_size, device=device)
            self._known_channels = int(self.capture(probe, torch.zeros(1, dtype=torch.long,
                                                                         device=device), False)[0].shape[1])
        return self._known_channels

    @torch.no_grad()
    def _channel_scores(self, inputs: Tensor, targets: Tensor, channels: int, forward) -> Tensor:
        """Target logit of ``forward(image, channel)`` for every pair, (B, K), the pairs run
        ``internal_batch_size`` at a time (on a GPU, as many as memory allows)."""

        def scores(image: Tensor, channel: Tensor) -> Tensor:
            image, channel = image.to(inputs.device), channel.to(inputs.device)
            logits = forward(image, channel)
            return torch.zeros(len(image), channels, dtype=logits.dtype, device=logits.device
                               ).scatter_(1, channel[:, None], target_logits(logits, targets[image])[:, None])

        (totals,) = accumulate_samples(len(inputs), channels, self.internal_batch_size, scores)
        return totals


@register_method
class ScoreCAM(_PerturbationCAM):
    """Score-CAM (Wang et al. 2020) as pytorch-grad-cam computes it.

    Each channel, bilinearly upsampled to the input (corners aligned, as torch's
    ``UpsamplingBilinear2d`` in pytorch-grad-cam) and min-max scaled, masks the input; the
    channel's weight is the softmax over channels of the masked inputs' target logits. Every
    masked input needs a full forward: ``internal_batch_size`` of them run together.
    """

    name = "scorecam"
    label = "Score-CAM"

    def channel_weights(self, activations, gradients, inputs, targets):
        masks = F.interpolate(activations, size=inputs.shape[-2:], mode="bilinear",
                              align_corners=True)
        flat = masks.flatten(2)
        low, high = flat.amin(2)[..., None, None], flat.amax(2)[..., None, None]
        masks = (masks - low) / (high - low + 1e-8)
        scores = self._channel_scores(
            inputs, targets, activations.shape[1],
            lambda image, channel: self.model(inputs[image] * masks[image, channel][:, None]))
        return torch.softmax(scores, dim=1)[..., None, None]


@register_method
class AblationCAM(_PerturbationCAM):
    """Ablation-CAM (Desai & Ramaswamy 2020): W_k = (y_c − y_c^(k)) / y_c, where y_c^(k) is the
    target logit with channel k of the target layer set to zero (the paper's ablation; for the
    non-negative layers used here pytorch-grad-cam ablates the same way).

    Only the layers after the target layer see the ablation: where the model card declares
    that part (``ModelCard.head``, for its CAM layer), the ablated activations run through it
    alone (for EfficientNet-Lite0: pooling and the classifier, instead of 1,280 full forwards);
    otherwise each ablation is a full forward with the layer's output replaced.
    """

    name = "ablationcam"
    label = "Ablation-CAM"

    def head(self) -> Callable[[Tensor], Tensor] | None:
        """The network after the target layer, when the card declares it for this layer."""
        card = self.card
        if card is None or card.head is None or self.layer is not card.module(card.cam_layer):
            return None
        return lambda activations: card.head(self.model, activations)

    def passes(self) -> Passes:
        if self.head() is None:  # the capture, the clean logits, one forward per channel
            return Passes(0, 2 + self._channels())
        return Passes(0, 1, head=1 + self._channels())

    def channel_weights(self, activations, gradients, inputs, targets):
        head = self.head()
        with torch.no_grad():
            clean = self.model(inputs) if head is None else head(activations)
            original = target_logits(clean, targets)[:, None]  # (B, 1)

        def ablated(image: Tensor, channel: Tensor) -> Tensor:
            replacement = activations[image].clone()
            replacement[torch.arange(len(image), device=replacement.device), channel] = 0.0
            if head is not None:
                return head(replacement)
            handle = self.layer.register_forward_hook(lambda m, i, o: replacement)
            try:
                return self.model(inputs[image])
            finally:
                handle.remove()

        scores = self._channel_scores(inputs, targets, activations.shape[1], ablated)
        return ((original - scores) / original)[..., None, None]


@register_method
class GuidedGradCAM(Attribution):
    """Guided Backprop ⊙ Grad-CAM bilinearly upsampled to the input (Selvaraju et al. 2017)."""

    name = "guided_gradcam"
    label = "Guided Grad-CAM"

    def __init__(self, model: ModelLike, *, layer: str | nn.Module | None = None,
                 internal_batch_size: int = DEFAULT_INTERNAL_BATCH):
        super().__init__(model)
        self.gradcam = GradCAM(model, layer=layer, internal_batch_size=internal_batch_size)
        self.guided = GuidedBackprop(model, internal_batch_size=internal_batch_size)

    def passes(self) -> Passes:
        return Passes(2)

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        cam = F.interpolate(self.gradcam._attribute(inputs, targets), size=inputs.shape[-2:],
                            mode="bilinear", align_corners=False)
        return self.guided._attribute(inputs, targets) * cam
