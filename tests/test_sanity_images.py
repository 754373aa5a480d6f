"""The Sanity Checks paper's own ImageNet images: mirror, upstream archives, pins."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from replication.data import fetch, sanity_images
from replication.data.imagenet import read_labels
from replication.errors import ChecksumMismatch, DataUnavailable


def test_prepared_from_the_mirror_with_the_authors_lists(mirror, tmp_path):
    out = tmp_path / "sanity"
    sanity_images.prepare(out, mirror=mirror)
    rows = read_labels(out)
    curves = sanity_images.curve_images(out)
    assert len(curves) == 200 and len(rows) == 203  # 200 curve images and the 3 demo images
    assert {r["class_name"] for r in rows if r["file"] in curves} == {
        "accordion", "banjo", "book jacket", "cannon", "espresso maker", "cowboy hat", "dumbbell",
        "Dutch oven", "Maltese dog", "scuba diver"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_curve_images"] == 200
    assert manifest["listed_twice"] == {"ILSVRC2012_val_00015300.JPEG": ["maltese_dog"]}
    assert sanity_images.demo_images(out)["bird"] == "ILSVRC2012_val_00015410.JPEG"
    bird = next(r for r in rows if r["file"] == "ILSVRC2012_val_00015410.JPEG")
    assert bird["class_index"] == 13  # junco, the class the authors' code explains
    assert all((out / "images" / r["file"]).is_file() for r in rows)


def _archive_of(mirror, prefix: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sanity_images.pins():
            archive.write(mirror / sanity_images.MIRROR_FOLDER / path, f"{prefix}/data/{path}")
    return buffer.getvalue()


def test_upstream_archives_are_used_without_a_mirror_and_verified(mirror, tmp_path, monkeypatch):
    good = _archive_of(mirror, "sanity_checks_saliency-d1eb1da")

    def fake_download(url, sink, network):
        sink.write(good)

    monkeypatch.setattr(fetch, "download", fake_download)
    sanity_images.prepare(tmp_path / "a", mirror=None)
    assert len(read_labels(tmp_path / "a")) == 203

    def corrupt(url, sink, network):
        data = bytearray(good)
        index = data.find(b"JFIF") + 40  # inside the first JPEG's data
        data[index] ^= 0xFF
        sink.write(bytes(data))

    monkeypatch.setattr(fetch, "download", corrupt)
    with pytest.raises((ChecksumMismatch, zipfile.BadZipFile)):
        sanity_images.prepare(tmp_path / "b", mirror=None)
    assert not (tmp_path / "b").exists()


def test_offline_without_a_mirror_names_both_fixes(no_network, tmp_path):
    from replication.data.fetch import Network

    with pytest.raises(DataUnavailable, match="REPLICATION_MIRROR"):
        sanity_images.prepare(tmp_path / "c", mirror=None,
                              network=Network(attempts=2, backoff_seconds=0.0))
    assert no_network == [sanity_images.ARCHIVES[0]] * 2 + [sanity_images.ARCHIVES[1]] * 2
    assert not (tmp_path / "c").exists()
