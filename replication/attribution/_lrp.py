"""Layer-wise Relevance Propagation through Zennit composites (Bach et al. 2015; Anders et al.).

The output relevance is the target logit (one-hot × logit), so Σ relevance ≈ y_c when the
rules conserve it. Batch norms are merged into the preceding convolution (Zennit canonizers):
VGG and ResNet by Zennit's torchvision canonizers, other models by pairing each batch norm with
the convolution registered just before it in the same parent module (timm's EfficientNet-Lite0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from replication.attribution._base import (DEFAULT_INTERNAL_BATCH, Attribution, ModelLike,
                                           _chunks, check_target_range, choice, forward_targets,
                                           positive_int, register_method)


def batchnorm_pairs(model: nn.Module) -> list[tuple[tuple[str], str]]:
    """(conv name,), batch-norm name for every batch norm that directly follows a conv."""
    pairs, previous = [], None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            previous = name
        elif isinstance(module, nn.BatchNorm2d) and previous is not None:
            if previous.rpartition(".")[0] == name.rpartition(".")[0]:
                pairs.append(((previous,), name))
            previous = None
    return pairs


@register_method
class LRP(Attribution):
    """LRP with a named Zennit composite (``epsilon_plus`` by default)."""

    name = "lrp"
    label = "LRP"

    def __init__(self, model: ModelLike, *, composite: str = "epsilon_plus",
                 internal_batch_size: int = DEFAULT_INTERNAL_BATCH):
        super().__init__(model)
        from zennit.composites import COMPOSITES

        self.composite = choice(self.name, "composite", composite, sorted(COMPOSITES))
        self.internal_batch_size = positive_int(self.name, "internal_batch_size", internal_batch_size)

    def _canonizers(self) -> list:
        from zennit.canonizers import NamedMergeBatchNorm
        from zennit.torchvision import ResNetCanonizer, VGGCanonizer

        name = self.card.name if self.card is not None else type(self.model).__name__.lower()
        if name.startswith("vgg"):
            return [VGGCanonizer()]
        if name.startswith("resnet"):
            return [ResNetCanonizer()]
        pairs = batchnorm_pairs(self.model)
        return [NamedMergeBatchNorm(pairs)] if pairs else []

    def _composite(self, inputs: Tensor):
        from zennit.composites import COMPOSITES

        kwargs = {"canonizers": self._canonizers()}
        if self.composite == "epsilon_gamma_box":
            if self.card is None:
                low, high = inputs.amin(), inputs.amax()
            else:
                p = self.card.preprocessing
                low, high = (p.normalize(torch.full_like(inputs[:1], v)) for v in (0.0, 1.0))
            kwargs.update(low=low.expand_as(inputs), high=high.expand_as(inputs))
        return COMPOSITES[self.composite](**kwargs)

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        from zennit.attribution import Gradient as ZennitGradient

        classes = self._classes(inputs)
        check_target_range(targets, classes)
        relevance = torch.empty_like(inputs)
        for rows in _chunks(len(inputs), self.internal_batch_size):
            composite = self._composite(inputs[rows])  # box bounds take the chunk's shape
            onehot = torch.nn.functional.one_hot(targets[rows], classes).to(inputs.dtype)
            with torch.enable_grad(), forward_targets(targets[rows]), \
                    ZennitGradient(self.model, composite) as attributor:
                _, relevance[rows] = attributor(inputs[rows].detach().requires_grad_(True),
                                                lambda output: output * onehot)
        return relevance

    def _classes(self, inputs: Tensor) -> int:
        if self.card is not None:
            return self.card.num_classes
        with torch.no_grad():
            return int(self.model(inputs[:1]).shape[1])
