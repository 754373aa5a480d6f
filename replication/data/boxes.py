"""ILSVRC2012 validation bounding boxes: the PASCAL VOC XMLs of ``ILSVRC2012_bbox_val_v3.tgz``
(one per validation image, ``val/ILSVRC2012_val_00000001.xml`` …), which no stage downloads:
place the archive beside the ILSVRC2012 archives in ``data/`` and the ``ilsvrc2012_val`` stage
unpacks the boxes of the prepared images into ``datasets/ilsvrc2012_val/boxes/``. Parsing, and
mapping a box into the centre crop a model's preprocessing makes, for every experiment that
scores maps against boxes (ParchGrad's box energy, Expected Grad-CAM's localisation).
"""

from __future__ import annotations

import os
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from replication.errors import DataError
from replication.models.base import Preprocessing

BOX_ARCHIVE = "ILSVRC2012_bbox_val_v3.tgz"


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


BOX_COLUMNS = ("stem", "width", "height", "object", "wnid", "xmin", "ymin", "xmax", "ymax")


def write_prepared_boxes(annotations: dict[str, BoxAnnotation], path: Path) -> None:
    """``boxes.csv``: one row per object of each annotation, objects in file order."""
    import csv
    import io

    from replication.fileio import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BOX_COLUMNS)
    for stem in sorted(annotations):
        a = annotations[stem]
        for index, box in enumerate(a.boxes):
            writer.writerow([stem, a.width, a.height, index, box.wnid, box.xmin, box.ymin,
                             box.xmax, box.ymax])
    atomic_write_text(path, buffer.getvalue())


def prepared_boxes(folder: str | os.PathLike) -> dict[str, BoxAnnotation]:
    """The boxes the ``ilsvrc2012_val`` stage prepared (``<folder>/boxes.csv``), by image stem;
    a DataError saying how to get them when the box archive was not supplied."""
    import csv

    path = Path(folder) / "boxes.csv"
    if not path.is_file():
        raise DataError(f"{path} is missing: bounding boxes need {BOX_ARCHIVE} from image-net.org "
                        "in data/ beside the ILSVRC2012 archives; then run `dvc repro`")
    objects: dict[str, list] = {}
    sizes: dict[str, tuple[int, int]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            stem = row["stem"]
            sizes[stem] = (int(row["width"]), int(row["height"]))
            objects.setdefault(stem, []).append(Box(row["wnid"], float(row["xmin"]),
                                                    float(row["ymin"]), float(row["xmax"]),
                                                    float(row["ymax"])))
    return {stem: BoxAnnotation(stem, *sizes[stem], tuple(boxes)) for stem, boxes in objects.items()}
