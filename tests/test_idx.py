"""IDX parsing and the MNIST / Fashion-MNIST loaders."""

from __future__ import annotations

import numpy as np
import pytest

from replication.data import mnist
from replication.data.idx import encode_idx, parse_idx
from replication.data.tensors import mnist_tensors
from replication.errors import DataError

# No float result of torch or numpy kernels is compared here: .ci/numeric-isa skips this file.
pytestmark = pytest.mark.isa_independent


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_roundtrip(dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    parsed = parse_idx(encode_idx(array))
    assert parsed.shape == (2, 3, 4) and parsed.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(parsed, array)


def test_header_is_big_endian():
    data = bytes([0, 0, 0x08, 1, 0, 0, 1, 2]) + bytes(range(256)) + bytes(2)  # 0x0102 = 258
    assert parse_idx(data).shape == (258,)


@pytest.mark.parametrize("data, message", [
    (b"\x01\x00\x08\x01", "not an IDX file"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX element type 0x07"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "declares shape \\(3,\\)"),
])
def test_malformed_input_is_a_clear_error(data, message):
    with pytest.raises(DataError, match=message):
        parse_idx(data, "broken")


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory, mirror):
    folder = tmp_path_factory.mktemp("mnist")
    mnist.prepare("mnist", folder, mirror=mirror)
    return folder


def test_real_mnist_loads_with_the_expected_shapes(mnist_folder):
    images, labels = mnist.load(mnist_folder, "train")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and set(np.unique(labels)) == set(range(10))
    test_images, test_labels = mnist.load(mnist_folder, "test")
    assert test_images.shape == (10000, 28, 28) and len(test_labels) == 10000
    assert labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first MNIST labels


def test_summary_counts_and_split(mnist_folder):
    summary = mnist.summarize("mnist", mnist_folder, n_validation=5000)
    assert summary["train"]["class_counts"][1] == 6742
    assert sum(summary["test"]["class_counts"]) == 10000
    assert summary["split"] == {"train": 55000, "validation": 5000}


def test_split_holds_out_the_first_images():
    train, validation = mnist.train_validation_split(60000, 5000)
    assert (validation.start, validation.stop, train.start, train.stop) == (0, 5000, 5000, 60000)
    with pytest.raises(DataError):
        mnist.train_validation_split(100, 100)


def test_missing_prepared_data_names_the_path_and_commands_that_exist(tmp_path):
    folder = tmp_path / "datasets" / "mnist"
    for load in (mnist.load, mnist_tensors):
        with pytest.raises(DataError) as missing:
            load(folder, "train")
        message = str(missing.value)
        assert message.startswith(f"{folder} does not exist (the prepared mnist data). Run `dvc "
                                  "repro` in the repository root")
        assert f"mnist.prepare('mnist', '{folder}', mirror=mirror_root())" in message
        assert "python -m replication data " not in message  # no such command
    folder.mkdir(parents=True)
    with pytest.raises(DataError, match=f"^{folder / 'train-images-idx3-ubyte'} does not exist"):
        mnist.load(folder, "train")
    with pytest.raises(DataError, match="unknown split"):
        mnist.load(tmp_path, "validation")
