"""The initialisers that re-create each model's initial weights, for parameter randomization.

The authors' code randomised a block by re-running the initialiser of each of its trainable
variables (notes §4.2), so every ``ModelCard`` names the initialiser its layers were created
with (``ModelCard.initializer``):

============================  ==========================================================
``mnist_authors_code``        the authors' TF MNIST init (``mnist.authors_code_init``): CNN
                              truncated normal σ = 0.1, bias 0.1; MLP σ = 2/√fan_in, bias 0
``tf_variance_scaling``       TF-slim's ``variance_scaling_initializer()`` (Inception v3): truncated
                              normal σ = √(1.3·2/fan_in) cut at ±2σ, biases 0 (notes §4.2, §8)
``timm_efficientnet``         timm's ``_init_weight_goog``: conv N(0, 2/fan_out) with fan_out =
                              k·k·out/groups, linear U(±1/√out_features), biases 0
``torchvision_vgg``           conv kaiming normal (fan_out, ReLU), linear N(0, 0.01²), biases 0
``torchvision_resnet``        conv kaiming normal (fan_out, ReLU); ``fc`` keeps nn.Linear's default
``torchvision_efficientnet``  conv kaiming normal (fan_out), linear U(±1/√out_features), biases 0
``pytorch_default``           nn.Conv2d / nn.Linear defaults: weights and biases U(±1/√fan_in)
============================  ==========================================================

Batch norm is γ = 1, β = 0 in every family (TF-slim's Inception has no γ, ported as ones).
torchvision's fan_out is out_channels·k·k, groups ignored (torch's fan computation), unlike timm.

Distribution option: ``"truncated_normal"`` draws each layer's own distribution (a truncated normal
for the authors' TF models, whatever the family uses otherwise); ``"uniform"`` (the paper: "We
replicated these randomization for a uniform distribution") draws U(−√3·s, √3·s), where s is the
standard deviation of the layer's own distribution *after* truncation (s = 0.8796·σ for a normal
cut at ±2σ), so the variance is the same. Constant initialisers (biases, γ, β) stay constant.
For TF variance scaling this is U(±√(6.03/fan_in)), within 0.3 % of TF's own ``uniform=True``
limit √(6/fan_in).

Every random draw takes a ``torch.Generator`` and is made on the CPU, so a seed gives the same
weights on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from replication.errors import ConfigError
from replication.models import mnist

DrawKind = Literal["truncated_normal", "normal", "uniform", "constant"]
DISTRIBUTIONS = ("truncated_normal", "uniform")
TF_TRUNCATION = 2.0  # TF's truncated_normal re-draws values beyond 2σ


def truncated_std_factor(bound: float = TF_TRUNCATION) -> float:
    """SD of N(0, 1) truncated to [−bound, bound]: √(1 − 2bφ(b)/(2Φ(b) − 1)) (0.8796 for b = 2)."""
    phi = math.exp(-bound * bound / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))
    return math.sqrt(1.0 - 2.0 * bound * phi / mass)


@dataclass(frozen=True)
class Draw:
    """How one parameter tensor is drawn: ``scale`` is σ (normals, before truncation), the bound
    b of U(−b, b), or the constant value."""

    kind: DrawKind
    scale: float
    truncation: float = TF_TRUNCATION  # in units of σ, for "truncated_normal"

    @property
    def std(self) -> float:
        """Standard deviation of the values drawn (after truncation)."""
        if self.kind == "truncated_normal":
            return self.scale * truncated_std_factor(self.truncation)
        if self.kind == "normal":
            return self.scale
        if self.kind == "uniform":
            return self.scale / math.sqrt(3.0)
        return 0.0

    def with_distribution(self, distribution: str) -> "Draw":
        """The layer's own draw, or the zero-mean uniform of the same variance."""
        check_distribution(distribution)
        if distribution == "truncated_normal" or self.kind == "constant":
            return self
        return Draw("uniform", math.sqrt(3.0) * self.std)

    def fill_(self, tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Overwrite ``tensor`` in place (a constant consumes no random numbers)."""
        with torch.no_grad():
            if self.kind == "constant":
                return tensor.fill_(self.scale)
            # Drawn on the CPU in float32, so a seed gives the same weights on any device.
            values = torch.empty(tensor.shape, dtype=torch.float32)
            if self.kind == "truncated_normal":
                bound = self.truncation * self.scale
                nn.init.trunc_normal_(values, 0.0, self.scale, -bound, bound, generator=generator)
            elif self.kind == "normal":
                nn.init.normal_(values, 0.0, self.scale, generator=generator)
            else:
                nn.init.uniform_(values, -self.scale, self.scale, generator=generator)
            return tensor.copy_(values)


def constant(value: float) -> Draw:
    return Draw("constant", float(value))


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) as torch computes them: in/out channels × kernel area, groups ignored."""
    receptive = math.prod(weight.shape[2:]) if weight.ndim > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


Rule = Callable[[nn.Module, nn.Module], dict[str, Draw]]


@dataclass(frozen=True)
class Initializer:
    """A named initialiser: ``rule(model, module)`` gives the draw of each of ``module``'s own
    parameters (``{}`` for a module it does not know)."""

    name: str
    description: str
    rule: Rule

    def draws(self, model: nn.Module, module: nn.Module) -> dict[str, Draw]:
        return self.rule(model, module)


def _norm_layer(module: nn.Module) -> dict[str, Draw]:
    if isinstance(module, (_BatchNorm, nn.GroupNorm)) and module.weight is not None:
        return {"weight": constant(1.0), "bias": constant(0.0)}
    return {}


def _with_bias(module: nn.Module, weight: Draw, bias: Draw) -> dict[str, Draw]:
    draws = {"weight": weight}
    if getattr(module, "bias", None) is not None:
        draws["bias"] = bias
    return draws


def _mnist_authors_code(model: nn.Module, module: nn.Module) -> dict[str, Draw]:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        std, bias = mnist.authors_code_init(model, module)
        return _with_bias(module, Draw("truncated_normal", std), constant(bias))
    return _norm_layer(module)


def _tf_variance_scaling(model: nn.Module, module: nn.Module) -> dict[str, Draw]:
    # TF1 variance_scaling_initializer(factor=2, mode=FAN_IN, uniform=False): the 1.3 undoes the
    # variance lost to truncation at 2σ. The Logits layer is a 1×1 conv in TF-slim, torchvision's fc.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        fan_in, _ = fans(module.weight)
        return _with_bias(module, Draw("truncated_normal", math.sqrt(1.3 * 2.0 / fan_in)),
                          constant(0.0))
    return _norm_layer(module)


def _timm_efficientnet(model: nn.Module, module: nn.Module) -> dict[str, Draw]:
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        fan_out //= module.groups  # timm's fix_group_fanout=True (the TF TPU implementation)
        return _with_bias(module, Draw("normal", math.sqrt(2.0 / fan_out)), constant(0.0))
    if isinstance(module, nn.Linear):
        return _with_bias(module, Draw("uniform", 1.0 / math.sqrt(module.out_features)),
                          constant(0.0))
    return _norm_layer(module)


def _kaiming_fan_out(module: nn.Conv2d) -> Draw:
    _, fan_out = fans(module.weight)
    return Draw("normal", math.sqrt(2.0) / math.sqrt(fan_out))  # gain √2 (ReLU, leaky_relu a=0)


def _pytorch_default_layer(module: nn.Module) -> dict[str, Draw]:
    # kaiming_uniform_(a=√5) has bound gain·√(3/fan_in) = 1/√fan_in; the bias uses the same bound.
    fan_in, _ = fans(module.weight)
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return _with_bias(module, Draw("uniform", bound), Draw("uniform", bound))


def _torchvision_vgg(model: nn.Module, module: nn.Module) -> dict[str, Draw]:
    if isinstance(module, nn.Conv2d):
        return _with_bias(module, _kaiming_fan_out(module), constant(0.0))
    if isinstance(module, nn.Linear):
        return _with_bias(module, Draw("normal", 0.01), constant(0.0))
    return _norm_layer(module)


def _torchvision_resnet(model: nn.Module, module: nn.Module) -> dict[str, Draw]:
    if isinstance(module, nn.Conv2d):
        return _with_bias(module, _kaiming_fan_out(module), constant(0.0))
    if isinstance(module, nn.Linear):  # ResNet's init loop leaves fc at nn.Linear's default
        return _pytorch_default_layer(module)
    return _norm_layer(module)


def _torchvision_efficientnet(model: nn.Module, module: nn.Module) -> dict[str, Draw]:
    if isinstance(module, nn.Conv2d):
        return _with_bias(module, _kaiming_fan_out(module), constant(0.0))
    if isinstance(module, nn.Linear):
        return _with_bias(module, Draw("uniform", 1.0 / math.sqrt(module.out_features)),
                          constant(0.0))
    return _norm_layer(module)


def _pytorch_default(model: nn.Module, module: nn.Module) -> dict[str, Draw]:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return _pytorch_default_layer(module)
    return _norm_layer(module)


_INITIALIZERS: dict[str, Initializer] = {init.name: init for init in (
    Initializer("mnist_authors_code", "the authors' TF MNIST init: CNN truncated normal σ = 0.1, "
                "bias 0.1; MLP truncated normal σ = 2/√fan_in, bias 0", _mnist_authors_code),
    Initializer("tf_variance_scaling", "TF-slim variance_scaling_initializer(): truncated normal "
                "σ = √(2.6/fan_in) cut at ±2σ, biases 0, BN 1/0", _tf_variance_scaling),
    Initializer("timm_efficientnet", "timm _init_weight_goog: conv N(0, 2/fan_out), fan_out = "
                "k·k·out/groups; linear U(±1/√out); biases 0; BN 1/0", _timm_efficientnet),
    Initializer("torchvision_vgg", "torchvision VGG: conv kaiming normal fan_out; linear "
                "N(0, 0.01²); biases 0; BN 1/0", _torchvision_vgg),
    Initializer("torchvision_resnet", "torchvision ResNet: conv kaiming normal fan_out; BN 1/0; "
                "fc PyTorch default U(±1/√fan_in)", _torchvision_resnet),
    Initializer("torchvision_efficientnet", "torchvision EfficientNet: conv kaiming normal "
                "fan_out; linear U(±1/√out); biases 0; BN 1/0", _torchvision_efficientnet),
    Initializer("pytorch_default", "nn.Conv2d/nn.Linear defaults: weight and bias "
                "U(±1/√fan_in); BN 1/0", _pytorch_default),
)}


def available_initializers() -> list[str]:
    return sorted(_INITIALIZERS)


def initializer(name: str) -> Initializer:
    """The initialiser registered as ``name``."""
    if name not in _INITIALIZERS:
        raise ConfigError(f"unknown initializer {name!r}; choose one of "
                          f"{available_initializers()}")
    return _INITIALIZERS[name]


def check_distribution(distribution: str) -> str:
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"unknown re-initialisation distribution {distribution!r}; choose "
                          f"'truncated_normal' (each layer's own initialiser, the authors' code) "
                          f"or 'uniform' (same variance, the paper's alternative)")
    return distribution


def reinitialise(model: nn.Module, module: nn.Module, init: Initializer,
                 generator: torch.Generator, distribution: str = "truncated_normal") -> list[str]:
    """Re-draw ``module``'s own trainable parameters (not its children's, not its buffers).

    Returns the names of the parameters drawn. A parameter the initialiser has no rule for is
    an error rather than being silently left pretrained.
    """
    check_distribution(distribution)
    params = dict(module.named_parameters(recurse=False))
    if not params:
        return []
    draws = init.draws(model, module)
    missing = sorted(set(params) - set(draws))
    if missing:
        raise ConfigError(f"initializer {init.name!r} has no rule for {type(module).__name__} "
                          f"parameter(s) {missing}; add one in replication.models.initializers")
    for name, param in params.items():
        draws[name].with_distribution(distribution).fill_(param, generator)
    return list(params)
