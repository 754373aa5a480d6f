"""Training: permuted labels, pair seeding, the penalty and equilibrium record, the stage's
checkpoint and metrics, determinism, config errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import ROOT, stage_context
from tolerance import atol, network_ops
from replication.config import load_params
from replication.data import mnist
from replication.data.idx import encode_idx
from replication.data.tensors import mnist_tensors, permuted_labels
from replication.errors import ConfigError, DataError
from replication.schema import TrainRun, TrainSettings
from replication.training import (TrainingData, decayed_parameter_groups, equilibrium,
                                  initial_card, l2_penalty_term, learning_rates, load_checkpoint,
                                  model_seed, run_training_stage, total_steps, train_mnist_model)

# A real-MNIST folder cut to the first images, so a whole run (training and the evaluation of
# every split) takes seconds: 1,000 training images of which the first 200 are validation.
N_TRAIN, N_TEST, N_VALIDATION = 1000, 300, 200
SMOKE = TrainRun(epochs=1, batch_size=50, lr=1e-3, subset=300, schedule="onecycle")
REQUIRED_KEYS = {"train_acc", "train_acc_ci", "val_acc", "test_acc", "test_acc_ci", "steps",
                 "seconds", "seed", "final", "equilibrium", "log"}


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


def _train(folder, labels: str = "true", arch: str = "cnn", config: TrainRun = SMOKE,
           seed: int = 0, l2_layers: str = "authors_code"):
    return train_mnist_model("mnist", arch, labels, folder, config, seed=seed,
                             init="authors_code", l2_penalty=0.001, l2_layers=l2_layers,
                             validation_size=N_VALIDATION, device="cpu")


def test_permutation_keeps_class_counts_and_breaks_the_labels(tiny_mnist):
    _, labels = mnist_tensors(tiny_mnist, "train")
    permuted = permuted_labels(labels, seed=0)
    assert torch.equal(torch.bincount(permuted, minlength=10), torch.bincount(labels, minlength=10))
    assert (permuted == labels).float().mean() < 0.3  # about 10% agree by chance
    assert torch.equal(permuted, permuted_labels(labels, seed=0))
    assert not torch.equal(permuted, permuted_labels(labels, seed=1))


def test_random_label_data_permutes_only_the_training_labels(tiny_mnist):
    true = TrainingData(tiny_mnist, "true", 0, N_VALIDATION, subset=100)
    random = TrainingData(tiny_mnist, "random", 0, N_VALIDATION, subset=100)
    assert len(random.train[1]) == 100
    assert torch.equal(random.train[0], true.train[0])
    assert not torch.equal(random.train[1], true.train[1])
    assert torch.equal(random.validation[1], true.validation[1])
    assert torch.equal(random.test[1], true.test[1])


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_the_two_models_of_a_pair_start_from_different_reproducible_weights(arch):
    true, random = (initial_card(arch, labels, 0, "authors_code").model
                    for labels in ("true", "random"))
    again = initial_card(arch, "random", 0, "authors_code").model
    other_seed = initial_card(arch, "random", 1, "authors_code").model
    for name, weight in random.state_dict().items():
        assert torch.equal(weight, again.state_dict()[name]), name  # same seed, same draw
    weights = [n for n in random.state_dict() if n.endswith("weight")]
    assert all(not torch.equal(true.state_dict()[n], random.state_dict()[n]) for n in weights)
    assert all(not torch.equal(other_seed.state_dict()[n], random.state_dict()[n])
               for n in weights)
    assert len({model_seed(s, labels) for s in range(3) for labels in ("true", "random")}) == 6


def test_the_metrics_record_the_penalty_term_and_the_loss_split(tiny_mnist):
    model, metrics = _train(tiny_mnist, config=TrainRun(epochs=None, steps=12, batch_size=25,
                                                        lr=1e-3))
    weights = [model.get_submodule(n).weight for n in ("conv1", "conv2", "fc1")]
    expected = 0.001 * sum(0.5 * float((w.double() ** 2).sum()) for w in weights)
    scale = sum(float((w.double() ** 2).sum()) for w in weights) * 0.001
    tolerance = atol(scale, ops=sum(w.numel() for w in weights), dtype=torch.float32)
    assert metrics["final"]["penalty"] == pytest.approx(expected, abs=tolerance)
    assert metrics["penalised"] == ["conv1", "conv2", "fc1"] and metrics["l2_penalty"] == 0.001
    assert metrics["final"]["loss"] == pytest.approx(metrics["final"]["data_loss"]
                                                     + metrics["final"]["penalty"], rel=1e-12)
    assert metrics["final"]["fc1_rms"] == pytest.approx(
        float(weights[2].double().pow(2).mean().sqrt()), rel=1e-5)
    log = metrics["log"]
    assert log["step"][-1] == metrics["steps"] == 12
    assert len(log["penalty"]) == len(log["step"]) == len(log["data_loss"]) == len(log["fc1_rms"])
    assert log["penalty"][-1] == metrics["final"]["penalty"]
    assert all(p > 0 for p in log["penalty"])
    assert set(metrics["equilibrium"]) >= {"penalty_drift", "fc1_rms_drift", "reached"}


@pytest.mark.parametrize("reading, penalised", [("authors_code", []),
                                                ("paper_text", ["fc1", "fc2", "fc3"])])
def test_the_mlp_penalty_follows_the_reading(tiny_mnist, reading, penalised):
    model, metrics = _train(tiny_mnist, arch="mlp", l2_layers=reading,
                            config=TrainRun(epochs=None, steps=3, batch_size=25, lr=1e-3))
    assert metrics["penalised"] == penalised
    assert (metrics["final"]["penalty"] > 0) == bool(penalised)
    assert metrics["final"]["penalty"] == pytest.approx(
        float(l2_penalty_term(model, tuple(penalised), 0.001)), rel=1e-6, abs=0)


@pytest.mark.parametrize("arch, layers", [("mlp", ("fc1", "fc2", "fc3")),
                                           ("cnn", ("conv1", "conv2", "fc1"))])
def test_adam_weight_decay_takes_the_steps_of_the_l2_penalty_through_autograd(arch, layers):
    """The training loop applies λ·Σ½‖W‖² as Adam's coupled weight decay: its steps are those
    of the penalty added to the loss, to float32 rounding. λ is large, so that a missing or
    misplaced decay moves the weights by ≈ lr a step, far beyond the tolerance."""
    strength, lr, steps = 0.5, 1e-3, 3
    torch.manual_seed(0)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    decayed, penalised = (initial_card(arch, "true", 0, "authors_code").model for _ in range(2))
    by_decay = torch.optim.Adam(decayed_parameter_groups(decayed, layers, strength), lr=lr)
    by_penalty = torch.optim.Adam(penalised.parameters(), lr=lr)
    for _ in range(steps):
        for model, optimizer, penalty in ((decayed, by_decay, 0.0), (penalised, by_penalty, 1.0)):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            (loss + penalty * l2_penalty_term(model, layers, strength)).backward()
            optimizer.step()
    for (name, a), b in zip(decayed.named_parameters(), penalised.parameters()):
        # the two gradients differ by a few roundings; Adam's normalised step passes at most a
        # quarter of a relative gradient error on, so each step adds ≈ eps·(|W| + lr)
        scale = float(b.detach().abs().max()) + steps * lr
        tolerance = atol(scale, ops=8 * steps, dtype=torch.float32)
        assert (a - b).abs().max() <= tolerance, name


def test_the_mlp_paper_text_penalty_shrinks_the_weights_of_never_lit_pixels(tiny_mnist):
    """Never-lit pixels get no data gradient: without a penalty their first-layer weights keep
    their initial values; with the paper-text penalty Adam moves them towards 0."""
    x, _ = mnist_tensors(tiny_mnist, "train")
    never = ((x[N_VALIDATION:] > 0).sum(0)[0] == 0).flatten()
    assert never.sum() > 50
    config = TrainRun(epochs=None, steps=60, batch_size=50, lr=1e-3)
    start = initial_card("mlp", "true", 0, "authors_code").model.fc1.weight[:, never]
    plain, _ = _train(tiny_mnist, arch="mlp", config=config)
    decayed, _ = _train(tiny_mnist, arch="mlp", config=config, l2_layers="paper_text")
    assert torch.equal(plain.fc1.weight[:, never], start)
    assert decayed.fc1.weight[:, never].abs().mean() < 0.5 * start.abs().mean()


def _log(values, lr, steps):
    return {"step": list(steps), "lr": list(lr), "penalty": list(values),
            "fc1_rms": list(np.sqrt(values))}


def test_the_equilibrium_criterion_on_constructed_logs():
    steps = np.arange(1, 101) * 25  # 2,500 steps at 1e-3: Σ lr = 2.5
    lr = np.full(100, 1e-3)
    settled = 0.2 + 10 * np.exp(-steps / 200)  # converged long before the end
    assert equilibrium(_log(settled, lr, steps))["reached"]
    decaying = 0.2 + 10 * np.exp(-steps / 5000)  # still shrinking
    result = equilibrium(_log(decaying, lr, steps))
    assert not result["reached"] and result["penalty_drift"] > 0.1
    # one-cycle: the same slow decay, but the rate anneals to 0 so the weights stop moving
    annealed = learning_rates(TrainRun(epochs=None, steps=2500, batch_size=50, lr=1e-3,
                                       schedule="onecycle"), 2500)[steps - 1]
    spent = np.cumsum(annealed * 25)
    frozen = 0.2 + 10 * np.exp(-spent / 5.0)
    assert not equilibrium(_log(frozen, annealed, steps))["reached"]


def test_the_learning_rate_schedules():
    run = TrainRun(epochs=None, steps=1000, batch_size=50, lr=1e-3, schedule="onecycle")
    rates = learning_rates(run, 1000)
    assert rates[0] == pytest.approx(1e-3 / 25) and rates.max() == pytest.approx(1e-3, rel=1e-6)
    assert int(rates.argmax()) == 299 and rates[-1] == pytest.approx(1e-3 / 25 / 1e4)
    assert np.all(learning_rates(TrainRun(epochs=1, batch_size=1, lr=1e-3), 10) == 1e-3)
    assert total_steps(TrainRun(epochs=2, batch_size=64, lr=1e-3), 1000) == 2 * 16
    assert total_steps(TrainRun(epochs=None, steps=7, batch_size=64, lr=1e-3), 1000) == 7


def test_smoke_stage_writes_a_checkpoint_that_loads_and_the_metrics(tiny_mnist, tmp_path):
    checkpoint, metrics_path = tmp_path / "models" / "m.pt", tmp_path / "metrics" / "m.json"
    ctx = stage_context("train", inputs={"data": tiny_mnist},
                        outputs={"checkpoint": checkpoint, "metrics": metrics_path},
                        item={"dataset": "mnist", "arch": "cnn", "labels": "true"},
                        device="cpu", data={"validation_size": N_VALIDATION},
                        train={"true_labels": {"subset": None, "schedule": "constant"},
                               "train_acc_images": 100})
    metrics = run_training_stage(ctx)
    written = json.loads(metrics_path.read_text())
    assert REQUIRED_KEYS <= set(written) and written == json.loads(json.dumps(metrics))
    assert written["n_train"] == N_TRAIN - N_VALIDATION and written["train_acc_images"] == 100
    assert written["seed"] == 0 and written["model_seed"] == model_seed(0, "true")
    assert all(0.0 <= written[k] <= 1.0 for k in ("train_acc", "val_acc", "test_acc"))
    for split, n in (("train", 100), ("val", N_VALIDATION), ("test", N_TEST)):
        interval = written[f"{split}_acc_ci"]
        assert interval["method"] == "wilson" and interval["n"] == n
        assert interval["low"] <= written[f"{split}_acc"] <= interval["high"]
    assert written["test_acc"] > 0.2, "eight steps on 800 real digits already beat chance (0.1)"

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
    different_seed, _ = _train(tiny_mnist, "random", "mlp", seed=1)
    assert not torch.equal(first.fc1.weight, different_seed.fc1.weight)


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_every_profile_has_valid_training_settings(profile):
    section = TrainSettings.from_params(load_params(ROOT / "params.yaml", profile)["train"],
                                        "train")
    if profile == "paper":  # the authors' settings
        assert [(c.epochs, c.batch_size, c.lr, c.schedule, c.subset) for c in
                (section.true_labels, section.random_labels)] == [
            (50, 50, 1e-4, "constant", None), (100, 50, 1e-4, "constant", None)]
        assert section.l2_penalty == 0.001 and section.train_acc_images is None


@pytest.mark.parametrize("change, message", [
    ({"schedule": "step"}, "schedule is 'step'.*constant"),
    ({"epochs": 0}, "epochs is 0"),
    ({"lr": -1.0}, "lr is -1.0"),
    ({"subset": 0}, "subset is 0"),
    ({"warmup": 1.5}, "warmup is 1.5"),
    ({"momentum": 0.9}, "momentum.*unknown key"),
    ({"steps": 100}, "epochs or steps long: set one"),
    ({"epochs": None}, "epochs or steps long: set one"),
])
def test_invalid_training_settings_say_what_to_change(change, message):
    section = {"epochs": 1, "batch_size": 10, "lr": 1e-3, **change}
    with pytest.raises(ConfigError, match=message):
        TrainRun.from_params(section, "train.true_labels")


def test_a_missing_checkpoint_names_it_and_says_to_run_dvc_repro(tmp_path):
    path = tmp_path / "models" / "mnist-cnn-true.pt"
    with pytest.raises(DataError, match=rf"^{path} does not exist \(the trained cnn checkpoint\)\. "
                                        r"Run `dvc repro` in the repository root"):
        load_checkpoint(path, "cnn")


def test_a_subset_larger_than_the_training_set_is_a_config_error(tiny_mnist):
    with pytest.raises(ConfigError, match="subset 1000 exceeds the 800 training images"):
        TrainingData(tiny_mnist, "true", 0, N_VALIDATION, subset=N_TRAIN)
