"""ParchGrad's toy studies (``parchgrad_toys``): E1 and E7 (claims C1 and C13) and the variance
identity (C2), as tidy tables, and their figures.

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
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from replication import plotting
from replication.errors import ConfigError
from replication.experiments.parchgrad.display import Sources
from replication.experiments.parchgrad.loading import stage_metrics
from replication.experiments.parchgrad.settings import ToysSettings
from replication.fileio import atomic_directory, write_json, write_table

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


# --------------------------------------------------------------------------- the stage

def toy_tables(settings: ToysSettings) -> dict[str, pd.DataFrame]:
    """E1 (claim C1): the authors' seed under every reading, its vectors, and the seed sweep."""
    readings = list(settings.readings)
    sums = pd.concat([toy_sums(settings.toy_seed, r) for r in readings], ignore_index=True)
    vectors = pd.concat([toy_vectors(settings.toy_seed, r) for r in readings], ignore_index=True)
    sweep = toy_seed_sweep(range(settings.seeds), readings)
    return {"sums": sums, "vectors": vectors, "seed_sweep": sweep,
            "summary": toy_sweep_summary(sweep)}


def run(ctx) -> None:
    """E1 toy sums and seed sweep (C1), E7 checkerboard (C13), the variance identity (C2)."""
    settings = ctx.settings("parchgrad.toys")
    tables = toy_tables(settings)
    board, identity = settings.checkerboard, settings.variance_identity
    with atomic_directory(ctx.output("out")) as out:
        for name, frame in tables.items():
            write_table(frame, out / f"e1_toy_{name}.csv")
        write_table(checkerboard_table(board.strides, board.scales, board.seed, board.stride_on),
                    out / "e7_checkerboard.csv")
        write_table(variance_identity_table(range(identity.seeds), identity.gammas),
                    out / "c2_variance_identity.csv")
    write_json(ctx.output("metrics"), stage_metrics(
        ctx, models=False, summary=tables["summary"].to_dict(orient="records")))


# --------------------------------------------------------------------------- figures

def _draw_reading(ax: plt.Axes, vectors: pd.DataFrame, sums: pd.DataFrame, reading: str) -> None:
    colours = {"H": "tab:blue", "L": "tab:red", "total": "black"}
    own = vectors[vectors["reading"] == reading]
    for group in ("H", "L"):
        v = own[own["group"] == group]
        ax.quiver(np.zeros(len(v)), np.zeros(len(v)), v["dim1"], v["dim2"], angles="xy",
                  scale_units="xy", scale=1, color=colours[group], alpha=0.25, width=0.004)
    total = sums[sums["reading"] == reading].set_index("group")
    for group in ("H", "L", "total"):
        ax.quiver(0, 0, total.loc[group, "dim1"], total.loc[group, "dim2"], angles="xy",
                  scale_units="xy", scale=1, color=colours[group], width=0.012,
                  label=f"Σ_{group}" if group != "total" else "Σ_total")
    span = 1.1 * float(np.abs(total[["dim1", "dim2"]].to_numpy()).max())
    ax.set_xlim(-span, span)
    ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    ax.axline((0, 0), slope=1, color="grey", lw=0.6, ls=":")
    ax.set_title(f"{reading}, seed {int(total['seed'].iloc[0])}")
    ax.set_xlabel("dim 1")
    ax.legend(loc="lower right")


def draw_vector_sum(sources: Sources, out: Path) -> list[Path]:
    """E1: the vectors and sums of the authors' seed per reading; the sweep's angle histogram."""
    tables = sources.tables
    sums, sweep = tables["e1_toy_sums"], tables["e1_toy_seed_sweep"]
    readings = list(dict.fromkeys(sums["reading"]))
    fig, axes = plt.subplots(1, len(readings) + 1, figsize=(3.0 * (len(readings) + 1), 3.0))
    for ax, reading in zip(axes, readings):
        _draw_reading(ax, tables["e1_toy_vectors"], sums, reading)
    ax = axes[-1]
    for reading in readings:
        ax.hist(sweep.loc[sweep["reading"] == reading, "angle_total_to_h_deg"], bins=36,
                range=(0, 180), histtype="step", label=reading)
    ax.axvline(45, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("angle(Σ_total, Σ_H) [deg]; > 45°: L dominates")
    ax.set_ylabel("seeds")
    ax.set_title(f"{sweep['seed'].nunique()} seeds")
    ax.legend()
    fig.suptitle("E1: 10 H vs 100 L random 2-D gradients (toy; no model)", fontsize=8)
    return plotting.save_figure(fig, out / "e1_toy_vector_sum")


def draw_summary(sources: Sources, out: Path) -> list[Path]:
    return plotting.write_table(
        sources.tables["e1_toy_summary"], out / "e1_toy_summary",
        "E1: fraction of seeds whose total is dominated by L",
        "code_uniform is the authors' code (uniform draws); text_normal_std / text_normal_var "
        "read the page's N(0, 0.1) as a standard deviation / a variance. The authors' figure "
        "uses seed 21.")


def draw_checkerboard(sources: Sources, out: Path) -> list[Path]:
    """E7: max |input gradient| against the output-gradient scale k, per stride."""
    table = sources.tables["e7_checkerboard"]
    plotting.use_style()
    fig, ax = plt.subplots(figsize=(3.4, 2.6))
    for stride, group in table.groupby("stride"):
        ax.plot(group["k"], group["max_abs_grad"], marker="o", label=f"stride {stride}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("output-gradient scale k")
    ax.set_ylabel("max |input gradient|")
    ax.legend(fontsize=6)
    ax.set_title("E7: two-conv toy, 10×10 input (random init)")
    written = plotting.save_figure(fig, out / "e7_gradient_scale_checkerboard")
    written += plotting.write_table(
        table, out / "e7_gradient_scale_checkerboard",
        "E7: input-gradient scale vs output-gradient scale k",
        "relative_deviation = max|grad_k/k − grad_1| / max|grad_1|: 0 up to round-off means the "
        "pattern is unchanged and the scale linear (C13). Absolute values depend on the random "
        "initialisation (the authors: 3.68e-5 / 3.68e-1 / 3.68e+1 at stride 1).")
    return written
