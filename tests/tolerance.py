"""Tolerances for comparing float results, derived from the dtype and the magnitude compared.

The same computation through other kernels (the CPU's vector width, oneDNN's and MKL's code
paths, the batch shape, the summation order) rounds differently. One rounding errs by at most
u = eps/2 of the value rounded, and a sum of n terms in any order is within (n − 1)·u·Σ|terms| of
the exact sum (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §4.2): two
orders differ by less than n·eps·Σ|terms|. :func:`atol` is that bound, with the largest
magnitude compared standing in for Σ|terms|::

    atol = ops · eps(dtype) · scale

- ``ops``: the rounded operations accumulated into one compared value. Through a network it is
  :func:`network_ops`: the fan-ins of the layers summed (a value's error is the sum of what each
  layer adds), backward passes included for gradients. The bound is the worst case; typical
  errors grow like √ops, and the margin covers what the layers' conditioning amplifies.
- ``scale``: max |reference|, or, for a difference that should be 0, the magnitude of the
  operands whose difference it is (a relative error of 0 means nothing).
- ``eps``: of the precision the computation ran in: float32 for a model, even where a metric
  returns float64.

Exact comparisons stay exact only where exactness is guaranteed (integers; the same code path on
the same inputs), and each says why.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

FLOAT32 = torch.float32
FLOAT64 = torch.float64


def _eps(dtype) -> float:
    if isinstance(dtype, torch.dtype):
        return float(torch.finfo(dtype).eps)
    return float(np.finfo(dtype).eps)


def _float64(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _coarser_dtype(*values):
    """The float dtype with the larger eps among ``values``' own (float64 for Python floats)."""
    dtypes = [v.dtype for v in values if isinstance(v, (torch.Tensor, np.ndarray))
              and (v.dtype.is_floating_point if isinstance(v, torch.Tensor)
                   else np.issubdtype(v.dtype, np.floating))]
    return max(dtypes, key=_eps, default=np.float64)


def atol(scale, *, ops: int, dtype=None) -> float:
    """``ops · eps(dtype) · max|scale|``; ``dtype`` defaults to ``scale``'s own float dtype."""
    if ops < 1:
        raise ValueError(f"ops counts accumulated roundings: at least 1, got {ops}")
    magnitude = float(np.nanmax(np.abs(_float64(scale)), initial=0.0))
    return ops * _eps(dtype if dtype is not None else _coarser_dtype(scale)) * magnitude


def assert_within(actual, expected, bound, note: str = "") -> None:
    """|actual − expected| ≤ ``bound`` element-wise (``bound`` broadcasts: a number, or one per
    value); NaN only where ``expected`` is NaN."""
    actual, expected = np.broadcast_arrays(_float64(actual), _float64(expected))
    bound = np.broadcast_to(_float64(bound), actual.shape)
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), \
        f"NaN at other places: actual {np.argwhere(np.isnan(actual)).tolist()}, expected " \
        f"{np.argwhere(np.isnan(expected)).tolist()}"
    excess = np.where(np.isnan(expected), -np.inf, np.abs(actual - expected) - bound)
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else ()
    assert not excess.size or excess[worst] <= 0, (
        f"{int((excess > 0).sum())} of {excess.size} values differ by more than the bound; "
        f"worst at {tuple(int(i) for i in worst)}: {actual[worst]!r} vs {expected[worst]!r}, "
        f"|difference| {abs(actual[worst] - expected[worst]):.3g} > bound {bound[worst]:.3g}. {note}")


def assert_close(actual, expected, *, ops: int, dtype=None, scale=None) -> None:
    """|actual − expected| ≤ :func:`atol` element-wise (NaN only where ``expected`` is NaN).

    ``dtype``: the precision the values were computed in (default: the coarser of the two
    operands' dtypes); ``scale``: what sets the magnitude (default: ``expected``).
    """
    dtype = dtype if dtype is not None else _coarser_dtype(actual, expected)
    scale = expected if scale is None else scale
    tolerance = atol(scale, ops=ops, dtype=dtype)
    magnitude = float(np.nanmax(np.abs(_float64(scale)), initial=0.0))
    assert_within(actual, expected, tolerance,
                  f"(bound = {ops} ops · eps({dtype}) · {magnitude:.3g})")


def assert_differs(actual, other, tolerance: float) -> None:
    """``actual`` and ``other`` differ somewhere by more than ``tolerance`` (an :func:`atol`): a
    real change, not a reordered sum."""
    largest = float(np.nanmax(np.abs(_float64(actual) - _float64(other)), initial=0.0))
    assert largest > tolerance, f"the largest difference {largest:.3g} is within rounding ({tolerance:.3g})"


def network_ops(model: nn.Module, *, backward: bool = True) -> int:
    """Roundings one value accumulates through ``model``: the fan-in of every conv and linear
    layer (the terms one output sums), plus with ``backward`` the fan-out (the terms one input
    gradient sums)."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            taps = math.prod(module.kernel_size)
            total += module.in_channels // module.groups * taps
            total += module.out_channels // module.groups * taps if backward else 0
        elif isinstance(module, nn.Linear):
            total += module.in_features + (module.out_features if backward else 0)
    return total
