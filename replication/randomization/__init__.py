"""Model-parameter randomization (Sanity Checks §4): which blocks of a model are re-initialised,
how, and in what order; used by the Sanity Checks experiments and by the repaired tests sMPRT and
eMPRT (``replication.metrics``).

This module holds the options only (light, so the settings schema can use them); the mechanism
that applies them is ``replication.randomization.reinit``.
"""

from __future__ import annotations

from typing import Literal, get_args

from replication.errors import ConfigError
from replication.settings import Seed, Settings, settings

BatchNorm = Literal["authors_code", "paper_text", "reset_parameters"]
Distribution = Literal["truncated_normal", "uniform"]
Draws = Literal["fresh", "nested", "quantus"]  # quantus: Quantus's MPRT generator
BATCHNORM_MODES, DISTRIBUTIONS, DRAW_MODES = get_args(BatchNorm), get_args(Distribution), \
    get_args(Draws)


@settings
class RandomizationOptions(Settings):
    """How blocks are re-initialised; the defaults are the authors' code (the options are
    described in ``replication.randomization.reinit``, the module that applies them)."""

    batchnorm: BatchNorm = "authors_code"
    distribution: Distribution = "truncated_normal"
    draws: Draws = "fresh"
    seed: Seed = 0  # the random weights' own seed: redraw them with the same images

    def __post_init__(self) -> None:  # also checks objects built in code, not from params
        if self.batchnorm not in BATCHNORM_MODES:
            raise ConfigError(f"unknown batchnorm option {self.batchnorm!r}; choose one of "
                              f"{list(BATCHNORM_MODES)} (authors_code is the authors' code)")
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(f"unknown re-initialisation distribution {self.distribution!r}; "
                              f"choose one of {list(DISTRIBUTIONS)}")
        if self.batchnorm == "reset_parameters" and self.distribution != "truncated_normal":
            raise ConfigError("batchnorm='reset_parameters' re-draws PyTorch's defaults (as "
                              "Quantus does); distribution='uniform' applies to authors_code and "
                              "paper_text only")
        if self.draws not in DRAW_MODES:
            raise ConfigError(f"unknown draws option {self.draws!r}; choose 'fresh' (the "
                              "authors' code), 'nested' or 'quantus'")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer; got {self.seed!r}")


__all__ = ["BATCHNORM_MODES", "DISTRIBUTIONS", "DRAW_MODES", "BatchNorm", "Distribution", "Draws",
           "RandomizationOptions"]
