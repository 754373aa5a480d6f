"""MNIST and Fashion-MNIST: pinned raw files, preparation, loading and the papers' split."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replication.data.fetch import Network, RawFile, fetch_file
from replication.data.idx import read_idx
from replication.errors import DataError, missing_input

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdxDataset:
    name: str
    mirror_folder: str
    upstream: tuple[str, ...]  # base URLs, tried in order (torchvision's mirrors)
    sha256: dict[str, str]  # decompressed file name -> digest of its bytes
    classes: tuple[str, ...]

    def raw_files(self) -> dict[str, RawFile]:
        return {
            name: RawFile(
                mirror_path=f"{self.mirror_folder}/{name}.gz",
                sha256=digest,
                urls=tuple(f"{base}{name}.gz" for base in self.upstream),
                gzipped=True,
            )
            for name, digest in self.sha256.items()
        }


FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

DATASETS = {
    "mnist": IdxDataset(
        name="mnist",
        mirror_folder="mnist",
        upstream=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                  "http://yann.lecun.com/exdb/mnist/"),
        sha256=dict(zip(FILES, (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ))),
        classes=tuple(str(d) for d in range(10)),
    ),
    "fashion_mnist": IdxDataset(
        name="fashion_mnist",
        mirror_folder="fashion-mnist",
        upstream=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256=dict(zip(FILES, (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ))),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}

SPLIT_FILES = {"train": FILES[:2], "test": FILES[2:]}


def get_dataset(name: str) -> IdxDataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


def prepare(name: str, out_dir: str | os.PathLike, *, mirror: Path | None,
            network: Network = Network()) -> dict[str, str]:
    """Write the four verified, decompressed IDX files of ``name`` into ``out_dir``."""
    out_dir = Path(out_dir)
    return {file: fetch_file(raw, out_dir / file, mirror=mirror, network=network)
            for file, raw in get_dataset(name).raw_files().items()}


def load(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of ``split`` ('train' or 'test')."""
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; choose 'train' or 'test'")
    folder = Path(folder)
    images_file, labels_file = (folder / f for f in SPLIT_FILES[split])
    for path in (folder, images_file, labels_file):
        if not path.exists():
            name = folder.name if folder.name in DATASETS else "<mnist or fashion_mnist>"
            raise missing_input(path, f"the prepared {name} data", "python -c \"from "
                                "replication.data import mirror_root, mnist; "
                                f"mnist.prepare('{name}', '{folder}', mirror=mirror_root())\"")
    images, labels = read_idx(images_file), read_idx(labels_file).astype(np.int64)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DataError(f"{folder}: {split} images {images.shape} and labels {labels.shape} "
                        "do not match")
    return images, labels


def train_validation_split(n_train: int, n_validation: int = 5000) -> tuple[slice, slice]:
    """The authors' split: the first ``n_validation`` training images are held out."""
    if not 0 < n_validation < n_train:
        raise DataError(f"validation size {n_validation} must be in (0, {n_train})")
    return slice(n_validation, n_train), slice(0, n_validation)


def summarize(name: str, folder: str | os.PathLike, n_validation: int) -> dict:
    """Data-level facts checked by the claims: sizes, class counts, split."""
    dataset = get_dataset(name)
    summary: dict = {"dataset": name, "n_classes": len(dataset.classes)}
    for split in SPLIT_FILES:
        images, labels = load(folder, split)
        summary[split] = {
            "n_images": int(len(labels)),
            "image_shape": list(images.shape[1:]),
            "class_counts": np.bincount(labels, minlength=len(dataset.classes)).tolist(),
            "pixel_range": [int(images.min()), int(images.max())],
        }
    train, validation = train_validation_split(summary["train"]["n_images"], n_validation)
    summary["split"] = {"train": train.stop - train.start,
                        "validation": validation.stop - validation.start}
    return summary


def run_stage(ctx) -> None:
    """The `idx_data` stage: prepare one dataset (mirror or upstream) and summarise it."""
    from replication.data.fetch import mirror_root
    from replication.fileio import write_json

    name = ctx.item["dataset"]
    sources = prepare(name, ctx.output("out"), mirror=mirror_root(),
                      network=ctx.settings("data.network"))
    for file, source in sources.items():
        log.info("%s/%s <- %s", name, file, source)
    write_json(ctx.output("metrics"),
               summarize(name, ctx.output("out"), ctx.settings("data.validation_size")))
