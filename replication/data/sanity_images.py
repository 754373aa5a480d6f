"""The ImageNet images of *Sanity Checks for Saliency Maps*, as its authors published them.

The curves of Fig. 4–5 explain 200 ILSVRC2012 validation images, 20 for each of 10 classes,
listed in the authors' ``data/imagenet_data/*_imageids.txt``; the qualitative figures show
their demo images (the bird ``ILSVRC2012_val_00015410``, the dog ``00032239``, the corn
``00010495``). The authors published the files in their repository (the images at commit
d1eb1da, removed later; the demo images and ID lists at 3e24048c). Every file is checked against
a pinned SHA-256 (``checksums/sanity_checks_imagenet.sha256``), whether it came from the mirror
(``REPLICATION_MIRROR``/sanity-checks-imagenet) or from the GitHub archives of those commits.

The prepared folder is a prepared ImageNet folder like the sample's (``images/``,
``labels.csv``), plus ``manifest.json``: the curve images per class in the authors' order and
the demo images by role. ``ILSVRC2012_val_00015300`` is in both the Dutch-oven and the
Maltese-dog list (201 entries, 200 images): it is kept once, labelled with the first list.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from functools import cache
from importlib import resources
from pathlib import Path

from replication.data.fetch import Network, download_each, unavailable
from replication.data.imagenet import classes, class_index, write_labels
from replication.errors import ChecksumMismatch, DataError
from replication.fileio import atomic_directory, sha256_bytes, write_json

log = logging.getLogger(__name__)

MIRROR_FOLDER = "sanity-checks-imagenet"
REPOSITORY = "https://github.com/adebayoj/sanity_checks_saliency/archive"
ARCHIVES = (f"{REPOSITORY}/d1eb1da067949bc9ecd7316c405c2dae1d6c23c2.zip",  # the 200 images
            f"{REPOSITORY}/3e24048c.zip")  # the demo images and ID lists
# The authors' class folders and ID lists, in their order, with the ILSVRC2012 class.
CLASSES = (("accordion", "accordion_imageids.txt", "n02672831"),
           ("banjo", "banjo_imageids.txt", "n02787622"),
           ("books", "book_imageids.txt", "n07248320"),
           ("cannon", "cannon_imageids.txt", "n02950826"),
           ("coffeemaker", "coffeemaker_imageids.txt", "n03297495"),
           ("cowboyhat", "cowboyhat_imageids.txt", "n03124170"),
           ("dumbell", "dumbell_imageids.txt", "n03255030"),
           ("dutch_oven", "dutchoven_imageids.txt", "n03259280"),
           ("maltese_dog", "maltese_imageids.txt", "n02085936"),
           ("scuba_diving", "scuba_imageids.txt", "n10565667"))
# The demo images of the paper's figures and their classes (the bird is the authors' junco,
# class 13 in their code; the dog a soft-coated wheaten terrier; the corn an ear of corn).
DEMO = {"bird": ("ILSVRC2012_val_00015410.JPEG", "n01534433"),
        "dog": ("ILSVRC2012_val_00032239.JPEG", "n02098105"),
        "corn": ("ILSVRC2012_val_00010495.JPEG", "n12144580")}


@cache
def pins() -> dict[str, str]:
    """Path inside the authors' ``data/`` folder -> pinned SHA-256."""
    text = resources.files("replication.data").joinpath("checksums/sanity_checks_imagenet.sha256")
    pairs = (line.split() for line in text.read_text("utf-8").splitlines() if line.strip())
    return {path: digest for digest, path in pairs}


def _verified(path: str, data: bytes, source: str) -> bytes:
    actual = sha256_bytes(data)
    if actual != pins()[path]:
        raise ChecksumMismatch(f"{MIRROR_FOLDER}/{path}", source, pins()[path], actual)
    return data


def _from_mirror(mirror: Path) -> dict[str, bytes]:
    folder = mirror / MIRROR_FOLDER
    files = {}
    for path in pins():
        source = folder / path
        if not source.is_file():
            raise DataError(f"the mirror {mirror} lacks {MIRROR_FOLDER}/{path}; restore the mirror "
                            "or unset REPLICATION_MIRROR to download the authors' archives")
        files[path] = _verified(path, source.read_bytes(), str(source))
    return files


def _from_archives(network: Network) -> tuple[dict[str, bytes], list[str]]:
    files: dict[str, bytes] = {}
    errors: list[str] = []
    for url, sink in download_each(ARCHIVES, network, errors):
        with zipfile.ZipFile(sink) as archive:
            for member in archive.namelist():
                _, _, inside = member.partition("/data/")
                if inside in pins() and inside not in files:
                    files[inside] = _verified(inside, archive.read(member), url)
    return files, errors


def _id_list(data: bytes) -> list[str]:
    return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]


def prepare(out_dir: str | os.PathLike, *, mirror: Path | None,
            network: Network = Network()) -> str:
    """Write ``images/``, ``labels.csv`` and ``manifest.json`` into ``out_dir``; return the
    source used."""
    if mirror is not None and (mirror / MIRROR_FOLDER).is_dir():
        files, source = _from_mirror(mirror), str(mirror / MIRROR_FOLDER)
    else:
        files, errors = _from_archives(network)
        missing = sorted(set(pins()) - set(files))
        if missing:
            raise unavailable(f"{MIRROR_FOLDER}/ ({len(missing)} of {len(pins())} files, first "
                              f"{missing[0]})", mirror, errors)
        source = " + ".join(ARCHIVES)
    with atomic_directory(out_dir) as tmp:
        images = tmp / "images"
        images.mkdir()
        rows, curves, duplicates = [], {}, {}
        for folder, id_list, wnid in CLASSES:
            names = _id_list(files[f"imagenet_data/{id_list}"])
            curves[classes()[class_index(wnid)].name] = names
            for name in names:
                if (images / name).exists():
                    duplicates.setdefault(name, []).append(folder)
                    continue
                (images / name).write_bytes(files[f"imagenet_data/{folder}/{name}"])
                rows.append(_row(name, wnid))
        for role, (name, wnid) in DEMO.items():
            (images / name).write_bytes(files[f"demo_images/{name}"])
            rows.append(_row(name, wnid))
        write_labels(tmp / "labels.csv", rows)
        write_json(tmp / "manifest.json", {
            "source": "Sanity Checks for Saliency Maps, the authors' published images",
            "curves": curves, "demo": {role: name for role, (name, _) in DEMO.items()},
            "n_curve_images": sum(len(set(v)) for v in curves.values()) - len(duplicates),
            "listed_twice": duplicates})
    return source


def _row(name: str, wnid: str) -> dict:
    index = class_index(wnid)
    return {"file": name, "wnid": wnid, "class_index": index, "class_name": classes()[index].name}


def _manifest(folder: str | os.PathLike) -> dict:
    import json

    manifest = Path(folder) / "manifest.json"
    if not manifest.is_file():
        raise DataError(f"{manifest} is missing: run `dvc repro sanity_images` to prepare the "
                        "Sanity Checks images")
    return json.loads(manifest.read_text())


def curve_images_by_class(folder: str | os.PathLike) -> dict[str, list[str]]:
    """Class -> its curve images in the authors' order; an image the authors listed under two
    classes counts for the first (as in ``labels.csv``)."""
    seen: set[str] = set()
    by_class = {}
    for name, images in _manifest(folder)["curves"].items():
        by_class[name] = [i for i in images if i not in seen]
        seen.update(images)
    return by_class


def curve_images(folder: str | os.PathLike) -> list[str]:
    """The 200 curve images in the authors' order (class by class)."""
    return [name for names in curve_images_by_class(folder).values() for name in names]


def balanced_curve_images(folder: str | os.PathLike) -> list[str]:
    """The 200 curve images round-robin over the authors' 10 classes (the i-th image of every
    class, in the authors' class order, then the (i+1)-th): the first 10·k hold k images of
    each class, so a profile that explains the first N stays balanced across the classes."""
    lists = list(curve_images_by_class(folder).values())
    return [names[i] for i in range(max(map(len, lists))) for names in lists if i < len(names)]


def demo_images(folder: str | os.PathLike) -> dict[str, str]:
    """Role (bird, dog, corn: the order of the paper's figures) -> file name."""
    return _manifest(folder)["demo"]


def run_stage(ctx) -> None:
    """The `sanity_images` stage: the paper's own ImageNet images, verified file by file."""
    from replication.data.fetch import mirror_root

    source = prepare(ctx.output("out"), mirror=mirror_root(), network=ctx.settings("data.network"))
    log.info("sanity checks images <- %s", source)


__all__ = ["balanced_curve_images", "curve_images", "curve_images_by_class", "demo_images",
           "prepare", "run_stage"]
