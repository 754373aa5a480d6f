"""ParchGrad's two toy studies, as tidy tables (notes §2 E1 and E7, claims C1 and C13).

E1: 10 "H" vs 100 "L" random 2-D gradients. Does the sum of many small L vectors dominate the
direction of the total? Three readings of the distributions:

- ``code_uniform`` (the authors' code): U(-M/2, M/2) drawn as ``(rand() - 0.5)·M`` with numpy's
  legacy RandomState, M = 0.1 (dim 1) and 1.0 (dim 2) for H, 0.1 for both dims of L. The draw
  order (H dim 1, H dim 2, L dim 1, L dim 2, each a block of n) is pinned by the notes'
  seed-21 sums, which no other plausible order reproduces;
- ``text_normal_std`` (the page): N(0, 0.1) / N(0, 1.0) with 0.1 and 1.0 read as standard
  deviations, same draw order with ``randn``;
- ``text_normal_var``: the same numbers read as variances (std √0.1 and 1.0).

E7: two convs (1→64→12 channels, 7×7, padding 3, a ReLU between) on a 10×10 input; a fixed
random output gradient with channel c < 6 scaled by 2^-c·k and channels 6–11 zero. The input
gradient must scale exactly with k (the backward pass is linear in the output gradient once the
forward pass fixes the ReLU mask). Our reading: the stride (1, 2 or 3) applies to both convs
(``stride_on="both"``); ``"first"`` and ``"second"`` are offered because the notes do not say.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from replication.errors import ConfigError

# reading -> (distribution, H dim-1 scale, H dim-2 scale, L scale): uniform widths or stds.
READINGS: dict[str, tuple[str, float, float, float]] = {
    "code_uniform": ("uniform", 0.1, 1.0, 0.1),
    "text_normal_std": ("normal", 0.1, 1.0, 0.1),
    "text_normal_var": ("normal", float(np.sqrt(0.1)), 1.0, float(np.sqrt(0.1))),
}
AUTHORS_SEED = 21
N_HIGH, N_LOW = 10, 100
DOMINANCE_ANGLE_DEG = 45.0


def _reading(reading: str) -> tuple[str, float, float, float]:
    if reading not in READINGS:
        raise ConfigError(f"unknown toy reading {reading!r}; choose one of {list(READINGS)}")
    return READINGS[reading]


def _draw(seed: int, reading: str, n_high: int, n_low: int) -> tuple[np.ndarray, np.ndarray]:
    """H (n_high, 2) and L (n_low, 2) in the authors' draw order (see the module docstring)."""
    kind, high1, high2, low = _reading(reading)
    rng = np.random.RandomState(seed)  # the legacy stream of np.random.seed(seed)

    def draw(n: int, scale: float) -> np.ndarray:
        if kind == "uniform":
            return (rng.rand(n) - 0.5) * scale
        return rng.randn(n) * scale

    high = np.stack([draw(n_high, high1), draw(n_high, high2)], axis=1)
    low_vectors = np.stack([draw(n_low, low), draw(n_low, low)], axis=1)
    return high, low_vectors


def toy_vectors(seed: int, reading: str = "code_uniform", n_high: int = N_HIGH,
                n_low: int = N_LOW) -> pd.DataFrame:
    """The H and L vectors of one seed: columns seed, reading, group, index, dim1, dim2."""
    high, low = _draw(seed, reading, n_high, n_low)
    frames = [pd.DataFrame({"seed": seed, "reading": reading, "group": group,
                            "index": np.arange(len(vectors)),
                            "dim1": vectors[:, 0], "dim2": vectors[:, 1]})
              for group, vectors in (("H", high), ("L", low))]
    return pd.concat(frames, ignore_index=True)


def _angle_deg(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Unsigned angle between (rows of) u and v, in degrees (0–180)."""
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    dot = (u * v).sum(axis=-1)
    return np.degrees(np.abs(np.arctan2(cross, dot)))


def toy_sums(seed: int, reading: str = "code_uniform", n_high: int = N_HIGH,
             n_low: int = N_LOW) -> pd.DataFrame:
    """Σ_H, Σ_L and Σ_total of one seed: rows H, L, total with dim1, dim2, direction (degrees
    from dim 1) and the unsigned angle to Σ_H."""
    high, low = _draw(seed, reading, n_high, n_low)
    xy = np.stack([high.sum(axis=0), low.sum(axis=0), high.sum(axis=0) + low.sum(axis=0)])
    return pd.DataFrame({"seed": seed, "reading": reading, "group": ["H", "L", "total"],
                         "dim1": xy[:, 0], "dim2": xy[:, 1],
                         "direction_deg": np.degrees(np.arctan2(xy[:, 1], xy[:, 0])),
                         "angle_to_sum_h_deg": _angle_deg(xy, xy[0])})


def toy_seed_sweep(seeds: Iterable[int] = range(1000),
                   readings: Sequence[str] = tuple(READINGS), n_high: int = N_HIGH,
                   n_low: int = N_LOW) -> pd.DataFrame:
    """One row per (reading, seed): the three sums, the angle of Σ_total to Σ_H, whether L
    dominates (angle > 45°) and the angle of Σ_total to the (1, 1) diagonal."""
    seeds = list(seeds)
    frames = []
    for reading in readings:
        draws = [_draw(seed, reading, n_high, n_low) for seed in seeds]
        sum_h = np.array([high.sum(axis=0) for high, _ in draws]).reshape(-1, 2)
        sum_l = np.array([low.sum(axis=0) for _, low in draws]).reshape(-1, 2)
        total = sum_h + sum_l
        angle = _angle_deg(total, sum_h)
        frames.append(pd.DataFrame({
            "reading": reading, "seed": seeds,
            "sum_h_dim1": sum_h[:, 0], "sum_h_dim2": sum_h[:, 1],
            "sum_l_dim1": sum_l[:, 0], "sum_l_dim2": sum_l[:, 1],
            "total_dim1": total[:, 0], "total_dim2": total[:, 1],
            "angle_total_to_h_deg": angle, "l_dominated": angle > DOMINANCE_ANGLE_DEG,
            "angle_total_to_diagonal_deg": _angle_deg(total, np.array([1.0, 1.0])),
        }))
    return pd.concat(frames, ignore_index=True)


def toy_sweep_summary(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per reading: seeds, fraction of seeds dominated by L (claim C1), fraction whose total
    lies within 1° of the (1, 1) diagonal as the authors' seed 21, and the median angle."""
    grouped = sweep.groupby("reading", sort=False)
    return pd.DataFrame({
        "seeds": grouped.size(),
        "fraction_l_dominated": grouped["l_dominated"].mean(),
        "fraction_total_within_1deg_of_diagonal":
            grouped["angle_total_to_diagonal_deg"].apply(lambda a: float((a <= 1.0).mean())),
        "median_angle_total_to_h_deg": grouped["angle_total_to_h_deg"].median(),
    }).reset_index()


# --------------------------------------------------------------------------- E7 checkerboard

STRIDE_ON = ("both", "first", "second")
CHECKERBOARD_SCALES = (1e-4, 1.0, 100.0)
CHECKERBOARD_STRIDES = (1, 2, 3)


def checkerboard_network(stride: int, seed: int = 0, stride_on: str = "both") -> nn.Sequential:
    """conv 1→64 (7×7, padding 3) → ReLU → conv 64→12 (7×7, padding 3).

    PyTorch's default init under ``torch.manual_seed(seed)`` (the global generator is restored
    afterwards); ``stride`` on the convs named by ``stride_on``.
    """
    if stride_on not in STRIDE_ON:
        raise ConfigError(f"unknown stride_on {stride_on!r}; choose one of {list(STRIDE_ON)}")
    if stride < 1:
        raise ConfigError(f"stride must be a positive integer; got {stride}")
    first = stride if stride_on in ("both", "first") else 1
    second = stride if stride_on in ("both", "second") else 1
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return nn.Sequential(nn.Conv2d(1, 64, 7, stride=first, padding=3), nn.ReLU(),
                             nn.Conv2d(64, 12, 7, stride=second, padding=3))
    finally:
        torch.random.set_rng_state(generator_state)


def _output_gradient(shape: torch.Size, seed: int) -> torch.Tensor:
    """Fixed seeded random tensor; channel c < 6 scaled by 2^-c, channels 6–11 zero."""
    base = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    scale = torch.tensor([2.0 ** -c if c < 6 else 0.0 for c in range(shape[1])])
    return base * scale.view(1, -1, 1, 1)


def checkerboard_input_gradient(stride: int, k: float, seed: int = 0, input_size: int = 10,
                                stride_on: str = "both",
                                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """d(⟨output, G_k⟩)/d input (1, 1, size, size) for the scaled output gradient G_k."""
    network = checkerboard_network(stride, seed, stride_on).to(dtype)
    inputs = torch.randn(1, 1, input_size, input_size,
                         generator=torch.Generator().manual_seed(seed)).to(dtype)
    inputs.requires_grad_(True)
    output = network(inputs)
    grad = _output_gradient(output.shape, seed).to(dtype) * k
    (input_grad,) = torch.autograd.grad(output, inputs, grad_outputs=grad)
    return input_grad.detach()


def checkerboard_table(strides: Sequence[int] = CHECKERBOARD_STRIDES,
                       scales: Sequence[float] = CHECKERBOARD_SCALES, seed: int = 0,
                       stride_on: str = "both", dtype: torch.dtype = torch.float32,
                       ) -> pd.DataFrame:
    """max |input grad| per (stride, k), and the linearity check against k = 1.

    ``relative_deviation`` = max|grad_k / k − grad_1| / max|grad_1|: 0 up to float round-off
    when the pattern is identical and only the scale changes (claim C13).
    """
    rows = []
    for stride in strides:
        reference = checkerboard_input_gradient(stride, 1.0, seed, stride_on=stride_on,
                                                dtype=dtype)
        peak = float(reference.abs().max())
        for k in scales:
            grad = checkerboard_input_gradient(stride, k, seed, stride_on=stride_on, dtype=dtype)
            deviation = float((grad / k - reference).abs().max()) / peak
            rows.append({"stride": stride, "stride_on": stride_on, "k": k,
                         "max_abs_grad": float(grad.abs().max()),
                         "max_abs_grad_over_k": float(grad.abs().max()) / k,
                         "relative_deviation": deviation,
                         "dtype": str(dtype).removeprefix("torch.")})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- C2 variance identity

def variance_identity_table(seeds: Iterable[int] = range(10),
                            gammas: Sequence[float] = (float("inf"), 1.0, 2.0, 10.0),
                            channels: int = 16, size: int = 7, high_fraction: float = 0.25
                            ) -> pd.DataFrame:
    """The engine's ``partition_gradient`` against ParchGrad's identities (claim C2).

    Random float64 output gradients (1, C, size, size), H = a random ``high_fraction`` of the
    channels, variance conservation on. γ = ∞: Var(S_H') = M + N and g_L ≡ 0; finite γ:
    Var(S_H') / Var(S_L') = γ² and Var(S_H') + Var(S_L') = M + N (M, N the spatial variances of
    S_H and S_L before; the code's ε = 1e-13 is negligible here). Errors are relative.
    """
    from replication.attribution import partition_gradient

    rows = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        grad = torch.randn(1, channels, size, size, generator=generator, dtype=torch.float64)
        high = torch.zeros(1, channels, dtype=torch.bool)
        chosen = torch.randperm(channels, generator=generator)[:max(1, int(channels * high_fraction))]
        high[0, chosen] = True
        h = high[:, :, None, None].to(grad.dtype)
        m = (grad * h).sum(1).flatten(1).var(1).item()
        n = (grad * (1 - h)).sum(1).flatten(1).var(1).item()
        for gamma in gammas:
            out = partition_gradient(grad, high, gamma=float(gamma), variance_conservation=True)
            var_high = (out * h).sum(1).flatten(1).var(1).item()
            var_low = (out * (1 - h)).sum(1).flatten(1).var(1).item()
            infinite = np.isinf(gamma)
            rows.append({
                "seed": int(seed), "gamma": float(gamma), "M": m, "N": n,
                "var_high_after": var_high, "var_low_after": var_low,
                "sum_relative_error": abs(var_high + var_low - (m + n)) / (m + n),
                "ratio_relative_error": (float("nan") if infinite
                                         else abs(var_high / var_low - gamma ** 2) / gamma ** 2),
                "low_max_abs": float((out * (1 - h)).abs().max()),
            })
    return pd.DataFrame(rows)
