"""The small studies of the Sanity Checks paper that share the `sanity_toys` stage: the one-layer
network of Fig. 7 / 37A (``one_layer_net``), Fig. 19 and the linear identities of §5 (C17).

Fig. 19: similarity between x ⊙ u and x ⊙ v for random u, v (truncated normal and uniform) "as
noise increases"; the schedule is unknown (notes §12). Reading: u = location + s·z with z a
standard draw (N(0, 1) cut at ±2, or the uniform of the same variance). With ``location = 0``
(the plain reading) s cancels exactly: all four metrics are rank- or min–max-based, so scaling
both maps by s changes nothing, and with common draws across s (one stream per distribution)
every s gives identical rows. The similarity that remains comes from x alone (|x ⊙ u| shares
|x|, and x = 0 pixels tie). ``location = 1`` (a constant gradient plus noise) is the reading in
which the noise scale matters: similarity falls from 1 at s = 0 towards the location-0 values.

§5 / C17: on a random linear model f(x) = W x, Gradient = SmoothGrad = w and IG (zero
baseline) = Gradient⊙Input = w ⊙ x; the largest deviation of each is measured.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy.stats import truncnorm
from torch import Tensor

from replication.attribution import attribute
from replication.errors import ConfigError
from replication.experiments.common import mnist_set
from replication.experiments.sanity_checks.one_layer_net import (load_image, locality_check,
                                                                 one_layer_edge_study)
from replication.data.sanity_images import demo_images
from replication.experiments.sanity_checks.setups import curve_set
from replication.fileio import atomic_directory, write_npz, write_table
from replication.metrics.similarity import compare, summarize
from replication.models import create_model
from replication.models.initializers import TF_TRUNCATION, truncated_std_factor

FIG19_METRICS = ("spearman_abs", "spearman_diverging", "ssim", "hog")
NOISE_DISTRIBUTIONS = ("truncated_normal", "uniform")


def _standard_noise(distribution: str, shape: tuple[int, ...],
                    rng: np.random.Generator) -> np.ndarray:
    """Zero mean, the SD of N(0, 1) cut at ±2 (0.8796) for both distributions."""
    if distribution == "truncated_normal":
        return truncnorm.rvs(-TF_TRUNCATION, TF_TRUNCATION, size=shape, random_state=rng)
    bound = np.sqrt(3.0) * truncated_std_factor(TF_TRUNCATION)
    return rng.uniform(-bound, bound, shape)


def input_times_random(images: Tensor, scales: Sequence[float], seed: int,
                       location: float = 0.0, metrics: Sequence[str] = FIG19_METRICS,
                       distributions: Sequence[str] = NOISE_DISTRIBUTIONS,
                       **options: object) -> pd.DataFrame:
    """Fig. 19: similarity of x ⊙ u and x ⊙ v, u, v = location + s·z, z i.i.d. per pixel.

    ``images`` (N, C, H, W) in model-input space; s = 0 is allowed. z is N(0, 1) truncated at
    ±2 (TF's truncated normal, so u ~ N(location, s²) cut at ±2s) or the zero-mean uniform of
    the same variance. One stream per distribution, common to all s (the curves are smooth in
    s). ``options`` go to ``compare`` (for 28×28 maps: ``percentile=None``,
    ``pixels_per_cell=4``). Columns: distribution, location, scale, metric, mean, sd
    (population, over images), n, n_nan.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer; got {seed!r}")
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W); got {tuple(images.shape)}")
    scales = [float(s) for s in scales]
    if not scales or min(scales) < 0:
        raise ConfigError(f"scales must be a non-empty list of non-negative numbers; got {scales}")
    unknown = [d for d in distributions if d not in NOISE_DISTRIBUTIONS]
    if unknown:
        raise ConfigError(f"unknown noise distribution(s) {unknown}; choose from "
                          f"{list(NOISE_DISTRIBUTIONS)}")
    x = images.detach().to(device="cpu", dtype=torch.float64)
    rows = []
    for distribution in distributions:
        rng = np.random.default_rng([seed, zlib.crc32(distribution.encode())])
        z = torch.from_numpy(_standard_noise(distribution, (2, *x.shape), rng))
        for scale in scales:
            a, b = x * (location + scale * z[0]), x * (location + scale * z[1])
            for metric, values in compare(a, b, metrics, **options).items():
                s = summarize(values)
                rows.append({"distribution": distribution, "location": location, "scale": scale,
                             "metric": metric, "mean": s.mean, "sd": s.sd, "n": s.n,
                             "n_nan": s.n_nan})
    return pd.DataFrame(rows, columns=["distribution", "location", "scale", "metric", "mean", "sd",
                                       "n", "n_nan"])


def linear_identities(images: Tensor, seed: int) -> pd.DataFrame:
    """§5 / C17 on a random linear model f(x) = W x: Gradient = SmoothGrad = w and
    IG (zero baseline) = Gradient⊙Input = w ⊙ x; the largest deviation of each, measured."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(images[0].numel(), 10))
    targets = torch.arange(len(images)) % 10
    w = model[1].weight.detach()[targets].view_as(images)
    checks = {
        ("gradient", "w"): (attribute("gradient", model, images, targets), w),
        ("smoothgrad", "w"): (attribute("smoothgrad", model, images, targets, n_samples=10), w),
        ("integrated_gradients", "w ⊙ x"): (attribute("integrated_gradients", model, images,
                                                      targets, steps=10), w * images),
        ("input_x_gradient", "w ⊙ x"): (attribute("input_x_gradient", model, images, targets),
                                        w * images),
    }
    return pd.DataFrame([{"method": method, "expected": expected,
                          "max_abs_difference": float((maps - reference).abs().max()),
                          "scale": float(reference.abs().max())}
                         for (method, expected), (maps, reference) in checks.items()])


def run(ctx) -> None:
    """`sanity_toys`: Fig. 7/37 (one-layer sum-pooled conv net), Fig. 19 (input ⊙ random
    gradients) and the linear-model identities of §5 (claims C17, C18)."""
    section = ctx.settings("sanity_checks.toys")
    seed = ctx.settings("seed")
    folder = ctx.input("images")
    image = load_image(folder / "images" / demo_images(folder)["bird"])  # the paper's bird
    study = one_layer_edge_study(image, filter_seeds=range(section.filter_seeds), seed=seed)
    tables = {"edge_study": study.table, "locality": locality_check(image, seed=seed)}
    # Fig. 19's photos through the primary ImageNet model's preprocessing (no weights needed)
    card = create_model(ctx.settings("sanity_checks.imagenet.run_models")[0], pretrained=False)
    photos = curve_set(folder, card, section.imagenet_images).images
    digits = mnist_set(ctx.input("fashion_mnist"), section.fashion_images).images
    tables["input_times_random"] = _noise_study(photos, digits, section, seed)
    tables["linear_identities"] = linear_identities(digits, seed)
    with atomic_directory(ctx.output("out")) as folder:
        for name, table in tables.items():
            write_table(table, folder / f"{name}.csv")
    arrays = {f"{version}/{method}": value.astype(np.float32)
              for version, maps in study.maps.items() for method, value in maps.items()}
    write_npz(ctx.output("maps"), {**arrays, "image": study.image.astype(np.float32),
                                   "edges": study.edges.astype(np.float32)})


def _noise_study(photos: Tensor, digits: Tensor, section, seed: int) -> pd.DataFrame:
    """Fig. 19 on ImageNet photos and Fashion-MNIST images, for every noise location."""
    tables = []
    for location in section.noise_locations:
        for name, images, options in (("imagenet", photos, {}),
                                      ("fashion_mnist", digits, {"percentile": None,
                                                                 "pixels_per_cell": 4})):
            table = input_times_random(images, section.noise_scales, seed, location=location,
                                       **options)
            table.insert(0, "images", name)
            tables.append(table)
    return pd.concat(tables, ignore_index=True)


# --- figures -------------------------------------------------------------------------------------

def draw_input_times_random(context, noise: pd.DataFrame) -> plt.Figure:
    """Fig. 19: similarity of x ⊙ u and x ⊙ v against the noise scale, per metric and images."""
    fig, axes = plt.subplots(2, noise["metric"].nunique(), figsize=(11, 4.6), squeeze=False)
    for c, (metric, group) in enumerate(noise.groupby("metric", sort=False)):
        for r, (images, part) in enumerate(group.groupby("images", sort=False)):
            for (location, distribution), line in part.groupby(["location", "distribution"]):
                axes[r][c].errorbar(line["scale"], line["mean"], yerr=line["sd"], marker="o",
                                    ms=2.5, lw=1, capsize=2,
                                    label=f"{distribution}, mean {location:g}")
            axes[r][c].set_xscale("symlog", linthresh=0.1)
            axes[r][c].set_title(f"{images}: {metric}")
            axes[r][c].set_xlabel("noise scale s")
    axes[0][0].legend()
    fig.suptitle("Fig. 19 — similarity of x⊙u and x⊙v for random u, v = mean + s·z "
                 "(the paper's noise schedule is not published)", fontsize=8)
    fig.tight_layout()
    return fig
