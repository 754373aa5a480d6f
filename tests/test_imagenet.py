"""ImageNet labels, the sample, and ILSVRC2012 validation preparation from archives."""

from __future__ import annotations

import csv
import hashlib
import io

import numpy as np
import pytest
from pathlib import Path
import scipy.io

from conftest import leftovers
from synthetic_ilsvrc import tar_bytes
from replication.data import imagenet
from replication.data.tensors import ImageNetImages
from replication.errors import ChecksumMismatch, DataError

# No float result of torch or numpy kernels is compared here: .ci/numeric-isa skips this file.
pytestmark = pytest.mark.isa_independent


def test_class_index_is_sorted_wnid_position():
    assert imagenet.class_index("n01440764") == 0
    assert imagenet.classes()[0].name == "tench"
    assert imagenet.class_index("n15075141") == 999
    assert imagenet.classes()[999].name == "toilet tissue"
    wnids = [c.wnid for c in imagenet.classes()]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000
    with pytest.raises(DataError, match="not an ILSVRC2012 class"):
        imagenet.class_index("n00000000")


def test_class_names_match_torchvision():
    from torchvision.models import ResNet18_Weights

    assert [c.name for c in imagenet.classes()] == ResNet18_Weights.IMAGENET1K_V1.meta["categories"]


def test_sample_pins_cover_every_class_once():
    names = list(imagenet.sample_checksums())
    assert len(names) == 1000
    assert sorted(n.split("_")[0] for n in names) == [c.wnid for c in imagenet.classes()]


@pytest.fixture
def small_mirror(tmp_path, mirror):
    """A mirror holding the first 3 sample images only, one of them corrupted."""
    folder = tmp_path / "mirror" / imagenet.SAMPLE_MIRROR_FOLDER
    folder.mkdir(parents=True)
    names = list(imagenet.sample_checksums())[:3]
    for name in names:
        (folder / name).write_bytes((mirror / imagenet.SAMPLE_MIRROR_FOLDER / name).read_bytes())
    return tmp_path / "mirror", names


def test_incomplete_sample_mirror_fails_without_leaving_a_folder(tmp_path, small_mirror):
    mirror, _ = small_mirror
    out = tmp_path / "out" / "imagenet_sample"
    with pytest.raises(DataError, match="lacks imagenet-sample/"):
        imagenet.prepare_sample(out, mirror=mirror)
    assert not out.exists() and leftovers(tmp_path / "out") == []


def test_corrupted_sample_image_is_a_checksum_error(tmp_path, small_mirror):
    mirror, names = small_mirror
    path = mirror / imagenet.SAMPLE_MIRROR_FOLDER / names[1]
    path.write_bytes(path.read_bytes()[:-10])
    out = tmp_path / "out" / "imagenet_sample"
    with pytest.raises(ChecksumMismatch, match=names[1]):
        imagenet.prepare_sample(out, mirror=mirror)
    assert not out.exists() and leftovers(tmp_path / "out") == []


# --- ILSVRC2012 validation: synthetic archives with the real layout, pinned by test digests


@pytest.fixture
def archives(tmp_path):
    """Three validation images labelled goldfish, tench, toilet tissue by a devkit."""
    # meta.mat lists synsets by ILSVRC2012_ID (not sorted by wnid) plus a non-leaf synset.
    synsets = np.array(
        [(1, "n15075141", 0), (2, "n01440764", 0), (3, "n01443537", 0), (1001, "n00001740", 3)],
        dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    meta = io.BytesIO()
    scipy.io.savemat(meta, {"synsets": synsets})
    devkit = tar_bytes({
        "ILSVRC2012_devkit_t12/data/meta.mat": meta.getvalue(),
        "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": b"3\n2\n1\n",
    }, "w:gz")
    images = tar_bytes({f"ILSVRC2012_val_{i:08d}.JPEG": f"jpeg {i}".encode()
                         for i in (1, 2, 3)}, "w")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "ILSVRC2012_img_val.tar").write_bytes(images)
    (folder / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(devkit)
    pins = {
        "val": imagenet.ArchivePin("ILSVRC2012_img_val.tar", "sha256",
                                   hashlib.sha256(images).hexdigest()),
        "devkit": imagenet.ArchivePin("ILSVRC2012_devkit_t12.tar.gz", "md5",
                                      hashlib.md5(devkit).hexdigest()),
    }
    return folder, pins


def test_validation_archives_are_unpacked_with_devkit_labels(tmp_path, archives):
    folder, pins = archives
    out = tmp_path / "ilsvrc2012_val"
    manifest = imagenet.prepare_ilsvrc2012_val(folder, out, **pins)
    assert manifest == {"available": True, "n_images": 3, "n_classes": 3, "boxes": 0,
                        "boxes_reason": f"no ILSVRC2012_bbox_val_v3.tgz in {folder}/"}
    rows = imagenet.read_labels(out)
    assert [(r["file"], r["wnid"], r["class_index"]) for r in rows] == [
        ("ILSVRC2012_val_00000001.JPEG", "n01443537", 1),
        ("ILSVRC2012_val_00000002.JPEG", "n01440764", 0),
        ("ILSVRC2012_val_00000003.JPEG", "n15075141", 999),
    ]
    assert rows[0]["path"].read_bytes() == b"jpeg 1"
    assert imagenet.evaluation_folder("ilsvrc2012_val", tmp_path / "sample", out) == (out, "")


def test_validation_archive_with_wrong_digest_is_rejected(tmp_path, archives):
    folder, pins = archives
    with pytest.raises(ChecksumMismatch, match="ILSVRC2012_img_val.tar") as err:
        imagenet.prepare_ilsvrc2012_val(folder, tmp_path / "out", devkit=pins["devkit"])
    assert not (tmp_path / "out").exists()
    message = str(err.value)
    # one algorithm name per line, never "sha256 sha256" or "sha256 md5"
    assert f"expected sha256 {imagenet.ILSVRC2012_VAL.digest}\n" in message
    assert "sha256 sha256" not in message and "md5" not in message


def test_a_devkit_pinned_by_md5_says_md5(tmp_path, archives):
    folder, pins = archives
    md5 = imagenet.ArchivePin("ILSVRC2012_devkit_t12.tar.gz", "md5", "0" * 32)
    with pytest.raises(ChecksumMismatch, match=r"expected md5 0{32}\n  actual   md5 [0-9a-f]{32}"):
        imagenet.prepare_ilsvrc2012_val(folder, tmp_path / "out", val=pins["val"], devkit=md5)


def test_the_devkit_pin_is_the_published_sha256():
    assert imagenet.ILSVRC2012_DEVKIT == imagenet.ArchivePin(
        "ILSVRC2012_devkit_t12.tar.gz", "sha256",
        "b59243268c0d266621fd587d2018f69e906fb22875aca0e295b48cafaa927953")


def test_without_archives_the_manifest_says_so_and_experiments_fall_back(tmp_path):
    out = tmp_path / "ilsvrc2012_val"
    manifest = imagenet.prepare_ilsvrc2012_val(tmp_path / "empty", out)
    assert manifest["available"] is False and "README" in manifest["reason"]
    folder, note = imagenet.evaluation_folder("ilsvrc2012_val", tmp_path / "sample", out)
    assert folder == tmp_path / "sample" and "falling back" in note
    with pytest.raises(DataError, match="unknown ImageNet source"):
        imagenet.evaluation_folder("imagenet21k", tmp_path, out)


def test_reading_an_unprepared_folder_names_it_and_says_to_run_dvc_repro(tmp_path):
    folder = tmp_path / "imagenet_sample"
    with pytest.raises(DataError, match=rf"^{folder} does not exist \(the prepared ImageNet folder "
                                        r"imagenet_sample\)\. Run `dvc repro` in the repository "
                                        r"root.*imagenet\.prepare_sample\("):
        imagenet.read_labels(folder)
    folder.mkdir()
    with pytest.raises(DataError, match=rf"^{folder / 'labels.csv'} does not exist"):
        ImageNetImages(folder, transform=None)


def test_only_one_archive_is_a_clear_error(tmp_path, archives):
    folder, pins = archives
    (folder / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    with pytest.raises(DataError, match="devkit"):
        imagenet.prepare_ilsvrc2012_val(folder, tmp_path / "out", **pins)


def test_the_synthetic_ilsvrc2012_prepares_like_the_real_one(tmp_path):
    """The dry runs' archives go through the real preparation, pins passed as parameters."""
    from synthetic_ilsvrc import DEFAULT_WNIDS, write_archives

    pins = write_archives(tmp_path / "data", per_class=2)
    manifest = imagenet.prepare_ilsvrc2012_val(tmp_path / "data", tmp_path / "out", **pins)
    assert {k: manifest[k] for k in ("available", "n_images", "n_classes", "boxes")} == {
        "available": True, "n_images": 2 * len(DEFAULT_WNIDS), "n_classes": len(DEFAULT_WNIDS),
        "boxes": 2 * len(DEFAULT_WNIDS)}
    from replication.data.boxes import prepared_boxes

    boxes = prepared_boxes(tmp_path / "out")
    assert set(boxes) == {Path(r["file"]).stem for r in imagenet.read_labels(tmp_path / "out")}
    first = boxes["ILSVRC2012_val_00000001"]
    assert (first.width, first.height) == (80, 64) and first.first.wnid in DEFAULT_WNIDS
    with pytest.raises(ChecksumMismatch, match="ILSVRC2012_bbox_val_v3.tgz"):
        imagenet.prepare_ilsvrc2012_val(tmp_path / "data", tmp_path / "pinned", **pins,
                                        boxes_sha256="0" * 64)
    rows = imagenet.read_labels(tmp_path / "out")
    assert {r["wnid"] for r in rows} == set(DEFAULT_WNIDS)
    from PIL import Image

    with Image.open(rows[0]["path"]) as image:
        assert image.size == (80, 64)
    with pytest.raises(ChecksumMismatch):  # the published pins reject the fake archives
        imagenet.prepare_ilsvrc2012_val(tmp_path / "data", tmp_path / "again")
