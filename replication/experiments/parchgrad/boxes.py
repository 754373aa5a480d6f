"""ILSVRC2012 validation bounding boxes and ParchGrad's box energy (notes §2 E4, claims C5, C6).

The boxes come from ``ILSVRC2012_bbox_val_v3.tgz`` (one PASCAL VOC XML per validation image,
``val/ILSVRC2012_val_00000001.xml`` …), which no stage downloads: place it beside the ILSVRC2012
archives in ``data/``. The authors' metric (``context_score.py:compute_in_out_ratio``):

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

import os
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from replication.errors import ConfigError, DataError
from replication.models.base import Preprocessing

BOX_ARCHIVE = "ILSVRC2012_bbox_val_v3.tgz"
PAIRINGS = ("correct", "authors")


@dataclass(frozen=True)
class Box:
    """One object box in original-image pixels (PASCAL VOC xmin, ymin, xmax, ymax)."""

    wnid: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass(frozen=True)
class BoxAnnotation:
    """The boxes of one validation image and the image size the XML states."""

    stem: str  # ILSVRC2012_val_00000001
    width: int
    height: int
    boxes: tuple[Box, ...]

    @property
    def first(self) -> Box:
        """The first ``<object>``: the box the authors used."""
        return self.boxes[0]


def _number(node: ET.Element, tag: str, where: str) -> float:
    found = node.find(tag)
    if found is None or found.text is None:
        raise DataError(f"{where}: no <{tag}> in the bounding-box XML")
    try:
        return float(found.text)
    except ValueError:
        raise DataError(f"{where}: <{tag}> is {found.text!r}, not a number") from None


def parse_voc_xml(text: str | bytes, name: str = "") -> BoxAnnotation:
    """One PASCAL VOC annotation: image size and every ``<object>`` box, in file order."""
    where = name or "bounding-box XML"
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise DataError(f"{where} is not valid XML: {error}") from None
    size = root.find("size")
    if size is None:
        raise DataError(f"{where}: no <size> element")
    width, height = int(_number(size, "width", where)), int(_number(size, "height", where))
    if width < 1 or height < 1:
        raise DataError(f"{where}: image size {width}×{height} is empty")
    boxes = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{where}: an <object> without <bndbox>")
        wnid = (obj.findtext("name") or "").strip()
        boxes.append(Box(wnid, *(_number(box, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))))
    if not boxes:
        raise DataError(f"{where}: no <object> box")
    stem = (root.findtext("filename") or Path(name).stem or "").strip()
    return BoxAnnotation(Path(stem).stem, width, height, tuple(boxes))


def read_boxes(source: str | os.PathLike) -> dict[str, BoxAnnotation]:
    """Every annotation of a box archive (``.tgz``/``.tar.gz``/``.tar``) or a folder of XMLs,
    keyed by image stem (``ILSVRC2012_val_00000001``)."""
    source = Path(source)
    annotations: dict[str, BoxAnnotation] = {}
    if source.is_dir():
        for path in sorted(source.rglob("*.xml")):
            annotation = parse_voc_xml(path.read_bytes(), str(path))
            annotations[path.stem] = annotation
    elif source.is_file():
        try:
            with tarfile.open(source) as archive:
                for member in archive.getmembers():
                    if member.isfile() and member.name.endswith(".xml"):
                        data = archive.extractfile(member).read()
                        annotations[Path(member.name).stem] = parse_voc_xml(data, member.name)
        except tarfile.TarError as error:
            raise DataError(f"{source} is not a readable tar archive: {error}") from None
    else:
        raise DataError(f"{source} is missing: the box energy needs {BOX_ARCHIVE} from "
                        "image-net.org, placed in data/ beside the ILSVRC2012 archives")
    if not annotations:
        raise DataError(f"{source} holds no bounding-box XML")
    return annotations


def crop_geometry(width: int, height: int,
                  preprocessing: Preprocessing) -> tuple[float, float, float, float]:
    """(scale x, scale y, left, top) of ``preprocessing``'s resize and centre crop.

    As torchvision: Resize(s) makes the shorter side s and the longer ``int(s·long/short)``;
    CenterCrop offsets are ``int(round((new − crop) / 2))``. A squashing preprocessing resizes
    to s×s with no crop offset.
    """
    size = preprocessing.input_size
    if preprocessing.resize is None:
        return size / width, size / height, 0.0, 0.0
    if preprocessing.squash:
        new_w = new_h = preprocessing.resize
    elif width <= height:
        new_w, new_h = preprocessing.resize, int(preprocessing.resize * height / width)
    else:
        new_w, new_h = int(preprocessing.resize * width / height), preprocessing.resize
    left = float(int(round((new_w - size) / 2.0))) if not preprocessing.squash else 0.0
    top = float(int(round((new_h - size) / 2.0))) if not preprocessing.squash else 0.0
    return new_w / width, new_h / height, left, top


def crop_box(annotation: BoxAnnotation, preprocessing: Preprocessing,
             box: Box | None = None) -> tuple[float, float, float, float]:
    """The (first) box in the coordinates of the model input, clipped to the crop."""
    box = box or annotation.first
    sx, sy, left, top = crop_geometry(annotation.width, annotation.height, preprocessing)
    size = float(preprocessing.input_size)
    x0, x1 = (np.clip([box.xmin * sx - left, box.xmax * sx - left], 0.0, size))
    y0, y1 = (np.clip([box.ymin * sy - top, box.ymax * sy - top], 0.0, size))
    return float(x0), float(y0), float(x1), float(y1)


def box_mask(box: tuple[float, float, float, float], size: int) -> Tensor:
    """(size, size) bool: pixels whose centre lies in the box (x0, y0, x1, y1), edges included."""
    x0, y0, x1, y1 = box
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    inside_x = (centres >= x0) & (centres <= x1)
    inside_y = (centres >= y0) & (centres <= y1)
    return inside_y[:, None] & inside_x[None, :]


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
