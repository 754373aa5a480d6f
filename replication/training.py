"""Lightning training of the MNIST / Fashion-MNIST CNN and MLP, with true or permuted labels."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from replication.data.mnist import train_validation_split
from replication.data.tensors import mnist_tensors, permuted_labels, tensor_dataset
from replication.devices import lightning_devices, resolve_device
from replication.errors import ConfigError, missing_input
from replication.fileio import atomic_open, write_json
from replication.models import create_model
from replication.schema import TrainRun

log = logging.getLogger("replication")
# Lightning sets its loggers to INFO when imported: its banners, tips ("litlogger") and per-call
# notes drown the pipeline's output. Warnings still show.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates, once per batch.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

ARCHS = {"cnn": "mnist_cnn", "mlp": "mnist_mlp"}
LABELS = ("true", "random")
# The authors' --reg penalty covers these weights only (CNN); their MLP had none.
PENALISED = {"mnist_cnn": ("conv1", "conv2", "fc1"), "mnist_mlp": ()}
EVAL_BATCH = 500


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
                      config: TrainRun, *, seed: int, init: str, l2_penalty: float,
                      validation_size: int = 5000, device: str = "auto",
                      progress_bar: bool = True) -> tuple[nn.Module, dict]:
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
    trainer = L.Trainer(max_epochs=config.epochs, deterministic=True,
                        **lightning_devices(resolve_device(device)), logger=False, enable_checkpointing=False,
                        enable_progress_bar=progress_bar, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    log.info("training %s-%s-%s: %d epochs, batch %d", dataset, arch, labels, config.epochs,
             config.batch_size)
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
        "l2_penalty": l2_penalty if PENALISED[card.name] else 0.0, "config": config.as_params(),
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


def run_training_stage(ctx) -> dict:
    """The DVC `train` stage: train one model of the matrix, write its checkpoint and metrics."""
    dataset, arch, labels = ctx.item["dataset"], ctx.item["arch"], ctx.item["labels"]
    section = ctx.settings("train")
    config = getattr(section, f"{labels}_labels")
    model, metrics = train_mnist_model(
        dataset, arch, labels, ctx.input("data"), config, seed=ctx.settings("seed"),
        init=section.init, l2_penalty=section.l2_penalty,
        validation_size=ctx.settings("data.validation_size"), device=ctx.settings("device"))
    save_checkpoint(ctx.output("checkpoint"), model, metrics)
    write_json(ctx.output("metrics"), metrics)
    log.info("%s-%s-%s: train %.4f, test %.4f in %.0f s", dataset, arch, labels,
             metrics["train_acc"], metrics["test_acc"], metrics["seconds"])
    return metrics


def training_cost(ctx) -> list:
    """Passes of one training run: every epoch over the training images, then one evaluation
    pass over the train, validation and test splits."""
    from replication.cost import Cost

    arch, labels = ctx.item["arch"], ctx.item["labels"]
    config = getattr(ctx.settings("train"), f"{labels}_labels")
    validation = ctx.settings("data.validation_size")
    n_train = config.subset or 60_000 - validation
    return [Cost(ARCHS[arch], f"{labels} labels: {config.epochs} epochs × {n_train:,} images",
                 config.epochs * n_train, n_train + validation + 10_000)]
