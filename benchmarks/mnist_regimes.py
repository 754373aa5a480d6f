"""Which quick training regime reaches the state the authors' MNIST CNN ends in (issue 15 §1).

The authors train the CNN with Adam at a constant 1e-4, batch 50, for 55k steps under an L2
penalty 0.001·Σ½‖W‖² on conv1, conv2, fc1. The cascading maps of a trained CNN depend on whether
that penalty has reached its equilibrium (fc1's weights shrink ~7×, and with them the rank of its
input-Jacobian), so a quick regime must get there too. Each regime below trains the MNIST CNN on
the true labels with the pipeline's own training function (``replication.training``); a
constant-rate run is snapshotted on the way (its first k steps are exactly the k-step regime).
For every snapshot the table gives the test accuracy, the final loss split into data and penalty
terms, fc1's weight RMS, the equilibrium criterion, the CPU seconds spent, and the cascading
values of the quick profile's methods (Spearman ABS, mean over the first test images), fc2
randomized first. ``--memorise`` runs the permuted-label regimes instead (train accuracy on the
subset memorised, against steps).

    python benchmarks/mnist_regimes.py            # writes benchmarks/results/mnist_regimes.{csv,md}
    python benchmarks/mnist_regimes.py --report   # the tables again from the cached snapshots

A regime cached in models/regimes/<name>.json is not retrained (delete the file to retrain).

Not part of the pipeline (and not a test): it trains several models (about 20 CPU-minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replication.config import load_params  # noqa: E402
from replication.experiments.common import Explainer, mnist_set  # noqa: E402
from replication.experiments.sanity_checks.model_randomization import (  # noqa: E402
    run_randomization, summarize_table)
from replication.experiments.sanity_checks.settings import SanityChecks  # noqa: E402
from replication.models import create_model  # noqa: E402
from replication.schema import TrainRun  # noqa: E402
from replication.training import (LABELS, accuracy, equilibrium, fit,  # noqa: E402
                                  model_seed, TrainingData)

RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "models" / "regimes"


@dataclass(frozen=True)
class Regime:
    name: str
    run: TrainRun
    l2: float = 0.001
    snapshots: tuple[int, ...] = ()  # extra steps at which the run is evaluated (constant rate)
    labels: str = "true"
    note: str = ""
    arch: str = "cnn"
    layers: tuple[str, ...] = field(default=("conv1", "conv2", "fc1"))


def constant(steps: int, batch: int, lr: float, subset: int | None = None) -> TrainRun:
    return TrainRun(epochs=None, steps=steps, batch_size=batch, lr=lr, subset=subset)


REGIMES = [
    Regime("onecycle_1e-3_b128_4ep", TrainRun(epochs=4, batch_size=128, lr=1e-3,
                                              schedule="onecycle"),
           note="the quick profile before issue 15"),
    Regime("constant_1e-3_b50", constant(2500, 50, 1e-3), snapshots=(500, 1000, 1500, 2000)),
    Regime("constant_1e-3_b50_noL2", constant(2500, 50, 1e-3), l2=0.0, snapshots=(1500,)),
    Regime("constant_1e-4_b50", constant(1722, 50, 1e-4), note="the authors' rate, 3% of their run"),
    Regime("constant_1e-3_b128", constant(1200, 128, 1e-3), snapshots=(400, 800)),
    Regime("constant_2e-3_b100", constant(2000, 100, 2e-3), snapshots=(500, 1000, 1500)),
    Regime("constant_1e-3_b50_long", constant(5000, 50, 1e-3), snapshots=(3000, 3500, 4000, 4500),
           note="constant_1e-3_b50 continued to equilibrium"),
]
MEMORISE = [
    Regime("cnn_random_1e-3_b50_2000", constant(2400, 50, 1e-3, subset=2000), labels="random",
           snapshots=(400, 800, 1200, 1600, 2000)),
    Regime("cnn_random_1e-3_b50_1000", constant(1200, 50, 1e-3, subset=1000), labels="random",
           snapshots=(400, 800)),
    Regime("mlp_random_1e-3_b50_2000", constant(1600, 50, 1e-3, subset=2000), labels="random",
           snapshots=(400, 800, 1200), arch="mlp", l2=0.0, layers=()),
    Regime("mlp_random_1e-3_b50_2000_paper_text", constant(1600, 50, 1e-3, subset=2000),
           labels="random", snapshots=(400, 800, 1200), arch="mlp",
           layers=("fc1", "fc2", "fc3")),
]


def train_regime(regime: Regime, data: TrainingData) -> list[dict]:
    """Train once, keep the snapshots (state dict, log so far, CPU seconds so far)."""
    seed = model_seed(0, regime.labels)
    torch.manual_seed(seed)
    card = create_model({"cnn": "mnist_cnn", "mlp": "mnist_mlp"}[regime.arch])
    snapshots, start = [], time.process_time()

    def keep(step, model):
        if step in regime.snapshots:
            snapshots.append({"step": step, "cpu": time.process_time() - start,
                              "state": {k: v.clone() for k, v in model.state_dict().items()}})

    history = fit(card.model, *data.train, regime.run, seed=seed, layers=regime.layers,
                  strength=regime.l2, device=torch.device("cpu"), after_step=keep)
    snapshots.append({"step": history["step"][-1], "cpu": time.process_time() - start,
                      "state": card.model.state_dict()})
    for snapshot in snapshots:
        upto = sum(s <= snapshot["step"] for s in history["step"])
        snapshot["log"] = {k: v[:upto] for k, v in history.items()}
    return snapshots


def describe(regime: Regime, snapshot: dict, data: TrainingData, images, settings: SanityChecks,
             cascade: bool) -> tuple[dict, pd.DataFrame | None]:
    card = create_model({"cnn": "mnist_cnn", "mlp": "mnist_mlp"}[regime.arch])
    card.model.load_state_dict(snapshot["state"])
    card.model.eval()
    log = snapshot["log"]
    criterion = equilibrium(log)
    window = max(1, int(np.ceil(len(log["step"]) / 10)))
    run = regime.run
    row = {"regime": regime.name, "steps": snapshot["step"], "batch": run.batch_size, "lr": run.lr,
           "schedule": run.schedule, "l2": regime.l2,
           "images_seen": snapshot["step"] * run.batch_size,
           "train_cpu_s": round(snapshot["cpu"], 1)}
    correct, n = accuracy(card.model, *data.test, torch.device("cpu"))
    row["test_acc"] = correct / n
    if regime.labels == "random":
        correct, n = accuracy(card.model, *data.train, torch.device("cpu"))
        row["train_acc"] = correct / n
    row.update(data_loss=float(np.mean(log["data_loss"][-window:])), penalty=log["penalty"][-1],
               fc1_rms=log["fc1_rms"][-1], penalty_drift=criterion["penalty_drift"],
               fc1_rms_drift=criterion["fc1_rms_drift"], equilibrium=criterion["reached"],
               note=regime.note if snapshot["step"] == log["step"][-1] else "")
    if not cascade:
        return row, None
    methods = dict(settings.mnist.methods)
    table, _ = run_randomization(card, images, methods, "cascading", settings.randomization,
                                 settings.similarity.mnist, explainer=Explainer("cpu", 64))
    summary = summarize_table(table)
    summary = summary[summary["metric"] == "spearman_abs"]
    for method in ("gradient", "smoothgrad", "guided_backprop"):
        value = summary[(summary["method"] == method) & (summary["stage"] == "fc2")]["mean"]
        row[f"{method}_fc2"] = round(float(value.iloc[0]), 3)
    summary = summary.assign(regime=regime.name, steps=snapshot["step"])
    return row, summary[["regime", "steps", "stage_index", "stage", "method", "mean", "sd", "n"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regimes", help="comma-separated names (default: all)")
    parser.add_argument("--memorise", action="store_true", help="the permuted-label regimes")
    parser.add_argument("--images", type=int, default=20, help="test images of the cascades")
    parser.add_argument("--report", action="store_true", help="only rebuild the tables")
    args = parser.parse_args()
    torch.set_num_threads(1)
    regimes = MEMORISE if args.memorise else REGIMES
    if args.regimes:
        regimes = [r for r in regimes if r.name in args.regimes.split(",")]
    params = load_params(ROOT / "params.yaml", "quick")
    settings = SanityChecks.from_params(params["sanity_checks"], "sanity_checks")
    images = mnist_set(ROOT / "datasets" / "mnist", args.images)
    CACHE.mkdir(parents=True, exist_ok=True)
    for regime in regimes:
        cached = CACHE / f"{regime.name}.json"
        if args.report or cached.is_file():
            continue  # --report trains nothing; a cached regime is not retrained
        data = TrainingData(ROOT / "datasets" / "mnist", regime.labels, 0, subset=regime.run.subset)
        rows, cascades = [], []
        for snapshot in train_regime(regime, data):
            row, cascade = describe(regime, snapshot, data, images, settings,
                                    cascade=regime.labels == "true")
            rows.append(row)
            if cascade is not None:
                cascades.append(cascade)
            print(json.dumps(row), flush=True)
        cached.write_text(json.dumps({"rows": rows, "cascades": [
            c.to_dict(orient="records") for c in cascades]}))
    write_tables("mnist_memorise" if args.memorise else "mnist_regimes",
                 [r.name for r in (MEMORISE if args.memorise else REGIMES)], args.images)


def write_tables(stem: str, names: list[str], images: int) -> None:
    rows, cascades = [], []
    for name in names:
        cached = CACHE / f"{name}.json"
        if cached.is_file():
            content = json.loads(cached.read_text())
            rows += content["rows"]
            cascades += [pd.DataFrame(c) for c in content["cascades"]]
    if not rows:
        return
    table = pd.DataFrame(rows)
    missing = [name for name in names if not (CACHE / f"{name}.json").is_file()]
    table.to_csv(RESULTS / f"{stem}.csv", index=False, float_format="%.6g")
    lines = [f"# {stem.replace('_', ' ')} (benchmarks/mnist_regimes.py)", "",
             f"MNIST CNN; cascading values: Spearman ABS, mean over the first {images} test "
             "images, fc2 randomized. Drift: the relative change of the penalty / fc1's RMS that "
             "Σ lr = 1 more (1,000 steps at 1e-3) would bring at the rate of the last 10% of "
             "the run (replication.training.equilibrium; reached: both < 0.1).", "",
             *([f"Not run yet (no cached snapshots): {', '.join(missing)}.", ""]
               if missing else []),
             table.to_markdown(index=False, floatfmt=".4g")]
    if cascades:
        cascade = pd.concat(cascades)
        cascade.to_csv(RESULTS / f"{stem}_cascading.csv", index=False, float_format="%.6g")
        wide = cascade.pivot_table(index=["regime", "steps", "method"], columns="stage_index",
                                   values="mean", sort=False)
        wide.columns = [f"S{c}" for c in wide.columns]
        lines += ["", "## Cascading, every stage and method (Spearman ABS, mean)", "",
                  wide.round(3).reset_index().to_markdown(index=False)]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
