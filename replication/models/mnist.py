"""The papers' MNIST / Fashion-MNIST CNN and MLP (Sanity Checks App. B and the authors' code)."""

from __future__ import annotations

import math

import torch
from torch import nn

from replication.models.base import ModelCard, Preprocessing

# Pixels / 255 in [0, 1], no normalisation, as the authors trained.
MNIST_PREPROCESSING = Preprocessing(input_size=28, channels=1, mean=(0.0,), std=(1.0,))
INIT_SCHEMES = ("authors_code", "pytorch_default")
# init scheme -> the replication.models.initializers entry that re-creates it
INITIALIZERS = {"authors_code": "mnist_authors_code", "pytorch_default": "pytorch_default"}


class MnistCNN(nn.Module):
    """conv 5×5 32 (same) → ReLU → pool 2 → conv 5×5 64 → ReLU → pool 2 → FC 1024 → ReLU → FC 10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(7 * 7 * 64, 1024)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(x.flatten(1))))


class MnistMLP(nn.Module):
    """784 → 2500 → 1500 → 500 → 10 with ReLU."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc1, self.relu1 = nn.Linear(784, 2500), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(2500, 1500), nn.ReLU()
        self.fc3, self.relu3 = nn.Linear(1500, 500), nn.ReLU()
        self.fc4 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(x.flatten(1)))
        x = self.relu2(self.fc2(x))
        return self.fc4(self.relu3(self.fc3(x)))


def truncated_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """TensorFlow's truncated_normal: N(0, std²) redrawn outside ±2 std."""
    return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def authors_code_init(model: nn.Module, layer: nn.Module) -> tuple[float, float]:
    """(σ of the truncated-normal weights, constant bias) the authors' TF code gave ``layer``.

    CNN: σ = 0.1, bias 0.1; MLP: σ = 2/√fan_in (2/√n, not √(2/n)), bias 0. The paper text says
    σ = 0.01 for the re-init; the authors' code re-ran these initialisers (notes §2.3).
    """
    if isinstance(model, MnistMLP):
        return 2.0 / math.sqrt(layer.weight.shape[1]), 0.0
    return 0.1, 0.1


def initialise_layer(model: nn.Module, layer: nn.Module, scheme: str) -> None:
    """(Re-)initialise one Conv2d/Linear as the authors' TF code did (``authors_code_init``), or
    with PyTorch's defaults."""
    if scheme == "pytorch_default":
        layer.reset_parameters()
    elif scheme == "authors_code":
        std, bias = authors_code_init(model, layer)
        with torch.no_grad():
            truncated_normal_(layer.weight, std)
            layer.bias.fill_(bias)
    else:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {list(INIT_SCHEMES)}")


def initialise(model: nn.Module, scheme: str) -> nn.Module:
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            initialise_layer(model, layer, scheme)
    return model


def cnn_head(model: MnistCNN, activations: torch.Tensor) -> torch.Tensor:
    """The CNN after its CAM layer (``relu2``): pool, flatten, fc1, ReLU, fc2."""
    return model.fc2(model.relu3(model.fc1(model.pool2(activations).flatten(1))))


def mlp_head(model: MnistMLP, activations: torch.Tensor) -> torch.Tensor:
    """The MLP after its CAM layer (``relu3``): the logits layer."""
    return model.fc4(activations)


def mnist_cnn(init: str = "authors_code", num_classes: int = 10) -> ModelCard:
    model = initialise(MnistCNN(num_classes), init)
    blocks = [(name, [name]) for name in ("fc2", "fc1", "conv2", "conv1")]
    return ModelCard(
        name="mnist_cnn", model=model, preprocessing=MNIST_PREPROCESSING,
        randomization_blocks=blocks, cam_layer="relu2", parchgrad_convs=["conv1", "conv2"],
        num_classes=num_classes, initializer=INITIALIZERS[init], fixed_input_size=True,
        head=cnn_head,
        notes={"paper_names": "fc2=softmax_linear, fc1=fc1, conv2=hidden2, conv1=hidden1",
               "cam_layer": "ReLU(conv2) before pooling, 14×14×64, as the authors' code"},
    ).check()


def mnist_mlp(init: str = "authors_code", num_classes: int = 10) -> ModelCard:
    model = initialise(MnistMLP(num_classes), init)
    blocks = [(name, [name]) for name in ("fc4", "fc3", "fc2", "fc1")]
    return ModelCard(
        name="mnist_mlp", model=model, preprocessing=MNIST_PREPROCESSING,
        randomization_blocks=blocks, cam_layer="relu3", parchgrad_convs=[],
        num_classes=num_classes, initializer=INITIALIZERS[init], fixed_input_size=True,
        head=mlp_head,
        notes={"paper_names": "fc4=logits, fc3=hidden3, fc2=hidden2, fc1=hidden1",
               "cam_layer": "an MLP has no conv layer: the papers show no Grad-CAM for it"},
    ).check()
