"""Efficient MPRT (eMPRT; Hedström et al. 2023, "Sanity Checks Revisited", Quantus
``EfficientMPRT``).

Beyond the Sanity Checks paper: instead of comparing maps layer by layer, the relative rise in
explanation complexity from the original to the fully randomised model, two model states only:

    score = (H(map of the randomised model) − H(map of the original)) / H(map of the original)

H is the discrete entropy (nats) of the histogram of one map's values in ``n_bins`` equal-width
bins between its minimum and maximum (Quantus ``discrete_entropy`` with its ``n_bins`` rule's
default, a fixed 100 bins). Maps are taken raw by default (Quantus: ``abs=False``,
``normalise=False``).

Direction: higher is better (``HIGHER_IS_BETTER``). An explanation that becomes much more
complex (closer to noise) once the model is randomised depends on the model's parameters;
a score near 0 means randomising the model left the explanation's complexity unchanged.

Differences from Quantus 0.6.0: NaN, not ±inf, where the original map's entropy is 0 (a map
of one value); NaN for a map with non-finite values (Quantus's histogram raises). Quantus's
other ``n_bins`` rules (Freedman–Diaconis, Scott, …) size the bins from a whole batch and use
``a_batch[0].ndim`` (the number of axes) as the sample size; they are not offered. Its
``compute_extra_scores`` (model-output entropies) are not computed.

The engine explains 2 images per image (the original and the fully randomised model;
``explanations_per_image``), times the method's own passes (``Attribution.passes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
from torch import Tensor

from replication.randomization import RandomizationOptions
from replication.randomization.reinit import fully_randomized, stage_card
from replication.metrics._mprt import (QUANTUS_RANDOMIZATION, Blocks, MapForm, Targets,
                                       check_call, check_targets, explain_chunks,
                                       on_model_device, positive_int, processed,
                                       randomization_card, stage_targets)
from replication.models.base import ModelCard

HIGHER_IS_BETTER: Final = True
BETTER: Final = ("higher: the explanation's complexity rises more when the model's parameters "
                 "are randomised, so the explanation depends on them")
N_BINS: Final = 100  # Quantus find_n_bins without a rule: n_bins_default

__all__ = ["BETTER", "HIGHER_IS_BETTER", "N_BINS", "QUANTUS_RANDOMIZATION", "EfficientMPRTResult",
           "discrete_entropy", "efficient_mprt"]


@dataclass(frozen=True)
class EfficientMPRTResult:
    """Per image: the entropy of the original model's map and of the fully randomised model's,
    and ``scores``, the relative rise. ``randomized`` lists the blocks randomised."""

    original_complexity: np.ndarray
    randomized_complexity: np.ndarray
    randomized: tuple[str, ...]
    n_bins: int
    explanations_per_image: int = 2
    higher_is_better: ClassVar[bool] = HIGHER_IS_BETTER

    @property
    def scores(self) -> np.ndarray:
        """(B,) (H_randomised − H_original) / H_original; NaN where H_original is 0."""
        with np.errstate(divide="ignore", invalid="ignore"):
            before, after = self.original_complexity, self.randomized_complexity
            rise = (after - before) / before
        return np.where(before == 0, np.nan, rise)


def discrete_entropy(rows: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """(B,) Shannon entropy (nats) of each row's histogram in ``n_bins`` equal-width bins over
    [row min, row max] (``numpy.histogram`` bins, in the row's dtype); NaN for a row with
    non-finite values. A constant row fills one bin: entropy 0."""
    positive_int("n_bins", n_bins)
    rows = np.asarray(rows)
    entropies = np.full(len(rows), np.nan)
    for i, row in enumerate(rows.reshape(len(rows), -1)):
        if not np.isfinite(row).all():
            continue
        counts, _ = np.histogram(row, bins=n_bins)
        p = counts[counts > 0] / counts.sum()
        entropies[i] = -np.sum(p * np.log(p))
    return entropies


def efficient_mprt(card: ModelCard, images: Tensor, targets: Targets, method: str, *,
                   method_params: Mapping[str, Any] | None = None, n_bins: int = N_BINS,
                   absolute: bool = False, normalise: bool = False,
                   randomization: RandomizationOptions | None = None, blocks: Blocks = "card",
                   batch_size: int = 16, maps: MapForm = "raw") -> EfficientMPRTResult:
    """Efficient MPRT of ``method`` (engine name, ``method_params``) on ``card`` for ``images``
    (B, C, H, W) in model-input space.

    ``targets``: class indices explained by both models (Quantus), or ``"predicted"``: each
    model's own top class. ``blocks``/``randomization``: which blocks are re-drawn and how (as
    ``smooth_mprt``; every block is randomised, so the layer order does not matter;
    ``randomization=QUANTUS_RANDOMIZATION, blocks="modules"`` is Quantus's fully randomised
    model).
    ``absolute``/``normalise``: Quantus's ``abs``/``normalise`` (both off by default).
    ``maps``: the engine's raw maps (the default) or ``"input"``: one channel at the input's
    resolution, as ``quantus.explain`` returns them (``_mprt.input_maps``).
    """
    params = check_call(card, images, method, method_params, batch_size)
    check_targets(targets, len(images))
    positive_int("n_bins", n_bins)
    images = on_model_device(card, images)

    def complexity(state: ModelCard) -> np.ndarray:
        classes = stage_targets(state.model, images, targets)
        explained = explain_chunks(state, method, params, images, classes, batch_size,
                                   maps=maps)
        return discrete_entropy(processed(explained, normalise, absolute), n_bins)

    original = complexity(card)
    ordered = randomization_card(card, blocks, "top_down")
    stage = fully_randomized(ordered, randomization)
    return EfficientMPRTResult(original, complexity(stage_card(ordered, stage)),
                               stage.randomized, n_bins)
