"""ParchGrad (Park, Jeon, Choi 2023): partitioned channel gradients, reconstructed from the
authors' code (paper_notes/parchgrad.md).

During the backward pass, the gradient g (C, H, W) arriving at each hooked conv's output is
split by channel into H (class-relevant, from the channel statistics) and L (the rest), with
S_H = Σ_{c∈H} g_c, S_L = Σ_{c∈L} g_c, M = Var_hw(S_H), N = Var_hw(S_L):

- γ = ∞ (the authors' only path): g_L ← 0 and g_H ← β g_H with β = √((M + N)/M) under
  variance conservation (VC), so Var(S_H') = M + N; β = 1 without VC ("zero pruning").
- finite γ (implemented correctly; the authors' branch raises NameError): γ̂ = γ√(N/M),
  β = √((M + N)/(M γ̂² + N)); g_H ← γ̂β g_H, g_L ← β g_L, so Var(S_H')/Var(S_L') = γ² and
  Var(S_H') + Var(S_L') = M + N.

Nothing changes for a sample whose H or L is empty. The base method (Gradient, Gradient⊙Input,
IG, SmoothGrad …) then runs unchanged with the hooks active; the hooks stay registered until
after the backward pass (the authors removed them before it, relying on PyTorch internals).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from replication.attribution._base import (Attribution, ModelLike, Passes, choice, create_method,
                                           current_targets, register_method)
from replication.attribution._gradient import ENGINE_RULES
from replication.attribution.channel_statistics import ChannelStatistics, LayerStatistics
from replication.errors import ConfigError

EPS = 1e-13  # the authors' ε in M and N
COMPOSABLE = ("gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "smoothgrad_sq",
              "vargrad", "ig_smoothgrad", "guided_backprop")


def select_channels(log_p: Tensor, channel_portion: float | None, alpha: float | None,
                    shapiro_p: Tensor | None, shapiro_threshold: float | None) -> Tensor:
    """H masks (n, C) from per-sample log p-values (n, C).

    With a channel portion q the threshold is the k-th smallest p, k = max(1, int(C·q)), and
    every channel with p ≤ threshold is kept: ties (the authors' float32 zeros) keep more than k.
    With ``alpha`` the threshold is log α. The Shapiro filter keeps channels with p < threshold.
    """
    if channel_portion is not None:
        k = max(1, int(log_p.shape[1] * channel_portion))
        threshold = log_p.kthvalue(k, dim=1, keepdim=True).values
    else:
        threshold = torch.full_like(log_p[:, :1], math.log(alpha) if alpha > 0 else -math.inf)
    selected = log_p <= threshold
    if shapiro_threshold is not None and shapiro_p is not None:
        selected &= (shapiro_p.to(log_p.device) < shapiro_threshold)[None, :]
    return selected


def partition_gradient(grad: Tensor, high: Tensor, *, gamma: float = math.inf,
                       variance_conservation: bool = True, spatial_1x1: str = "energy",
                       finite_gamma_rescale: str = "sqrt") -> Tensor:
    """The ParchGrad modification of an output gradient (B, C, H, W) given H masks (B, C)."""
    h = high.to(grad.dtype)[:, :, None, None]
    low = 1.0 - h
    s_high, s_low = (grad * h).sum(1).flatten(1), (grad * low).sum(1).flatten(1)
    if s_high.shape[1] > 1:
        m, n = s_high.var(1) + EPS, s_low.var(1) + EPS
    elif spatial_1x1 == "authors_abs":  # the authors' |S| on 1×1 maps
        m, n = s_high[:, 0].abs() + EPS, s_low[:, 0].abs() + EPS
    else:  # energy: the natural 1×1 analogue of a variance
        m, n = s_high[:, 0] ** 2 + EPS, s_low[:, 0] ** 2 + EPS
    if math.isinf(gamma):
        scale_high = torch.sqrt((m + n) / m) if variance_conservation else torch.ones_like(m)
        scale_low = torch.zeros_like(m)
    else:
        gamma_hat = gamma * torch.sqrt(n / m)
        if not variance_conservation:
            scale_high, scale_low = gamma_hat, torch.ones_like(m)
        elif finite_gamma_rescale == "sqrt":
            beta = torch.sqrt((m + n) / (m * gamma_hat ** 2 + n))
            scale_high, scale_low = gamma_hat * beta, beta
        else:  # the authors' exact_variance: a variance ratio, not its square root
            before = (s_high + s_low).var(1) if s_high.shape[1] > 1 else (s_high + s_low)[:, 0] ** 2
            after = ((gamma_hat[:, None] * s_high + s_low).var(1) if s_high.shape[1] > 1
                     else (gamma_hat * s_high[:, 0] + s_low[:, 0]) ** 2)
            beta = before / (after + EPS)
            scale_high, scale_low = gamma_hat * beta, beta
    active = (high.any(1) & (~high).any(1)).to(grad.dtype)
    scale_high = active * scale_high + (1 - active)
    scale_low = active * scale_low + (1 - active)
    return grad * (h * scale_high.view(-1, 1, 1, 1) + low * scale_low.view(-1, 1, 1, 1))


@register_method
class ParchGrad(Attribution):
    """A base gradient method with ParchGrad's channel-partitioning hooks on chosen convs.

    Defaults follow the authors' experiments: class-wise statistics, channel portion q = 0.1,
    γ = ∞, variance conservation, the Shapiro filter at 0.05 where the statistics carry it.
    Options reproducing documented authors' behaviour: ``spatial_1x1="authors_abs"``,
    ``finite_gamma_rescale="authors_variance_ratio"``; the statistics bug and float32 ties are
    options of the statistics stage.
    """

    name = "parchgrad"
    label = "ParchGrad"

    def __init__(self, model: ModelLike, *, statistics: ChannelStatistics | str | os.PathLike,
                 base: str = "gradient", base_params: dict | None = None,
                 convs: list[str] | None = None, channel_portion: float | None = 0.1,
                 alpha: float | None = None, shapiro_threshold: float | None = 0.05,
                 variance_conservation: bool = True, gamma: float = math.inf,
                 spatial_1x1: str = "energy", finite_gamma_rescale: str = "sqrt"):
        super().__init__(model)
        choice(self.name, "base", base, COMPOSABLE)
        if base in ("integrated_gradients",) and (base_params or {}).get(
                "integration", "authors_riemann") not in ENGINE_RULES:
            raise ConfigError(f"parchgrad composes with integrated_gradients only under the "
                              f"integrations {list(ENGINE_RULES)} (Captum's rules bypass the "
                              "engine's gradient core, which tells the hooks each sample's class)")
        self.base = create_method(base, model, **dict(base_params or {}))
        self.statistics = (statistics if isinstance(statistics, ChannelStatistics)
                           else ChannelStatistics.load(statistics))
        if convs is None:
            if self.card is None or not self.card.parchgrad_convs:
                raise ConfigError("parchgrad needs the convs to hook: pass convs=[...] or a "
                                  "ModelCard that declares parchgrad_convs")
            convs = list(self.card.parchgrad_convs)
        self.convs = {name: self._conv(name) for name in convs}
        if (channel_portion is None) == (alpha is None):
            raise ConfigError("parchgrad: give exactly one of channel_portion (q) and alpha")
        if channel_portion is not None and not 0 < channel_portion <= 1:
            raise ConfigError(f"parchgrad: channel_portion must be in (0, 1], got {channel_portion}")
        self.channel_portion, self.alpha = channel_portion, alpha
        self.shapiro_threshold = shapiro_threshold
        self.variance_conservation = bool(variance_conservation)
        if not gamma > 0:
            raise ConfigError(f"parchgrad: gamma must be positive (math.inf for pruning), got {gamma}")
        self.gamma = float(gamma)
        self.spatial_1x1 = choice(self.name, "spatial_1x1", spatial_1x1, ("energy", "authors_abs"))
        self.finite_gamma_rescale = choice(self.name, "finite_gamma_rescale", finite_gamma_rescale,
                                           ("sqrt", "authors_variance_ratio"))

    def _conv(self, name: str) -> nn.Conv2d:
        try:
            conv = self.model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"parchgrad: the model has no module {name!r}") from None
        if not isinstance(conv, nn.Conv2d):
            raise ConfigError(f"parchgrad hooks convolutions; {name} is a {type(conv).__name__}")
        layer = self.statistics.layer(name)
        if layer.channels != conv.out_channels:
            raise ConfigError(f"parchgrad: the statistics of {name} cover {layer.channels} "
                              f"channels, the conv has {conv.out_channels}: they were computed "
                              "for another model")
        return conv

    def passes(self) -> Passes:
        return self.base.passes()

    def samples_per_image(self) -> int:
        return self.base.samples_per_image()

    def log_pvalues(self, conv: str, output: Tensor) -> Tensor:
        """Per-sample log p-values (n, C) that select H for ``conv``'s ``output`` (the forward
        batch whose output is hooked; class mode reads that forward's targets)."""
        return self._log_p(self.statistics.layer(conv), output)

    def _log_p(self, layer: LayerStatistics, output: Tensor) -> Tensor:
        if self.statistics.mode == "instance":
            gap = torch.relu(output.detach()).mean((2, 3)).double()
            z = (gap - layer.gap_mean.to(gap)) / layer.gap_std.to(gap)
            return torch.special.log_ndtr(-z).nan_to_num(nan=0.0)  # zero spread: p = 1
        targets = current_targets()
        if targets is None:
            raise ConfigError("parchgrad's class-wise hooks need the target of every forward "
                              "sample; use a base method from the engine's gradient core")
        return layer.log_p.to(output.device)[:, targets].T

    def _hook(self, name: str):
        layer = self.statistics.layer(name)

        def forward_hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            if not output.requires_grad:
                return
            high = select_channels(self._log_p(layer, output), self.channel_portion, self.alpha,
                                   layer.shapiro_p, self.shapiro_threshold)
            output.register_hook(lambda grad: partition_gradient(
                grad, high, gamma=self.gamma, variance_conservation=self.variance_conservation,
                spatial_1x1=self.spatial_1x1, finite_gamma_rescale=self.finite_gamma_rescale))

        return forward_hook

    @contextlib.contextmanager
    def hooks(self) -> Iterator[None]:
        handles = [conv.register_forward_hook(self._hook(name)) for name, conv in self.convs.items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if self.statistics.mode == "class":  # the hooks index the statistics by target class
            classes = min(self.statistics.layer(name).log_p.shape[1] for name in self.convs)
            if len(targets) and int(targets.max()) >= classes:
                raise ValueError(f"parchgrad: target class {int(targets.max())} has no channel "
                                 f"statistics; the class statistics cover {classes} classes")
        with self.hooks():
            return self.base._attribute(inputs, targets)
