"""What the Expected Grad-CAM figures and tables share: labels, titles, colours, overlays and
the paired-difference table. Figures are drawn from the stage tables only; the paper's own
figures are unknown, so these are our figures of our measurements, and every title names the
model and the profile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from replication import plotting
from replication.attribution import method_label, postprocess
from replication.experiments.expected_gradcam.methods import REFERENCE_METHOD
from replication.experiments.expected_gradcam.settings import Bootstrap
from replication.metrics import stats

MODEL_LABELS = {"efficientnet_lite0": "EfficientNet-Lite0", "efficientnet_lite1": "EfficientNet-Lite1",
                "efficientnet_lite2": "EfficientNet-Lite2", "mnist_cnn": "MNIST CNN",
                "vgg16": "VGG-16", "resnet50": "ResNet-50", "vgg16_bn": "VGG-16-BN",
                "resnet18": "ResNet-18", "efficientnet_b0": "EfficientNet-B0",
                "inception_v3": "Inception v3"}
PAPER_MODELS = ("vgg16", "resnet50")
EGC_COLOUR, OTHER_COLOUR, REFERENCE_COLOUR = "tab:red", "tab:gray", "tab:blue"


@dataclass(frozen=True)
class View:
    """What every drawing needs besides its tables: the profile (for titles), the labels of the
    configured variants, the bootstrap settings of paired tables and the tables' note."""

    profile: str
    labels: Mapping[str, str]
    bootstrap: Bootstrap
    seed: int
    directions: Mapping[str, bool]  # metric → higher is better (the comparison summary's)
    note: str = ""

    def label(self, method: str) -> str:
        return self.labels[method] if method in self.labels else method_label(method)

    def title(self, what: str, models: Sequence[str]) -> str:
        labels = ", ".join(model_label(m) for m in models)
        return f"{what} — {labels} {profile_note(models, self.profile)}"


@dataclass(frozen=True)
class Table:
    """A table of figures/expected_gradcam/ (written as .csv and .md with the view's note)."""

    frame: pd.DataFrame
    title: str
    note: str | None = None  # None: the view's note


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def profile_note(models: Sequence[str], profile: str) -> str:
    """"(quick profile; the paper used VGG-16/ResNet-50)" unless every model is the paper's."""
    name = f"{profile} profile" if profile else "profile not recorded"
    if models and all(m in PAPER_MODELS for m in models):
        return f"({name})"
    return f"({name}; the paper used VGG-16/ResNet-50)"


def colour(method: str) -> str:
    if method.startswith("expected_gradcam"):
        return EGC_COLOUR
    return REFERENCE_COLOUR if method == REFERENCE_METHOD else OTHER_COLOUR


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB overlay of a [0, 1] map (jet) on a uint8 image (gray images become RGB)."""
    rgb = image.astype(np.float64) / 255.0
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    heat = plt.get_cmap("jet")(cam)[..., :3]
    return (1 - alpha) * rgb + alpha * heat


def upsampled(coarse: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling and per-map min–max, as the metrics and pytorch-grad-cam do."""
    maps = torch.from_numpy(np.nan_to_num(coarse.astype(np.float32)))[:, None]
    return postprocess.minmax(postprocess.upsample(maps, size))[:, 0].numpy()


def short(name: str) -> str:
    """'n01440764_tench.JPEG' → 'tench'; MNIST names are kept."""
    stem = name.rsplit(".", 1)[0] if name.lower().endswith((".jpeg", ".jpg", ".png")) else name
    return (stem.split("_", 1)[1] if stem[:1] == "n" and "_" in stem else stem)[:18]


def gallery(grid: list, row_labels: list[str], col_labels: list[str], title: str,
            cmaps: str) -> plt.Figure:
    """``plotting.gallery`` with the title above the (rotated, when many) column labels."""
    fig = plotting.gallery(grid, row_labels=row_labels, col_labels=col_labels, cmaps=cmaps,
                           cell=1.0)
    fig.suptitle(title, fontsize=8, y=1.0 + (0.55 if len(col_labels) > 8 else 0.12) / len(grid))
    return fig


def panel_models(panels: Mapping[str, np.ndarray]) -> list[str]:
    """The models of a panels .npz whose maps are not empty (keys ``<model>/<array>``)."""
    models = dict.fromkeys(key.split("/")[0] for key in panels)
    return [m for m in models if panels[f"{m}/maps"].size]


def paired_table(scores: pd.DataFrame, a: str, b: str, view: View) -> pd.DataFrame:
    """Paired difference a − b on every model × metric (images scored by both)."""
    pairs = stats.compare_to_reference(scores[scores["method"].isin([a, b])], b, view.directions,
                                       n_resamples=view.bootstrap.n_resamples,
                                       confidence=view.bootstrap.confidence, seed=view.seed)
    pairs = pairs[(pairs["method"] == a) & (pairs["n_pairs"] > 0)]
    table = pairs.rename(columns={"n_pairs": "n", "mean": f"mean {view.label(a)}",
                                  "reference_mean": f"mean {view.label(b)}",
                                  "p_value": "Wilcoxon p"})
    return table[["model", "metric", "n", f"mean {view.label(a)}", f"mean {view.label(b)}",
                  "difference", "ci_low", "ci_high", "Wilcoxon p"]].reset_index(drop=True)
