"""Training of the MNIST / Fashion-MNIST CNN and MLP, with true or permuted labels.

One plain Adam loop (the authors' optimiser) with their optional L2 penalty
``λ · Σ ½‖W‖²`` on chosen weight matrices, applied as Adam's coupled weight decay (its
gradient). The loop logs, at fixed step intervals, the data loss, the penalty term and fc1's
weight RMS, and the metrics say whether the penalty's equilibrium was reached (``equilibrium``):
the state the authors' 55k-step recipe ends in, on which the CNN's cascading maps depend
(paper_notes/sanity_checks.md §9).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from replication.data.mnist import train_validation_split
from replication.data.tensors import mnist_tensors, permuted_labels
from replication.devices import resolve_device
from replication.errors import ConfigError, missing_input
from replication.fileio import atomic_open, write_json
from replication.metrics.stats import wilson_interval
from replication.models import ModelCard, create_model
from replication.progress import progress as bar
from replication.schema import TrainRun

log = logging.getLogger("replication")

ARCHS = {"cnn": "mnist_cnn", "mlp": "mnist_mlp"}
LABELS = ("true", "random")
# The weights the L2 penalty covers, by reading (`train.l2_layers`):
# authors_code — their --reg penalises conv1, conv2, fc1 of the CNN; their MLP script ignores it
#   ("TO DO: put in regularization again");
# paper_text — App. B gives both architectures "weight decay (penalty 0.001)": here every layer
#   of the MLP but the logits, as the authors' CNN penalty spares its last layer.
L2_LAYERS = {"authors_code": {"mnist_cnn": ("conv1", "conv2", "fc1"), "mnist_mlp": ()},
             "paper_text": {"mnist_cnn": ("conv1", "conv2", "fc1"),
                            "mnist_mlp": ("fc1", "fc2", "fc3")}}
EVAL_BATCH = 250
LOG_POINTS = 100  # entries of the training log
# The penalty's equilibrium: the penalty term and fc1's weight RMS have stopped moving when, at
# the rate of the run's last EQUILIBRIUM_WINDOW (a least-squares slope against the learning-rate
# integral Σ lr: a schedule that anneals the rate to zero is not called converged just because
# the weights stop moving), training on for EQUILIBRIUM_HORIZON of Σ lr (1,000 steps at 1e-3,
# 10,000 at the authors' 1e-4) would change each by less than EQUILIBRIUM_TOLERANCE of its value.
EQUILIBRIUM_WINDOW = 0.1
EQUILIBRIUM_HORIZON = 1.0
EQUILIBRIUM_TOLERANCE = 0.1


def model_seed(seed: int, labels: str) -> int:
    """The seed of one model's initial weights and batch order: the two models of a pair
    (true and permuted labels) start from different, reproducible weights, as the authors'
    unseeded runs did (issue 15 §3)."""
    if labels not in LABELS:
        raise ConfigError(f"unknown labels {labels!r}; choose one of {list(LABELS)}")
    return int(np.random.SeedSequence([seed, LABELS.index(labels)]).generate_state(1)[0])


def initial_card(arch: str, labels: str, seed: int, init: str) -> ModelCard:
    """The untrained model of one member of a pair, its weights drawn from ``model_seed``."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    torch.manual_seed(model_seed(seed, labels))
    return create_model(ARCHS[arch], init=init)


def penalised_layers(model_name: str, l2_layers: str) -> tuple[str, ...]:
    if l2_layers not in L2_LAYERS:
        raise ConfigError(f"unknown train.l2_layers {l2_layers!r}; choose one of {list(L2_LAYERS)}")
    return L2_LAYERS[l2_layers][model_name]


class TrainingData:
    """55,000 training images (the first 5,000 held out for validation), true or permuted
    labels, optionally the first ``subset`` of them; validation and test with true labels."""

    def __init__(self, folder: str | os.PathLike, labels: str, seed: int,
                 validation_size: int = 5000, subset: int | None = None):
        if labels not in LABELS:
            raise ConfigError(f"unknown labels {labels!r}; choose one of {list(LABELS)}")
        pixels, targets = mnist_tensors(folder, "train")
        train, validation = train_validation_split(len(targets), validation_size)
        train_x, train_y = pixels[train], targets[train]
        if labels == "random":
            train_y = permuted_labels(train_y, seed)
        if subset is not None:
            if subset > len(train_y):
                raise ConfigError(f"train subset {subset} exceeds the {len(train_y)} training "
                                  "images; lower it or set it to null (all of them)")
            train_x, train_y = train_x[:subset], train_y[:subset]
        self.train = (train_x, train_y)
        self.validation = (pixels[validation], targets[validation])
        self.test = mnist_tensors(folder, "test")


def total_steps(config: TrainRun, n_train: int) -> int:
    """Optimiser steps of a run: ``steps``, or ``epochs`` passes of ⌈n / batch⌉ batches."""
    return config.steps or config.epochs * math.ceil(n_train / config.batch_size)


def learning_rates(config: TrainRun, steps: int) -> np.ndarray:
    """The learning rate of every step under the run's schedule."""
    if config.schedule == "constant":
        return np.full(steps, config.lr)
    if config.schedule == "cosine":  # as torch's CosineAnnealingLR: lr·½(1 + cos(π t / T))
        return config.lr * 0.5 * (1 + np.cos(np.pi * np.arange(steps) / steps))
    # one-cycle as torch's OneCycleLR without momentum cycling: lr/25 rising (cosine) to lr over
    # `warmup` of the steps, then cosine to lr/25/1e4
    start, end = config.lr / 25, config.lr / 25 / 1e4
    peak = float(config.warmup * steps) - 1
    t = np.arange(steps, dtype=np.float64)
    rising = start + (config.lr - start) * 0.5 * (1 - np.cos(np.pi * np.clip(t / peak, 0, 1)))
    falling_t = np.clip((t - peak) / (steps - 1 - peak), 0, 1)
    falling = end + (config.lr - end) * 0.5 * (1 + np.cos(np.pi * falling_t))
    return np.where(t <= peak, rising, falling)


def memory_layout(model: nn.Module) -> torch.memory_format:
    """Channels-last for a convolutional model (its CPU convolutions run ~1.2× faster in
    training and 2× in evaluation), the default layout otherwise."""
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return torch.channels_last if convolutional else torch.contiguous_format


def l2_penalty_term(model: nn.Module, layers: tuple[str, ...], strength: float) -> Tensor:
    """``strength · Σ ½‖W‖²`` over the weight matrices of ``layers`` (biases are spared)."""
    if not layers or strength == 0:
        return torch.zeros((), device=next(model.parameters()).device)
    return strength * sum(0.5 * model.get_submodule(name).weight.pow(2).sum() for name in layers)


def decayed_parameter_groups(model: nn.Module, layers: tuple[str, ...],
                             strength: float) -> list[dict]:
    """Adam's parameter groups with the L2 penalty as coupled weight decay (``grad += λ·W``) on
    the weight matrices of ``layers``: the gradient of ``λ · Σ ½‖W‖²`` applied inside the fused
    step. Through autograd the same gradient costs almost as much as the MLP's own forward and
    backward on a CPU (``benchmarks/l2_penalty.py``)."""
    decayed = {id(model.get_submodule(name).weight) for name in layers} if strength else set()
    groups = [{"params": [p for p in model.parameters() if id(p) in decayed],
               "weight_decay": strength},
              {"params": [p for p in model.parameters() if id(p) not in decayed]}]
    return [group for group in groups if group["params"]]


def weight_rms(model: nn.Module, layer: str = "fc1") -> float:
    return float(model.get_submodule(layer).weight.detach().pow(2).mean().sqrt())


def fit(model: nn.Module, images: Tensor, labels: Tensor, config: TrainRun, *, seed: int,
        layers: tuple[str, ...], strength: float, device: torch.device,
        progress: str | None = None, after_step=None) -> dict[str, list]:
    """Adam on (images, labels): reshuffled every epoch, ``total_steps`` steps; returns the log
    (step, lr, data loss and batch accuracy averaged since the last entry, penalty, fc1 RMS).
    ``progress`` names a bar of the steps on stderr; ``after_step(step, model)``, if given, is
    called after every step (snapshots for studies)."""
    steps = total_steps(config, len(labels))
    rates = learning_rates(config, steps)
    # The fused kernel updates all of a model's weights at once: on a CPU it makes an Adam step
    # 5× cheaper (40 → 8 ms for the MLP's 6.4M weights), the same update to rounding.
    optimizer = torch.optim.Adam(decayed_parameter_groups(model, layers, strength),
                                 lr=float(rates[0]), fused=device.type in ("cpu", "cuda"))
    generator = torch.Generator().manual_seed(seed)
    every = max(1, steps // LOG_POINTS)
    layout = memory_layout(model)
    history: dict[str, list] = {k: [] for k in ("step", "lr", "data_loss", "batch_acc",
                                                "penalty", "fc1_rms")}
    order, position, loss_sum, correct, seen = torch.empty(0, dtype=torch.long), 0, 0.0, 0, 0
    model.train()
    for step in (bar(range(steps), progress, unit="step") if progress else range(steps)):
        if position >= len(order):
            order, position = torch.randperm(len(labels), generator=generator), 0
        batch = order[position:position + config.batch_size]
        position += config.batch_size
        x, y = images[batch].to(device, memory_format=layout), labels[batch].to(device)
        for group in optimizer.param_groups:
            group["lr"] = float(rates[step])
        logits = model(x)
        data_loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        data_loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(step + 1, model)
        loss_sum += float(data_loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if (step + 1) % every == 0 or step + 1 == steps:
            with torch.no_grad():
                penalty = float(l2_penalty_term(model, layers, strength))
            for key, value in (("step", step + 1), ("lr", float(rates[step])),
                               ("data_loss", loss_sum / seen), ("batch_acc", correct / seen),
                               ("penalty", penalty), ("fc1_rms", weight_rms(model))):
                history[key].append(value)
            loss_sum, correct, seen = 0.0, 0, 0
    return history


def equilibrium(history: dict[str, list], tolerance: float = EQUILIBRIUM_TOLERANCE,
                window: float = EQUILIBRIUM_WINDOW) -> dict:
    """Whether the penalty term and fc1's RMS have stopped moving (``EQUILIBRIUM_TOLERANCE``):
    for each, ``<key>_drift``, the relative change ``EQUILIBRIUM_HORIZON`` more of Σ lr would
    bring at the rate of the last ``window`` of the run; ``reached`` when both are below
    ``tolerance``."""
    steps = np.asarray(history["step"], dtype=np.float64)
    # Σ lr up to each log entry (an entry's rate stands for the steps since the previous one)
    spent = np.cumsum(np.asarray(history["lr"]) * np.diff(steps, prepend=0))
    start = int(np.searchsorted(spent, (1 - window) * spent[-1], side="left"))
    start = max(0, min(start, len(steps) - 3))  # a slope needs a few points
    drifts = {}
    for key in ("penalty", "fc1_rms"):
        values = np.asarray(history[key][start:], dtype=np.float64)
        level = np.abs(values).mean()
        if level == 0 or len(values) < 2:
            drifts[key] = 0.0 if level == 0 else float("nan")
            continue
        slope = np.polyfit(spent[start:], values, 1)[0]
        drifts[key] = float(abs(slope) * EQUILIBRIUM_HORIZON / level)
    return {"window_start_step": int(steps[start]), "window": window,
            "horizon": EQUILIBRIUM_HORIZON, "tolerance": tolerance,
            "penalty_drift": drifts["penalty"], "fc1_rms_drift": drifts["fc1_rms"],
            "reached": bool(all(v < tolerance for v in drifts.values()))}


@torch.inference_mode()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, device: torch.device,
             batch_size: int = EVAL_BATCH) -> tuple[int, int]:
    """(correctly classified, scored) of ``images``."""
    model.eval()
    layout = memory_layout(model)
    correct = sum(int((model(images[i:i + batch_size].to(device, memory_format=layout))
                       .argmax(1).cpu()
                       == labels[i:i + batch_size]).sum())
                  for i in range(0, len(labels), batch_size))
    return correct, len(labels)


def evaluate_splits(model: nn.Module, data: TrainingData, device: torch.device,
                    train_images: int | None) -> dict:
    """``<split>_acc`` with its Wilson interval ``<split>_acc_ci``. train_acc scores the first
    ``train_images`` of the images trained on (all when null), with the labels trained on
    (``train_acc_images`` says how many); val_acc and test_acc the whole splits, true labels."""
    x, y = data.train
    n = len(y) if train_images is None else min(train_images, len(y))
    result: dict = {}
    for split, (images, labels) in (("train", (x[:n], y[:n])), ("val", data.validation),
                                    ("test", data.test)):
        correct, scored = accuracy(model, images, labels, device)
        result[f"{split}_acc"] = correct / scored
        result[f"{split}_acc_ci"] = wilson_interval(correct, scored).as_json()
        if split == "train":
            result["train_acc_images"] = scored
    return result


def train_mnist_model(dataset: str, arch: str, labels: str, folder: str | os.PathLike,
                      config: TrainRun, *, seed: int, init: str, l2_penalty: float,
                      l2_layers: str = "authors_code", validation_size: int = 5000,
                      train_acc_images: int | None = None,
                      device: str = "auto") -> tuple[nn.Module, dict]:
    """Train one model of the data-randomization matrix; return it and its metrics (accuracies
    with Wilson intervals, the final loss split into data and penalty terms, fc1's RMS, the
    equilibrium criterion and the training log)."""
    card = initial_card(arch, labels, seed, init)
    own_seed = model_seed(seed, labels)
    layers = penalised_layers(card.name, l2_layers)
    strength = l2_penalty if layers else 0.0
    data = TrainingData(folder, labels, seed, validation_size, config.subset)
    target = resolve_device(device)
    model = card.model.to(target, memory_format=memory_layout(card.model))
    log.info("training %s-%s-%s: %d steps, batch %d, lr %g (%s), L2 %g on %s", dataset, arch,
             labels, total_steps(config, len(data.train[1])), config.batch_size, config.lr,
             config.schedule, strength, list(layers) or "nothing")
    start = time.perf_counter()
    history = fit(model, *data.train, config, seed=own_seed, layers=layers, strength=strength,
                  device=target, progress=f"training {dataset}-{arch}-{labels}")
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    accuracies = evaluate_splits(model, data, target, train_acc_images)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    window = max(1, math.ceil(len(history["step"]) / 10))  # the last ~10% of the log entries
    metrics = {
        "dataset": dataset, "arch": arch, "model": card.name, "labels": labels, **accuracies,
        "n_train": len(data.train[1]), "steps": history["step"][-1],
        "epochs": round(history["step"][-1] * config.batch_size / len(data.train[1]), 2),
        "seconds": round(seconds, 1), "eval_seconds": round(time.perf_counter() - start, 1),
        "seed": seed, "model_seed": own_seed, "init": init, "l2_layers": l2_layers,
        "l2_penalty": strength, "penalised": list(layers),
        "final": {"data_loss": float(np.mean(history["data_loss"][-window:])),
                  "penalty": history["penalty"][-1], "fc1_rms": history["fc1_rms"][-1]},
        "equilibrium": equilibrium(history), "config": config.as_params(), "log": history,
    }
    metrics["final"]["loss"] = metrics["final"]["data_loss"] + metrics["final"]["penalty"]
    return model, metrics


def save_checkpoint(path: str | os.PathLike, model: nn.Module, metrics: dict) -> None:
    """The state dict plus how it was made; written atomically."""
    with atomic_open(path) as handle:
        torch.save({"state_dict": model.state_dict(), "metrics": metrics}, handle)


def load_checkpoint(path: str | os.PathLike, arch: str) -> nn.Module:
    """The trained model of a checkpoint written by ``save_checkpoint``, in eval mode."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    if not Path(path).is_file():
        raise missing_input(path, f"the trained {arch} checkpoint")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    card = create_model(ARCHS[arch])
    card.model.load_state_dict(checkpoint["state_dict"])
    return card.model.eval()


def train_from_settings(ctx, dataset: str, arch: str, labels: str, seed: int,
                        folder: str | os.PathLike) -> tuple[nn.Module, dict]:
    """One model of the matrix as the stage's `train` settings say, for training seed ``seed``."""
    section = ctx.settings("train", model=ARCHS[arch])
    return train_mnist_model(
        dataset, arch, labels, folder, getattr(section, f"{labels}_labels"), seed=seed,
        init=section.init, l2_penalty=section.l2_penalty, l2_layers=section.l2_layers,
        validation_size=ctx.settings("data.validation_size"),
        train_acc_images=section.train_acc_images, device=ctx.settings("device"))


def run_training_stage(ctx) -> dict:
    """The DVC `train` stage: train one model of the matrix, write its checkpoint and metrics."""
    dataset, arch, labels = ctx.item["dataset"], ctx.item["arch"], ctx.item["labels"]
    model, metrics = train_from_settings(ctx, dataset, arch, labels, ctx.settings("seed"),
                                         ctx.input("data"))
    save_checkpoint(ctx.output("checkpoint"), model, metrics)
    write_json(ctx.output("metrics"), metrics)
    log.info("%s-%s-%s: train %.4f, test %.4f in %.0f s; penalty %.4f, fc1 RMS %.4f, "
             "equilibrium %s", dataset, arch, labels, metrics["train_acc"], metrics["test_acc"],
             metrics["seconds"], metrics["final"]["penalty"], metrics["final"]["fc1_rms"],
             "reached" if metrics["equilibrium"]["reached"] else "not reached")
    return metrics


def training_cost(ctx) -> list:
    """Passes of one training run: its steps over batches of training images, then one
    evaluation pass over the scored training images, the validation and the test split."""
    from replication.cost import Cost

    arch, labels = ctx.item["arch"], ctx.item["labels"]
    section = ctx.settings("train", model=ARCHS[arch])
    config = getattr(section, f"{labels}_labels")
    validation = ctx.settings("data.validation_size")
    n_train = config.subset or 60_000 - validation
    steps = total_steps(config, n_train)
    scored = n_train if section.train_acc_images is None else min(section.train_acc_images, n_train)
    return [Cost(ARCHS[arch], f"{labels} labels: {steps:,} steps × {config.batch_size} images",
                 steps * config.batch_size, scored + validation + 10_000)]
