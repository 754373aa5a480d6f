"""The one-layer network of Sanity Checks Fig. 7 / 37A (claim C18), as tidy tables and figures.

Fig. 7 / 37A, claim C18: a one-layer network, one random 3×3 filter (no bias) → ReLU → sum over
all positions, explained for its single logit by Gradient, SmoothGrad, Integrated Gradients
and Guided Backprop. "Look like edge maps" is measured as the Spearman correlation between each
|map| (channel-summed) and the Sobel edge map of the image, beside the same correlation for a
random Gaussian map. Two identities hold for this network and show in the numbers: Guided
Backprop equals the gradient (the gradient reaching the ReLU is the constant 1 > 0), and, the
network being positively homogeneous, IG from a zero baseline is (1 − 1/steps)·x ⊙ gradient
(the authors' Riemann sum includes α = 0, where every unit is inactive).

Locality: l = Σ_p ReLU(z_p), z_p = Σ_k w_k x_{p+k}, so ∂l/∂x_q = Σ_{p: |p − q|∞ ≤ 1} 1[z_p > 0]
w_{q − p}: the 3×3 ReLU activation pattern around q. Each of those z_p reads the 3×3 pixels
around p, so the gradient at q depends on the pixels of the 5×5 neighbourhood of q only, and
changing any pixel outside it leaves the gradient at q unchanged (exactly, in float64).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from skimage.filters import sobel
from torch import Tensor, nn

from replication.attribution import create_method, method_label
from replication.errors import ConfigError
from replication.metrics.similarity import summarize
from replication.plotting import ABS_CMAP, gallery

# The authors' settings (notes §3, §8 item 6): SmoothGrad σ = 0.15·(max − min), 50 samples;
# IG from a zero baseline in model-input space, 50 steps.
EDGE_METHODS: dict[str, dict[str, object]] = {
    "gradient": {},
    "smoothgrad": {"n_samples": 50, "noise_level": 0.15},
    "integrated_gradients": {"steps": 50, "baseline": "zeros"},
    "guided_backprop": {},
}
RANDOM_MAP = "random"
VERSIONS = ("rgb", "grayscale")
SCALINGS = ("inception", "unit")
LOCALITY_RADIUS = 2  # the 5×5 neighbourhood: the 3×3 windows of the 3×3 outputs touching q


class OneLayerConv(nn.Module):
    """Conv2d(C → 1, 3×3, padding 1, no bias) → ReLU module → sum over positions: one logit.

    The filter is N(0, 1), seeded; its scale does not matter (the ReLU pattern is invariant to
    a positive scale and the maps are compared by rank).
    """

    def __init__(self, channels: int, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 3, padding=1, bias=False, dtype=dtype)
        self.relu = nn.ReLU()
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator,
                                               dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x)).sum(dim=(1, 2, 3)).unsqueeze(1)


def load_image(path: str | os.PathLike, size: int = 299) -> np.ndarray:
    """An RGB image (H, W, 3) in [0, 1], resized to size × size without a crop (the authors'
    Inception preprocessing)."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.float64) / 255.0


def grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W) luminance of an (H, W, 3) image (ITU-R 601, as PIL's ``convert("L")``); a 2-D
    image is returned as it is."""
    if image.ndim == 2:
        return image
    return image @ np.array([0.299, 0.587, 0.114])


def model_input(image: np.ndarray, version: str = "rgb", scaling: str = "inception",
                dtype: torch.dtype = torch.float32) -> Tensor:
    """(1, C, H, W): ``"inception"`` is the authors' 2x − 1 in [−1, 1], ``"unit"`` pixels in [0, 1]."""
    if version not in VERSIONS:
        raise ConfigError(f"unknown image version {version!r}; choose one of {list(VERSIONS)}")
    if scaling not in SCALINGS:
        raise ConfigError(f"unknown input scaling {scaling!r}; choose one of {list(SCALINGS)}")
    pixels = grayscale(image)[None] if version == "grayscale" or image.ndim == 2 \
        else image.transpose(2, 0, 1)
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(dtype)[None]
    return 2.0 * x - 1.0 if scaling == "inception" else x


def edge_map(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the grayscale image (``skimage.filters.sobel``)."""
    return sobel(grayscale(image))


def _edge_spearman(map_hw: np.ndarray, edges: np.ndarray) -> float:
    if np.ptp(map_hw) == 0:
        return float("nan")  # an all-zero map (every unit inactive) has no ranks
    return float(spearmanr(map_hw.ravel(), edges.ravel())[0])


@dataclass
class EdgeStudy:
    """``table``: one row per (version, filter_seed, method), ``spearman_edge`` = Spearman of
    Σ_c|map| with the Sobel map (``method == "random"``: a N(0, 1) map). ``maps``: the raw maps
    (C, H, W) of the first filter seed, ``maps[version][method]``, for a figure."""

    table: pd.DataFrame
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    image: np.ndarray | None = None
    edges: np.ndarray | None = None


def one_layer_edge_study(image: np.ndarray, filter_seeds: Sequence[int] = tuple(range(10)),
                         methods: Iterable[str] = tuple(EDGE_METHODS),
                         versions: Iterable[str] = VERSIONS, scaling: str = "inception",
                         seed: int = 0) -> EdgeStudy:
    """Fig. 7 / claim C18 on one image (H, W, 3) in [0, 1], for several random filters.

    ``seed`` seeds SmoothGrad's noise and the random reference maps; ``filter_seeds`` the
    filters. Columns: version, scaling, filter_seed, filter_sum (Σw: its sign decides whether
    flat regions are active), method, spearman_edge.
    """
    methods = list(methods)
    unknown = [m for m in methods if m not in EDGE_METHODS]
    if unknown:
        raise ConfigError(f"unknown edge-study method(s) {unknown}; choose from {list(EDGE_METHODS)}")
    if not filter_seeds:
        raise ConfigError("filter_seeds is empty")
    edges = edge_map(image)
    rows, maps = [], {}
    for version in versions:
        x = model_input(image, version, scaling)
        maps[version] = {}
        for filter_seed in filter_seeds:
            model = OneLayerConv(x.shape[1], filter_seed).eval()
            filter_sum = float(model.conv.weight.detach().sum())
            results = {}
            for method in methods:
                params = dict(EDGE_METHODS[method])
                if method == "smoothgrad":
                    params["seed"] = seed
                results[method] = create_method(method, model, **params).attribute(x, 0)[0]
            rng = np.random.default_rng([seed, filter_seed, zlib.crc32(version.encode())])
            results[RANDOM_MAP] = torch.from_numpy(rng.standard_normal(tuple(x.shape[1:])))
            for method, raw in results.items():
                rows.append({"version": version, "scaling": scaling, "filter_seed": filter_seed,
                             "filter_sum": filter_sum, "method": method,
                             "spearman_edge": _edge_spearman(raw.abs().sum(0).double().numpy(),
                                                             edges)})
                if filter_seed == filter_seeds[0]:
                    maps[version][method] = raw.detach().cpu().numpy()
    table = pd.DataFrame(rows, columns=["version", "scaling", "filter_seed", "filter_sum", "method",
                                        "spearman_edge"])
    return EdgeStudy(table=table, maps=maps, image=image, edges=edges)


def summarize_edge_study(table: pd.DataFrame) -> pd.DataFrame:
    """Per (version, scaling, method): mean and population SD of ``spearman_edge`` over filters,
    n, n_nan, and the share of filters whose map beats the same filter's random map."""
    random = table[table.method == RANDOM_MAP].set_index(["version", "scaling", "filter_seed"])
    rows = []
    for (version, scaling, method), group in table.groupby(["version", "scaling", "method"],
                                                           sort=False):
        s = summarize(group.spearman_edge.to_numpy())
        baseline = random.loc[[(version, scaling, f) for f in group.filter_seed], "spearman_edge"]
        beats = group.spearman_edge.to_numpy() > baseline.to_numpy()
        rows.append({"version": version, "scaling": scaling, "method": method, "mean": s.mean,
                     "sd": s.sd, "n": s.n, "n_nan": s.n_nan, "share_above_random": beats.mean()})
    return pd.DataFrame(rows)


def _input_gradient(model: nn.Module, x: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    return grad


def pattern_gradient(model: OneLayerConv, x: Tensor) -> Tensor:
    """∂l/∂x from the ReLU activation pattern alone: the transposed conv of 1[z > 0] with w."""
    with torch.no_grad():
        active = (model.conv(x) > 0).to(x.dtype)
        return torch.nn.functional.conv_transpose2d(active, model.conv.weight, padding=1)


def locality_check(image: np.ndarray, filter_seed: int = 0, n_positions: int = 20, seed: int = 0,
                   version: str = "grayscale", scaling: str = "inception") -> pd.DataFrame:
    """C18's locality, numerically, in float64 at random positions q (and two corners).

    For each q, the pixels of one region are replaced by uniform noise over the input range and
    the gradient at q (all channels) is compared with the original's. Regions: ``outside_5x5``
    (every pixel farther than 2 from q: the gradient must not move) and ``ring_5x5`` (the pixels
    at distance exactly 2: inside the 5×5 but outside the 3×3, where it may move). Columns: i,
    j, region, max_abs_change, plus ``pattern_max_abs_diff``: autograd vs ``pattern_gradient``
    on the unchanged image (whole map).
    """
    x = model_input(image, version, scaling, dtype=torch.float64)
    model = OneLayerConv(x.shape[1], filter_seed, dtype=torch.float64).eval()
    height, width = x.shape[-2:]
    rng = np.random.default_rng(seed)
    positions = [(0, 0), (height - 1, width - 1)]
    positions += [(int(i), int(j)) for i, j in zip(rng.integers(0, height, n_positions),
                                                   rng.integers(0, width, n_positions))]
    low, high = (-1.0, 1.0) if scaling == "inception" else (0.0, 1.0)
    reference = _input_gradient(model, x)
    pattern_error = float((reference - pattern_gradient(model, x)).abs().max())
    rows_idx, cols_idx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    rows = []
    for i, j in positions:
        distance = np.maximum(np.abs(rows_idx - i), np.abs(cols_idx - j))
        for region, where in (("outside_5x5", distance > LOCALITY_RADIUS),
                              ("ring_5x5", distance == LOCALITY_RADIUS)):
            changed = x.clone()
            mask = torch.from_numpy(where)
            noise = torch.from_numpy(rng.uniform(low, high, tuple(x.shape)))
            changed[..., mask] = noise[..., mask]
            gradient = _input_gradient(model, changed)
            change = float((gradient[..., i, j] - reference[..., i, j]).abs().max())
            rows.append({"i": i, "j": j, "region": region, "n_changed": int(where.sum()),
                         "max_abs_change": change, "pattern_max_abs_diff": pattern_error})
    return pd.DataFrame(rows)


# --- figures -------------------------------------------------------------------------------------

def _one_layer_rows(toys: dict[str, np.ndarray]) -> tuple[list[list[np.ndarray]], list[str]]:
    """Per version: the input, |map| summed over channels per method, the edge map."""
    rows = []
    for version in VERSIONS:
        picture = toys["image"].astype(np.float32)
        maps = [np.abs(toys[f"{version}/{m}"]).sum(0) for m in EDGE_METHODS
                if f"{version}/{m}" in toys]
        rows.append([picture if version == "rgb" else picture.mean(-1), *maps,
                     toys["edges"].astype(np.float32)])
    return rows, list(VERSIONS)


def _one_layer_columns() -> list[str]:
    return ["Input", *[method_label(m) for m in EDGE_METHODS], "Edge map (Sobel)"]


def draw_one_layer_net(context, toys: dict[str, np.ndarray]) -> plt.Figure:
    """Fig. 7: the one-layer net's maps, RGB and grayscale input, beside the edge map."""
    rows, labels = _one_layer_rows(toys)
    return gallery(rows, row_labels=labels, col_labels=_one_layer_columns(), cmaps=ABS_CMAP,
                   title="Fig. 7 — one 3×3 random filter → ReLU → sum pooling (first filter seed)")


def draw_one_layer_net_grayscale(context, toys: dict[str, np.ndarray]) -> plt.Figure:
    """Fig. 37A: the grayscale row of Fig. 7."""
    rows, labels = _one_layer_rows(toys)
    return gallery(rows[1:], row_labels=labels[1:], col_labels=_one_layer_columns(),
                   cmaps=ABS_CMAP,
                   title="Fig. 37A — the one-layer sum-pooled conv net again (grayscale)")
