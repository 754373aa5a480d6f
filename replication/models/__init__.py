"""Model zoo: every model with its preprocessing, randomization blocks, CAM layer and hooks."""

from replication.models.base import ModelCard, Preprocessing
from replication.models.hooksafe import make_hook_safe
from replication.models.imagenet import WeightsUnavailable
from replication.models.registry import available_models, create_model, register_model

__all__ = ["ModelCard", "Preprocessing", "WeightsUnavailable", "available_models",
           "create_model", "make_hook_safe", "register_model"]
