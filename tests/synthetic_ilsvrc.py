"""A synthetic ILSVRC2012 validation set: the three archives a user supplies, tiny and fake.

``write_archives(folder)`` writes ``ILSVRC2012_img_val.tar`` (noise JPEGs under real file
names), ``ILSVRC2012_devkit_t12.tar.gz`` (``meta.mat`` with the 1000 leaf synsets and the ground
truth) and ``ILSVRC2012_bbox_val_v3.tgz`` (one PASCAL VOC XML per image), and returns the pins
of the first two, to pass through the preparation function's ``val``/``devkit`` parameters (or
the settings that carry them). Nothing here is ImageNet data: every number computed on it is
meaningless, which is the point of a dry run.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from replication.data import imagenet

# Ten classes of the Sanity Checks paper's design plus a few more, so class-wise statistics
# and per-class image draws have something to choose from.
DEFAULT_WNIDS = ("n02672831", "n02787622", "n07248320", "n02950826", "n03297495", "n03124170",
                 "n03255030", "n03259280", "n02085936", "n10565667", "n01534433")


def tar_bytes(files: dict[str, bytes], mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    from PIL import Image

    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _box_xml(stem: str, wnid: str, width: int, height: int, rng: np.random.Generator) -> bytes:
    x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
    x1, y1 = rng.integers(x0 + 8, width), rng.integers(y0 + 8, height)
    return (f"<annotation><filename>{stem}</filename><size><width>{width}</width>"
            f"<height>{height}</height><depth>3</depth></size><object><name>{wnid}</name>"
            f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
            "</bndbox></object></annotation>").encode()


def write_archives(folder: Path, *, per_class: int = 4, wnids: Sequence[str] = DEFAULT_WNIDS,
                   size: tuple[int, int] = (80, 64), seed: int = 0
                   ) -> dict[str, imagenet.ArchivePin]:
    """Write the three archives into ``folder``; return ``{"val": pin, "devkit": pin}``."""
    import scipy.io

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = [w for w in wnids for _ in range(per_class)]
    order = rng.permutation(len(labels))  # the validation set is not sorted by class
    labels = [labels[i] for i in order]
    width, height = size
    images, boxes = {}, {}
    for number, wnid in enumerate(labels, start=1):
        stem = f"ILSVRC2012_val_{number:08d}"
        images[f"{stem}.JPEG"] = _jpeg(rng, width, height)
        boxes[f"val/{stem}.xml"] = _box_xml(stem, wnid, width, height, rng)
    synsets = np.array([(c.index + 1, c.wnid, 0) for c in imagenet.classes()],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    meta = io.BytesIO()
    scipy.io.savemat(meta, {"synsets": synsets})
    truth = "".join(f"{imagenet.class_index(w) + 1}\n" for w in labels).encode()
    devkit = tar_bytes({"ILSVRC2012_devkit_t12/data/meta.mat": meta.getvalue(),
                   "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": truth},
                  "w:gz")
    val = tar_bytes(images, "w")
    (folder / imagenet.ILSVRC2012_VAL.file).write_bytes(val)
    (folder / imagenet.ILSVRC2012_DEVKIT.file).write_bytes(devkit)
    (folder / "ILSVRC2012_bbox_val_v3.tgz").write_bytes(tar_bytes(boxes, "w:gz"))
    return {"val": imagenet.ArchivePin(imagenet.ILSVRC2012_VAL.file, "sha256",
                                       hashlib.sha256(val).hexdigest()),
            "devkit": imagenet.ArchivePin(imagenet.ILSVRC2012_DEVKIT.file, "sha256",
                                          hashlib.sha256(devkit).hexdigest())}
