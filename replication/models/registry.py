"""Models looked up by name (the names params.yaml uses)."""

from __future__ import annotations

from collections.abc import Callable

from replication.errors import ConfigError
from replication.models import imagenet, mnist
from replication.models.base import ModelCard

_FACTORIES: dict[str, Callable[..., ModelCard]] = {}


def register_model(name: str, factory: Callable[..., ModelCard]) -> None:
    if name in _FACTORIES:
        raise ValueError(f"model {name!r} is already registered")
    _FACTORIES[name] = factory


def available_models() -> list[str]:
    return sorted(_FACTORIES)


def create_model(name: str, **kwargs) -> ModelCard:
    """``create_model("efficientnet_lite0")``; keyword arguments go to the factory."""
    if name not in _FACTORIES:
        raise ConfigError(f"unknown model {name!r}; choose one of {available_models()}")
    return _FACTORIES[name](**kwargs)


for _factory in (mnist.mnist_cnn, mnist.mnist_mlp, imagenet.vgg16, imagenet.vgg16_bn,
                 imagenet.resnet18, imagenet.resnet50, imagenet.inception_v3,
                 imagenet.efficientnet_b0, imagenet.efficientnet_lite0,
                 imagenet.efficientnet_lite1, imagenet.efficientnet_lite2):
    register_model(_factory.__name__, _factory)
