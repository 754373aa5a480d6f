"""ParchGrad's box energy (notes §2 E4, claims C5, C6) on the ILSVRC2012 validation boxes
(``replication.data.boxes``). The authors' metric (``context_score.py:compute_in_out_ratio``):

- ``mu_in = Σ_in R / Σ R`` over the 224×224 map after ``abs`` and ``nan_to_num``;
- ``mu_in_w = mu_in / (box area / image area)``: 1 when the map is uniform, above 1 when the
  map concentrates in the box.

Both use the *first* ``<object>`` of the XML, mapped into the centre crop the image went through.

Pairing each image with a box:

- ``pairing="correct"``: each image with its own XML (the correction);
- ``pairing="authors"``: the authors' index mismatch. Their images came from torchvision's
  ``ImageNet(split="val")``, sorted by wnid and then file name, their boxes from a dataset sorted
  by file number, and image i was paired with box i. So the image at position i of the
  class-sorted validation list gets the box of ``ILSVRC2012_val_{i+1:08d}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from replication.data.boxes import BoxAnnotation
from replication.errors import ConfigError, DataError

PAIRINGS = ("correct", "authors")


def box_energy(maps: Tensor, masks: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mu_in``, ``mu_in_w`` and the box-area fraction per image.

    ``maps`` (B, H, W) or (B, 1, H, W) are reduced to one value per pixel already; they go
    through ``abs`` and ``nan_to_num`` as in the authors' code. ``mu_in`` is NaN for an all-zero
    map, ``mu_in_w`` also for an empty box (a box outside the crop).
    """
    if maps.ndim == 4:
        if maps.shape[1] != 1:
            raise ValueError(f"box_energy takes one value per pixel; reduce the {maps.shape[1]} "
                             "channels first")
        maps = maps[:, 0]
    if maps.shape != masks.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and box masks {tuple(masks.shape)} differ")
    relevance = torch.nan_to_num(maps.detach().double().abs(), nan=0.0, posinf=0.0, neginf=0.0)
    masks = masks.to(relevance.device, torch.bool)
    total = relevance.flatten(1).sum(1)
    inside = (relevance * masks).flatten(1).sum(1)
    area = masks.flatten(1).double().mean(1)
    mu_in = torch.where(total > 0, inside / total.clamp_min(1e-300), torch.nan)
    mu_in_w = torch.where(area > 0, mu_in / area.clamp_min(1e-300), torch.nan)
    return mu_in.cpu().numpy(), mu_in_w.cpu().numpy(), area.cpu().numpy()


def class_sorted_files(rows: Iterable[Mapping]) -> list[str]:
    """The validation files in torchvision ``ImageNet(split="val")`` order: by wnid, then file."""
    return [row["file"] for row in sorted(rows, key=lambda r: (r["wnid"], r["file"]))]


def pair_boxes(files: Sequence[str], all_rows: Sequence[Mapping],
               annotations: Mapping[str, BoxAnnotation], pairing: str = "correct"
               ) -> list[BoxAnnotation]:
    """The annotation each evaluated image (``files``) is scored against.

    ``all_rows`` are the rows of the whole validation set (``labels.csv``: file, wnid), needed
    for the authors' class-sorted positions; ``annotations`` come from :func:`read_boxes`.
    """
    if pairing not in PAIRINGS:
        raise ConfigError(f"unknown box pairing {pairing!r}; choose one of {list(PAIRINGS)} "
                          "('authors' reproduces their index mismatch)")
    if pairing == "correct":
        missing = [f for f in files if Path(f).stem not in annotations]
        if missing:
            raise DataError(f"no bounding box for {missing[:3]}: the box archive does not cover "
                            "these images")
        return [annotations[Path(f).stem] for f in files]
    position = {f: i for i, f in enumerate(class_sorted_files(all_rows))}
    by_number = sorted(annotations)  # ILSVRC2012_val_00000001 … in file-number order
    missing = [f for f in files if f not in position]
    if missing:
        raise DataError(f"{missing[:3]} are not in the validation list: the authors' pairing "
                        "needs the whole validation set's labels.csv")
    if len(by_number) < len(position):
        raise DataError(f"the authors' pairing needs a box for every validation image; the "
                        f"archive holds {len(by_number)} for {len(position)} images")
    return [annotations[by_number[position[f]]] for f in files]
