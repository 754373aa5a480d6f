"""Training: permuted labels, the stage's checkpoint and metrics, determinism, config errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import ROOT
from tolerance import atol, network_ops
from replication.config import load_params
from replication.data import mnist
from replication.data.idx import encode_idx
from replication.data.tensors import mnist_tensors, permuted_labels
from replication.errors import ConfigError, DataError
from replication.training import (MnistDataModule, TrainConfig, load_checkpoint,
                                  run_training_stage, train_mnist_model)

# A real-MNIST folder cut to the first images, so a whole run (training and the evaluation of
# every split) takes seconds: 1,000 training images of which the first 200 are validation.
N_TRAIN, N_TEST, N_VALIDATION = 1000, 300, 200
SMOKE = TrainConfig(epochs=1, batch_size=50, lr=1e-3, subset=300, schedule="onecycle")
REQUIRED_KEYS = {"train_acc", "val_acc", "test_acc", "epochs", "seconds", "seed"}


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory, mirror):
    full = tmp_path_factory.mktemp("mnist")
    mnist.prepare("mnist", full, mirror=mirror)
    tiny = tmp_path_factory.mktemp("tiny_mnist")
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        images, labels = mnist.load(full, split)
        names = mnist.SPLIT_FILES[split]
        (tiny / names[0]).write_bytes(encode_idx(images[:n]))
        (tiny / names[1]).write_bytes(encode_idx(labels[:n].astype(np.uint8)))
    return tiny


def _train(folder, labels: str = "true", arch: str = "cnn", config: TrainConfig = SMOKE):
    return train_mnist_model("mnist", arch, labels, folder, config, seed=0, init="authors_code",
                             l2_penalty=0.001, validation_size=N_VALIDATION,
                             accelerator="cpu", devices=1, progress_bar=False)


def test_permutation_keeps_class_counts_and_breaks_the_labels(tiny_mnist):
    _, labels = mnist_tensors(tiny_mnist, "train")
    permuted = permuted_labels(labels, seed=0)
    assert torch.equal(torch.bincount(permuted, minlength=10), torch.bincount(labels, minlength=10))
    assert (permuted == labels).float().mean() < 0.3  # about 10% agree by chance
    assert torch.equal(permuted, permuted_labels(labels, seed=0))
    assert not torch.equal(permuted, permuted_labels(labels, seed=1))


def test_random_label_data_module_permutes_only_the_training_labels(tiny_mnist):
    true = MnistDataModule(tiny_mnist, "true", 0, 50, N_VALIDATION, subset=100)
    random = MnistDataModule(tiny_mnist, "random", 0, 50, N_VALIDATION, subset=100)
    true.setup(), random.setup()
    assert len(random.train_set) == 100
    assert torch.equal(random.train_set.tensors[0], true.train_set.tensors[0])
    assert not torch.equal(random.train_set.tensors[1], true.train_set.tensors[1])
    assert torch.equal(random.validation_set.tensors[1], true.validation_set.tensors[1])
    assert torch.equal(random.test_set.tensors[1], true.test_set.tensors[1])


def test_smoke_stage_writes_a_checkpoint_that_loads_and_the_metrics(tiny_mnist, tmp_path):
    params = load_params(ROOT / "params.yaml", "smoke")
    params["train"].update(accelerator="cpu", devices=1)
    params["train"]["true_labels"] = {**params["train"]["true_labels"], "subset": 300}
    params["data"]["validation_size"] = N_VALIDATION
    checkpoint, metrics_path = tmp_path / "models" / "m.pt", tmp_path / "metrics" / "m.json"
    metrics = run_training_stage("mnist", "cnn", "true", params, tiny_mnist, checkpoint,
                                 metrics_path)
    written = json.loads(metrics_path.read_text())
    assert REQUIRED_KEYS <= set(written) and written == json.loads(json.dumps(metrics))
    assert written["n_train"] == 300 and written["epochs"] == 1 and written["seed"] == 0
    assert all(0.0 <= written[k] <= 1.0 for k in ("train_acc", "val_acc", "test_acc"))
    assert written["test_acc"] > 0.2, "three steps on 300 real digits already beat chance (0.1)"

    model = load_checkpoint(checkpoint, "cnn")
    x, y = mnist_tensors(tiny_mnist, "test")
    with torch.no_grad():
        logits = model(x)
    correct = int((logits.argmax(1) == y).sum())
    # The stage scored the images in other batches: an image whose top two logits lie within
    # their rounding through the forward may be counted either way.
    top_two = logits.topk(2, dim=1).values
    rounding = atol(logits, ops=network_ops(model, backward=False), dtype=torch.float32)
    ambiguous = int((top_two[:, 0] - top_two[:, 1] <= 2 * rounding).sum())
    assert abs(correct - round(written["test_acc"] * len(y))) <= ambiguous


def test_same_seed_gives_identical_weights(tiny_mnist):
    first, metrics = _train(tiny_mnist, "random", "mlp")
    second, _ = _train(tiny_mnist, "random", "mlp")
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert metrics["n_train"] == SMOKE.subset
    different_seed, _ = train_mnist_model(
        "mnist", "mlp", "random", tiny_mnist, SMOKE, seed=1, init="authors_code",
        l2_penalty=0.0, validation_size=N_VALIDATION, accelerator="cpu", devices=1,
        progress_bar=False)
    assert not torch.equal(first.fc1.weight, different_seed.fc1.weight)


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_every_profile_has_valid_training_settings(profile):
    section = load_params(ROOT / "params.yaml", profile)["train"]
    configs = [TrainConfig.from_params(section[f"{labels}_labels"]) for labels in ("true", "random")]
    if profile == "paper":  # the authors' settings
        assert [(c.epochs, c.batch_size, c.lr, c.schedule, c.subset) for c in configs] == [
            (50, 50, 1e-4, "constant", None), (100, 50, 1e-4, "constant", None)]


@pytest.mark.parametrize("change, message", [
    ({"schedule": "step"}, "schedule is 'step'.*constant"),
    ({"epochs": 0}, "epochs is 0.*positive integer"),
    ({"lr": -1.0}, "lr is -1.0"),
    ({"subset": 0}, "subset is 0.*null"),
    ({"warmup": 1.5}, "warmup is 1.5.*between 0 and 1"),
    ({"momentum": 0.9}, "momentum.*expected keys"),
])
def test_invalid_training_settings_say_what_to_change(change, message):
    section = {"epochs": 1, "batch_size": 10, "lr": 1e-3, **change}
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_params(section)


def test_a_missing_checkpoint_names_it_and_says_to_run_dvc_repro(tmp_path):
    path = tmp_path / "models" / "mnist-cnn-true.pt"
    with pytest.raises(DataError, match=rf"^{path} does not exist \(the trained cnn checkpoint\)\. "
                                        r"Run `dvc repro` in the repository root"):
        load_checkpoint(path, "cnn")


def test_a_subset_larger_than_the_training_set_is_a_config_error(tiny_mnist):
    data = MnistDataModule(tiny_mnist, "true", 0, 50, N_VALIDATION, subset=N_TRAIN)
    with pytest.raises(ConfigError, match="subset 1000 exceeds the 800 training images"):
        data.setup()
