"""ImageNet inputs: the 1000-image sample (one image per class) and ILSVRC2012 validation.

Class index = position of the wnid in sorted order (n01440764 -> 0 tench, ..., n15075141 -> 999
toilet tissue), the standard ILSVRC2012 index that torchvision and timm weights use.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import tarfile
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from replication.data.fetch import Network, download_each, unavailable
from replication.errors import ChecksumMismatch, DataError, missing_input
from replication.fileio import CHUNK, atomic_directory, atomic_write_text, sha256_bytes, write_json

log = logging.getLogger(__name__)

SAMPLE_MIRROR_FOLDER = "imagenet-sample"
SAMPLE_ARCHIVE_URLS = (
    "https://github.com/EliSchwartz/imagenet-sample-images/archive/refs/heads/master.zip",
)
LABEL_COLUMNS = ("file", "wnid", "class_index", "class_name")


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str
    name: str


@cache
def classes() -> tuple[ImageNetClass, ...]:
    """The 1000 ILSVRC2012 classes in index order, available offline."""
    text = resources.files("replication.data").joinpath("imagenet_classes.tsv").read_text("utf-8")
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    return tuple(ImageNetClass(int(r["index"]), r["wnid"], r["name"]) for r in rows)


@cache
def class_index(wnid: str) -> int:
    by_wnid = {c.wnid: c.index for c in classes()}
    if wnid not in by_wnid:
        raise DataError(f"{wnid!r} is not an ILSVRC2012 class wnid")
    return by_wnid[wnid]


@cache
def sample_checksums() -> dict[str, str]:
    """File name -> pinned SHA-256 of each of the 1000 sample images."""
    text = resources.files("replication.data").joinpath("checksums/imagenet_sample.sha256")
    pairs = (line.split() for line in text.read_text("utf-8").splitlines() if line.strip())
    return {name: digest for digest, name in pairs}


def _label_row(file: str) -> dict:
    wnid = file.split("_", 1)[0]
    index = class_index(wnid)
    return {"file": file, "wnid": wnid, "class_index": index, "class_name": classes()[index].name}


def write_labels(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LABEL_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_labels(folder: str | os.PathLike) -> list[dict]:
    """Rows of ``labels.csv`` in a prepared ImageNet folder, with ``path`` resolved."""
    folder = Path(folder)
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise missing_input(folder if not folder.exists() else labels,
                            f"the prepared ImageNet folder {folder.name}", "python -c \"from "
                            "replication.data import imagenet, mirror_root; "
                            f"imagenet.prepare_sample('{folder}', mirror=mirror_root())\" (the "
                            "1000-image sample)")
    with open(labels, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["class_index"] = int(row["class_index"])
        row["path"] = folder / "images" / row["file"]
    return rows


def _verify_image(name: str, data: bytes, source: str) -> bytes:
    actual = sha256_bytes(data)
    if actual != sample_checksums()[name]:
        raise ChecksumMismatch(f"{SAMPLE_MIRROR_FOLDER}/{name}", source, sample_checksums()[name],
                               actual)
    return data


def _sample_from_mirror(mirror: Path, images: Path) -> None:
    folder = mirror / SAMPLE_MIRROR_FOLDER
    for name in sample_checksums():
        path = folder / name
        if not path.is_file():
            raise DataError(f"the mirror {mirror} lacks {SAMPLE_MIRROR_FOLDER}/{name}; the sample "
                            "needs all 1000 images. Restore the mirror or unset REPLICATION_MIRROR.")
        (images / name).write_bytes(_verify_image(name, path.read_bytes(), str(path)))


def _sample_from_archive(archive: zipfile.ZipFile, url: str, images: Path) -> None:
    members = {Path(m).name: m for m in archive.namelist() if m.endswith(".JPEG")}
    missing = sorted(set(sample_checksums()) - set(members))
    if missing:
        raise DataError(f"the archive {url} lacks {len(missing)} pinned images "
                        f"(first: {missing[0]}); upstream changed, so the pins need review")
    for name in sample_checksums():
        (images / name).write_bytes(_verify_image(name, archive.read(members[name]), url))


def prepare_sample(out_dir: str | os.PathLike, *, mirror: Path | None,
                   network: Network = Network()) -> str:
    """Write ``images/`` (1000 verified JPEGs) and ``labels.csv`` into ``out_dir``; return source."""
    with atomic_directory(out_dir) as tmp:
        images = tmp / "images"
        images.mkdir()
        if mirror is not None and (mirror / SAMPLE_MIRROR_FOLDER).is_dir():
            _sample_from_mirror(mirror, images)
            source = str(mirror / SAMPLE_MIRROR_FOLDER)
        else:
            errors: list[str] = []
            for source, sink in download_each(SAMPLE_ARCHIVE_URLS, network, errors):
                with zipfile.ZipFile(sink) as archive:
                    _sample_from_archive(archive, source, images)
                break
            else:
                raise unavailable(f"{SAMPLE_MIRROR_FOLDER}/ (1000 images)", mirror, errors)
        write_labels(tmp / "labels.csv", [_label_row(name) for name in sample_checksums()])
    return source


def summarize(folder: str | os.PathLike) -> dict:
    rows = read_labels(folder)
    return {
        "dataset": "imagenet_sample",
        "n_images": len(rows),
        "n_classes": len({r["class_index"] for r in rows}),
        "first": {"wnid": rows[0]["wnid"], "class_index": rows[0]["class_index"],
                  "class_name": rows[0]["class_name"]},
        "last": {"wnid": rows[-1]["wnid"], "class_index": rows[-1]["class_index"],
                 "class_name": rows[-1]["class_name"]},
    }


# --- ILSVRC2012 validation, from archives the user supplies (the licence forbids redistribution)


@dataclass(frozen=True)
class ArchivePin:
    file: str
    algorithm: str
    digest: str


# The SHA-256s published with torchvision's prototype ImageNet dataset (the image archive's is also
# TensorFlow Datasets'; the devkit's agrees with the MD5 fa75699e90414af021442c21a62c3abf that
# torchvision's ImageNet class checks, as several independent download scripts record both).
ILSVRC2012_VAL = ArchivePin("ILSVRC2012_img_val.tar", "sha256",
                            "c7e06a6c0baccf06d8dbeb6577d71efff84673a5dbdd50633ab44f8ea0456ae0")
ILSVRC2012_DEVKIT = ArchivePin("ILSVRC2012_devkit_t12.tar.gz", "sha256",
                               "b59243268c0d266621fd587d2018f69e906fb22875aca0e295b48cafaa927953")
N_VALIDATION_IMAGES = 50_000


def verify_archive(path: Path, pin: ArchivePin) -> None:
    digest = hashlib.new(pin.algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    if digest.hexdigest() != pin.digest:
        raise ChecksumMismatch(pin.file, str(path), pin.digest, digest.hexdigest(), pin.algorithm)


def _devkit_labels(devkit: Path) -> list[str]:
    """wnid of each validation image, in file order (ILSVRC2012_val_00000001 first)."""
    import scipy.io  # only this path needs scipy

    with tarfile.open(devkit) as archive:
        def member(suffix: str) -> bytes:
            for m in archive.getmembers():
                if m.name.endswith(suffix):
                    return archive.extractfile(m).read()
            raise DataError(f"{devkit} has no {suffix}; is it the ILSVRC2012 task 1&2 devkit?")

        synsets = scipy.io.loadmat(io.BytesIO(member("data/meta.mat")), squeeze_me=True)["synsets"]
        ground_truth = member("data/ILSVRC2012_validation_ground_truth.txt").split()
    wnid_of_id = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets
                  if int(s["num_children"]) == 0}
    return [wnid_of_id[int(i)] for i in ground_truth]


def prepare_ilsvrc2012_val(archive_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                           val: ArchivePin = ILSVRC2012_VAL,
                           devkit: ArchivePin = ILSVRC2012_DEVKIT,
                           boxes_sha256: str | None = None) -> dict:
    """Unpack the user's ILSVRC2012 validation archives into ``images/`` + ``labels.csv``, and
    the boxes of ``ILSVRC2012_bbox_val_v3.tgz`` into ``boxes.csv`` when that archive is there
    too (checked against ``boxes_sha256`` when given; no digest is published for it, so its
    content is checked: every XML must parse, and its SHA-256 goes in the manifest).

    Without the archives this writes only ``manifest.json`` saying so: the ImageNet stages then
    fall back to the sample and say that too.
    """
    archive_dir = Path(archive_dir)
    paths = {pin.file: archive_dir / pin.file for pin in (val, devkit)}
    present = [f for f, p in paths.items() if p.is_file()]
    with atomic_directory(out_dir) as tmp:
        if not present:
            manifest = {"available": False, "n_images": 0,
                        "reason": f"no ILSVRC2012 archives in {archive_dir}/ (see its README.md)"}
            write_json(tmp / "manifest.json", manifest)
            return manifest
        if len(present) < len(paths):
            missing = sorted(set(paths) - set(present))
            raise DataError(f"{archive_dir}/ holds {present} but not {missing}: both the images "
                            "and the devkit are needed (see data/README.md)")
        for pin in (val, devkit):
            verify_archive(paths[pin.file], pin)
        wnids = _devkit_labels(paths[devkit.file])
        images = tmp / "images"
        images.mkdir()
        with tarfile.open(paths[val.file]) as archive:
            files = sorted(m.name for m in archive.getmembers() if m.isfile())
            if len(files) != len(wnids):
                raise DataError(f"{val.file} holds {len(files)} images but the devkit labels "
                                f"{len(wnids)}")
            archive.extractall(images, filter="data")
        rows = [{"file": f, "wnid": w, "class_index": class_index(w),
                 "class_name": classes()[class_index(w)].name} for f, w in zip(files, wnids)]
        write_labels(tmp / "labels.csv", rows)
        manifest = {"available": True, "n_images": len(rows),
                    "n_classes": len({r["wnid"] for r in rows}),
                    **_prepare_boxes(archive_dir, tmp, files, boxes_sha256)}
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _prepare_boxes(archive_dir: Path, out: Path, files: list[str],
                   expected: str | None) -> dict:
    from replication.data.boxes import BOX_ARCHIVE, read_boxes, write_prepared_boxes

    archive = archive_dir / BOX_ARCHIVE
    if not archive.is_file():
        return {"boxes": 0, "boxes_reason": f"no {BOX_ARCHIVE} in {archive_dir}/"}
    if expected is not None:
        verify_archive(archive, ArchivePin(BOX_ARCHIVE, "sha256", expected))
    stems = {Path(f).stem for f in files}
    annotations = {stem: a for stem, a in read_boxes(archive).items() if stem in stems}
    write_prepared_boxes(annotations, out / "boxes.csv")
    digest = hashlib.sha256()
    with open(archive, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return {"boxes": len(annotations), "boxes_sha256": digest.hexdigest()}


def evaluation_folder(source: str, sample_dir: str | os.PathLike,
                      ilsvrc2012_dir: str | os.PathLike) -> tuple[Path, str]:
    """The prepared ImageNet folder a stage should use, and a note when it fell back."""
    if source == "sample":
        return Path(sample_dir), ""
    if source != "ilsvrc2012_val":
        raise DataError(f"unknown ImageNet source {source!r}; choose 'sample' or 'ilsvrc2012_val'")
    manifest = Path(ilsvrc2012_dir) / "manifest.json"
    if manifest.is_file() and (Path(ilsvrc2012_dir) / "labels.csv").is_file():
        return Path(ilsvrc2012_dir), ""
    note = ("ILSVRC2012 validation archives were not supplied (see data/README.md): "
            "falling back to the 1000-image ImageNet sample")
    log.warning(note)
    return Path(sample_dir), note


def run_sample_stage(ctx) -> None:
    """The `imagenet_sample` stage: the 1000-image sample, verified image by image."""
    from replication.data.fetch import mirror_root

    source = prepare_sample(ctx.output("out"), mirror=mirror_root(),
                            network=ctx.settings("data.network"))
    log.info("imagenet sample <- %s", source)
    write_json(ctx.output("metrics"), summarize(ctx.output("out")))


def run_ilsvrc2012_stage(ctx) -> None:
    """The `ilsvrc2012_val` stage: the user's archives unpacked, or a manifest saying none."""
    digests = ctx.settings("data.ilsvrc2012")
    manifest = prepare_ilsvrc2012_val(
        ctx.input("archives"), ctx.output("out"),
        val=ArchivePin(ILSVRC2012_VAL.file, "sha256", digests.val),
        devkit=ArchivePin(ILSVRC2012_DEVKIT.file, "sha256", digests.devkit),
        boxes_sha256=digests.boxes)
    if not manifest["available"]:
        log.warning("%s; the paper profile falls back to the ImageNet sample", manifest["reason"])
