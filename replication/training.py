"""Lightning training of the MNIST / Fashion-MNIST CNN and MLP, with true or permuted labels."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from replication.data.mnist import train_validation_split
from replication.data.tensors import mnist_tensors, permuted_labels, tensor_dataset
from replication.errors import ConfigError, missing_input
from replication.fileio import atomic_open, write_json
from replication.models import create_model

ARCHS = {"cnn": "mnist_cnn", "mlp": "mnist_mlp"}
LABELS = ("true", "random")
# The authors' --reg penalty covers these weights only (CNN); their MLP had none.
PENALISED = {"mnist_cnn": ("conv1", "conv2", "fc1"), "mnist_mlp": ()}
# Learning rate per optimizer step: the authors' constant lr, cosine decay to 0, or one cycle
# (rise from lr/25 to lr over the first `warmup` fraction of steps, then cosine decay to ~0).
SCHEDULES = ("constant", "cosine", "onecycle")
EVAL_BATCH = 500


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    subset: int | None = None  # train on the first N of the 55,000 (after any permutation)
    schedule: str = "constant"
    warmup: float = 0.3  # onecycle only: fraction of the steps spent rising to lr

    def __post_init__(self) -> None:
        where = "params.yaml train.*_labels"
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}.{name} is {value!r}; it must be a positive integer")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ConfigError(f"{where}.lr is {self.lr!r}; it must be a positive number")
        if self.subset is not None and (not isinstance(self.subset, int) or self.subset < 1):
            raise ConfigError(f"{where}.subset is {self.subset!r}; use null (all 55,000 "
                              "training images) or a positive integer")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"{where}.schedule is {self.schedule!r}; choose one of "
                              f"{list(SCHEDULES)}")
        if not 0 < self.warmup < 1:
            raise ConfigError(f"{where}.warmup is {self.warmup!r}; it must lie strictly "
                              "between 0 and 1 (a fraction of the steps)")

    @classmethod
    def from_params(cls, section: dict) -> "TrainConfig":
        try:
            return cls(**section)
        except TypeError as err:
            raise ConfigError(f"params.yaml train.*_labels: {err}; expected keys "
                              f"{list(cls.__annotations__)}") from None


class MnistDataModule(L.LightningDataModule):
    """55,000 training images (first 5,000 held out for validation), true or permuted labels."""

    def __init__(self, folder: str | os.PathLike, labels: str, seed: int, batch_size: int,
                 validation_size: int = 5000, subset: int | None = None):
        super().__init__()
        if labels not in LABELS:
            raise ConfigError(f"unknown labels {labels!r}; choose one of {list(LABELS)}")
        self.folder, self.labels, self.seed = Path(folder), labels, seed
        self.batch_size, self.validation_size, self.subset = batch_size, validation_size, subset

    def setup(self, stage: str | None = None) -> None:
        pixels, targets = mnist_tensors(self.folder, "train")
        train, validation = train_validation_split(len(targets), self.validation_size)
        train_x, train_y = pixels[train], targets[train]
        if self.labels == "random":
            train_y = permuted_labels(train_y, self.seed)
        if self.subset is not None:
            if self.subset > len(train_y):
                raise ConfigError(f"train subset {self.subset} exceeds the {len(train_y)} "
                                  "training images; lower it or set it to null (all of them)")
            train_x, train_y = train_x[: self.subset], train_y[: self.subset]
        self.train_set = tensor_dataset(train_x, train_y)
        self.validation_set = tensor_dataset(pixels[validation], targets[validation])
        self.test_set = tensor_dataset(*mnist_tensors(self.folder, "test"))

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.validation_set, EVAL_BATCH)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, EVAL_BATCH)


class Classifier(L.LightningModule):
    """Cross-entropy with the authors' optional L2 penalty 0.001·Σ ½‖W‖² on chosen layers."""

    def __init__(self, model: nn.Module, lr: float, l2_penalty: float = 0.0,
                 penalised: tuple[str, ...] = (), schedule: str = "constant",
                 warmup: float = 0.3):
        super().__init__()
        self.model, self.lr = model, lr
        self.l2_penalty, self.penalised = l2_penalty, penalised
        self.schedule, self.warmup = schedule, warmup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _penalty(self) -> torch.Tensor:
        weights = [self.model.get_submodule(name).weight for name in self.penalised]
        return self.l2_penalty * sum(0.5 * (w ** 2).sum() for w in weights) if weights else 0.0

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y) + self._penalty()
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_batch_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)
        return loss

    def _accuracy(self, batch, name: str) -> None:
        x, y = batch
        self.log(name, (self(x).argmax(1) == y).float().mean(), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._accuracy(batch, "val_acc")

    def test_step(self, batch, batch_idx):
        self._accuracy(batch, "test_acc")

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        if self.schedule == "constant":
            return optimizer
        steps = int(self.trainer.estimated_stepping_batches)
        if self.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        else:  # Adam's betas stay the authors'; only the learning rate cycles
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=self.lr, total_steps=steps, pct_start=self.warmup,
                cycle_momentum=False)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "step"}}


@torch.inference_mode()
def accuracy(model: nn.Module, dataset, batch_size: int = EVAL_BATCH,
             description: str | None = None) -> float:
    """Fraction of ``dataset`` that ``model`` classifies correctly (a progress bar if described)."""
    model.eval()
    batches = DataLoader(dataset, batch_size)
    correct = sum(int((model(x).argmax(1) == y).sum())
                  for x, y in tqdm(batches, desc=description, disable=description is None,
                                   leave=False))
    return correct / len(dataset)


def train_mnist_model(dataset: str, arch: str, labels: str, folder: str | os.PathLike,
                      config: TrainConfig, *, seed: int, init: str, l2_penalty: float,
                      validation_size: int = 5000, accelerator: str = "auto",
                      devices: str | int = "auto", progress_bar: bool = True
                      ) -> tuple[nn.Module, dict]:
    """Train one model of the data-randomization matrix; return it and its metrics.

    Each split is evaluated once, after training: train_acc on the images trained on (the
    subset, if any, with the labels trained on), val_acc and test_acc with the true labels.
    """
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    L.seed_everything(seed, workers=True, verbose=False)
    card = create_model(ARCHS[arch], init=init)
    data = MnistDataModule(folder, labels, seed, config.batch_size, validation_size, config.subset)
    module = Classifier(card.model, config.lr, l2_penalty, PENALISED[card.name],
                        config.schedule, config.warmup)
    # No validation loop during fit: val_acc is measured once, below, with the final weights.
    trainer = L.Trainer(max_epochs=config.epochs, deterministic=True, accelerator=accelerator,
                        devices=devices, logger=False, enable_checkpointing=False,
                        enable_progress_bar=progress_bar, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - start
    model = module.model.cpu()
    start = time.perf_counter()
    accuracies = {f"{split}_acc": accuracy(model, subset, description=(
                      f"evaluating {split}" if progress_bar else None))
                  for split, subset in (("train", data.train_set), ("val", data.validation_set),
                                        ("test", data.test_set))}
    metrics = {
        "dataset": dataset, "arch": arch, "model": card.name, "labels": labels, **accuracies,
        "n_train": len(data.train_set), "epochs": config.epochs, "seconds": round(seconds, 1),
        "eval_seconds": round(time.perf_counter() - start, 1), "seed": seed, "init": init,
        "l2_penalty": l2_penalty if PENALISED[card.name] else 0.0, "config": asdict(config),
    }
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


def run_training_stage(dataset: str, arch: str, labels: str, params: dict, data_dir: Path,
                       checkpoint: Path, metrics_path: Path) -> dict:
    """The DVC `train` stage: train one model, write its checkpoint and metrics."""
    section = params["train"]
    config = TrainConfig.from_params(section[f"{labels}_labels"])
    model, metrics = train_mnist_model(
        dataset, arch, labels, data_dir, config, seed=params["seed"], init=section["init"],
        l2_penalty=section["l2_penalty"], validation_size=params["data"]["validation_size"],
        accelerator=section["accelerator"], devices=section["devices"])
    save_checkpoint(checkpoint, model, metrics)
    write_json(metrics_path, metrics)
    return metrics
