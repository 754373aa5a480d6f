"""What the ParchGrad experiments and figures share about showing maps: the panel arrays an
experiment stores (keyed by ``panel_key``), the authors' display scaling, model titles, and the
inputs a drawing function receives (``Sources``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import Tensor

from replication import plotting
from replication.models.base import ModelCard

MODEL_NAMES = {"mnist_cnn": "MNIST CNN", "fashion_mnist_cnn": "Fashion-MNIST CNN",
               "efficientnet_lite0": "EfficientNet-Lite0", "resnet18": "ResNet-18",
               "vgg16_bn": "VGG16-BN", "efficientnet_b0": "EfficientNet-B0"}
AUTHORS_MODELS = "the authors used ResNet-18 / VGG16-BN / EfficientNet-B0 on ILSVRC2012 val"
PAPER_MODELS = ("resnet18", "vgg16_bn", "efficientnet_b0")


@dataclass(frozen=True)
class Sources:
    """What a drawing function reads: the result tables by stem, the panel maps by experiment
    (``vc``, ``q_sweep``) and the profile (for titles)."""

    tables: Mapping[str, pd.DataFrame]
    maps: Mapping[str, Mapping[str, np.ndarray]]
    profile: str


def model_name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def model_title(model: str, profile: str) -> str:
    name = model_name(model)
    if model in PAPER_MODELS:
        return f"{name} ({profile} profile)"
    return f"{name} ({profile} profile; {AUTHORS_MODELS})"


def panel_key(*parts: object) -> str:
    """The key of one panel array in a maps file (figures rebuild it from the tables)."""
    return "__".join(str(p) for p in parts)


def display_image(card: ModelCard, image: Tensor) -> np.ndarray:
    """An input as (H, W, 3) pixels in [0, 1] for panels (grey images repeated to RGB)."""
    pixels = card.preprocessing.denormalize(image[None].cpu())[0].clamp(0, 1)
    return pixels.expand(3, -1, -1).permute(1, 2, 0).numpy()


def panel(pixel_map: Tensor) -> np.ndarray:
    """One (1, H, W) map as the float16 (H, W) array a maps file stores."""
    return pixel_map[0].numpy().astype(np.float16)


def image_panels(card: ModelCard, images: Tensor, gradient: Tensor, count: int
                 ) -> dict[str, np.ndarray]:
    """The first ``count`` images and their Gradient maps, the first two columns of a gallery."""
    maps = {}
    for i in range(count):
        maps[panel_key("image", i)] = display_image(card, images[i]).astype(np.float16)
        maps[panel_key("gradient", i)] = panel(gradient[i])
    return maps


def heat(pixel_map: np.ndarray) -> np.ndarray:
    """The authors' display scaling: the map over b = 10·mean|R| (seismic, vmin −b, vmax b);
    returned in [-1, 1] for a fixed colour range."""
    bound = 10.0 * float(np.abs(pixel_map).mean())
    return np.clip(pixel_map / bound, -1, 1) if bound > 0 else pixel_map


def gallery_rows(maps: Mapping[str, np.ndarray], model: str, row: Callable[[int], list],
                 names: Sequence[str]) -> tuple[list[list], list[str]]:
    """One gallery row (``row(i)``) per image of ``model`` the maps hold, and the row labels
    (the images' names, shortened)."""
    rows, labels, i = [], [], 0
    while panel_key(model, "image", i) in maps:
        rows.append(row(i))
        labels.append(str(names[i]).split(".")[0][:18] if i < len(names) else str(i))
        i += 1
    return rows, labels


def save_gallery(rows: Sequence[Sequence[np.ndarray | None]], labels: Sequence[str],
                 columns: Sequence[str], title: str, stem: Path) -> list[Path]:
    """Panels (images, and maps scaled by ``heat``) in the authors' seismic colours, saved as
    PNG + PDF."""
    fig = plotting.gallery(rows, row_labels=labels, col_labels=columns, cmaps="seismic",
                           vranges=(-1.0, 1.0), title=title)
    return plotting.save_figure(fig, stem)
