"""What every model declares in one place: preprocessing, randomization blocks, CAM layer, hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Preprocessing:
    """How a raw image becomes the model's input tensor.

    ``resize`` is the shorter side before the centre crop of ``input_size`` (ImageNet), or
    ``None`` for inputs used as they are (MNIST pixels in [0, 1]).
    """

    input_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None
    interpolation: str = "bilinear"
    squash: bool = False  # resize to resize×resize ignoring aspect ratio, no crop (the authors')

    def transform(self):
        """torchvision transform from a PIL image to a normalised tensor."""
        from torchvision import transforms as T

        steps = []
        if self.resize is not None:
            mode = T.InterpolationMode(self.interpolation)
            if self.squash:
                steps += [T.Resize((self.resize, self.resize), interpolation=mode)]
            else:
                steps += [T.Resize(self.resize, interpolation=mode), T.CenterCrop(self.input_size)]
        steps += [T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose(steps)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] (N, C, H, W) to model-input space."""
        mean = torch.tensor(self.mean, device=pixels.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, -1, 1, 1)
        return (pixels - mean) / std

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=inputs.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=inputs.device).view(1, -1, 1, 1)
        return inputs * std + mean

    @property
    def input_range(self) -> tuple[float, float]:
        """Smallest and largest model input a [0, 1] pixel can map to."""
        low = min((0 - m) / s for m, s in zip(self.mean, self.std))
        high = max((1 - m) / s for m, s in zip(self.mean, self.std))
        return low, high


@dataclass
class ModelCard:
    """A model with everything the experiments need to know about it.

    ``randomization_blocks`` run from the output down to the input, each a label (as in the
    papers' plots) and the module names re-initialised together at that stage.
    ``initializer`` names the ``replication.models.initializers`` entry that re-creates the
    layers' initial weights (the authors' randomization re-ran each variable's own initialiser).
    ``fixed_input_size``: the model takes only ``preprocessing.input_size`` square images (a
    flatten into a Linear layer); ImageNet models pool adaptively and take other sizes too.
    ``head(model, activations) -> logits`` is the rest of the network after ``cam_layer`` (a
    function of the model, so it follows the card's model through ``dataclasses.replace``):
    methods that perturb the CAM layer's output (Ablation-CAM) run only it; ``None`` where it is
    not declared, and they run full forwards.
    """

    name: str
    model: nn.Module
    preprocessing: Preprocessing
    randomization_blocks: list[tuple[str, list[str]]]
    cam_layer: str
    parchgrad_convs: list[str]
    num_classes: int
    initializer: str
    notes: dict[str, str] = field(default_factory=dict)
    fixed_input_size: bool = False
    head: Callable[[nn.Module, Tensor], Tensor] | None = None

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    @property
    def stand_in(self) -> bool:
        """Whether the weights are a seeded random stand-in for unavailable pretrained ones."""
        return bool(getattr(self.model, "stand_in", False))

    def check(self) -> "ModelCard":
        """Every declared module name exists (a typo fails here, not deep in an experiment), and
        so does the initialiser."""
        from replication.models.initializers import initializer  # it imports the model modules

        initializer(self.initializer)
        names = [self.cam_layer, *self.parchgrad_convs]
        names += [m for _, modules in self.randomization_blocks for m in modules]
        for name in names:
            self.model.get_submodule(name)
        for name in self.parchgrad_convs:
            if not isinstance(self.module(name), nn.Conv2d):
                raise TypeError(f"{self.name}: ParchGrad hook {name} is not a Conv2d")
        return self
