"""Raw-file fetching: mirror, upstream, retries, checksums, clear errors, atomic writes."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import leftovers
from replication.data import mnist
from replication.data.fetch import Network, fetch_file, mirror_root
from replication.errors import ChecksumMismatch, DataError, DataUnavailable
from replication.fileio import atomic_write_bytes, sha256_file

# No float result of torch or numpy kernels is compared here: .ci/numeric-isa skips this file.
pytestmark = pytest.mark.isa_independent

LABELS = "train-labels-idx1-ubyte"
FAST = Network(attempts=2, backoff_seconds=0.0, timeout_seconds=1.0)


@pytest.fixture
def raw():
    return mnist.DATASETS["mnist"].raw_files()[LABELS]


@pytest.fixture
def corrupted_mirror(tmp_path, mirror, raw) -> Path:
    """A mirror whose MNIST label file decompresses to bytes with one label changed."""
    content = bytearray(gzip.decompress((mirror / raw.mirror_path).read_bytes()))
    content[-1] = (content[-1] + 1) % 10
    target = tmp_path / "mirror" / raw.mirror_path
    target.parent.mkdir(parents=True)
    target.write_bytes(gzip.compress(bytes(content)))
    return tmp_path / "mirror"


def test_mirror_copy_is_verified_and_decompressed(tmp_path, mirror, raw, no_network):
    dest = tmp_path / "out" / LABELS
    source = fetch_file(raw, dest, mirror=mirror, network=FAST)
    assert source == str(mirror / raw.mirror_path)
    assert sha256_file(dest) == raw.sha256
    assert no_network == []  # the mirror was enough
    assert fetch_file(raw, dest, mirror=None, network=FAST) == "already present"


def test_corrupted_copy_is_a_checksum_error_naming_file_and_digests(tmp_path, corrupted_mirror,
                                                                     raw, no_network):
    dest = tmp_path / "out" / LABELS
    with pytest.raises(ChecksumMismatch) as err:
        fetch_file(raw, dest, mirror=corrupted_mirror, network=FAST)
    message = str(err.value)
    assert raw.mirror_path in message and raw.sha256 in message
    assert err.value.actual != raw.sha256 and err.value.actual in message
    assert not dest.exists()
    assert no_network == []  # a bad copy is reported, not silently replaced from upstream


def test_missing_file_offline_names_the_file_and_both_fixes(tmp_path, raw, no_network):
    with pytest.raises(DataUnavailable) as err:
        fetch_file(raw, tmp_path / LABELS, mirror=tmp_path, network=FAST)
    message = str(err.value)
    assert raw.mirror_path in message
    assert "REPLICATION_MIRROR" in message and "internet" in message
    assert len(no_network) == len(raw.urls) * FAST.attempts  # every URL, every retry
    assert not (tmp_path / LABELS).exists()


def test_upstream_download_retries_then_verifies(tmp_path, mirror, raw, monkeypatch):
    payload = (mirror / raw.mirror_path).read_bytes()
    calls = []

    def flaky(url, timeout):
        calls.append(url)
        if len(calls) == 1:
            raise urllib.error.URLError("temporary failure")
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", flaky)
    dest = tmp_path / LABELS
    assert fetch_file(raw, dest, mirror=None, network=FAST) == raw.urls[0]
    assert calls == [raw.urls[0], raw.urls[0]]
    assert sha256_file(dest) == raw.sha256


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    dest = tmp_path / "out" / "file.bin"

    def crash(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_bytes(dest, b"x" * 1000)
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_failed_fetch_keeps_the_previous_good_file(tmp_path, mirror, corrupted_mirror, raw):
    dest = tmp_path / "out" / LABELS
    fetch_file(raw, dest, mirror=mirror, network=FAST)
    dest.write_bytes(dest.read_bytes()[:-1])  # damage it so it is fetched again
    with pytest.raises(ChecksumMismatch):
        fetch_file(raw, dest, mirror=corrupted_mirror, network=FAST)
    assert leftovers(tmp_path) == []


def test_mirror_variable_must_name_a_folder(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        mirror_root(str(tmp_path / "nowhere"))
    assert mirror_root("") is None
    assert mirror_root(str(tmp_path)) == tmp_path.resolve()


def test_not_gzip_is_a_clear_error(tmp_path, raw, no_network):
    bad = tmp_path / "mirror" / raw.mirror_path
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match="not valid gzip"):
        fetch_file(raw, tmp_path / LABELS, mirror=tmp_path / "mirror", network=FAST)


def test_prepare_writes_all_four_files(tmp_path, mirror, no_network):
    out = tmp_path / "mnist"
    sources = mnist.prepare("fashion_mnist", out, mirror=mirror, network=FAST)
    assert sorted(sources) == sorted(mnist.FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(mnist.FILES)
    with pytest.raises(DataError, match="unknown dataset 'cifar'.*fashion_mnist"):
        mnist.prepare("cifar", out, mirror=mirror)
    shutil.rmtree(out)
