"""What the L2 penalty costs a training step: through autograd, or as Adam's weight decay.

The authors' penalty ``λ · Σ ½‖W‖²`` has the gradient ``λ·W``, which Adam's coupled weight
decay adds inside its fused step (``replication.training.decayed_parameter_groups``). Added to
the loss instead, autograd squares, sums and back-propagates every penalised weight each step.
This times one Adam step (forward, backward, update) of each model of the `train` stage, both
ways, alternately, and prints the medians:

    python benchmarks/l2_penalty.py     # writes benchmarks/results/l2_penalty.json

Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from replication.pipeline import flush_denormals
from replication.training import (ARCHS, L2_LAYERS, decayed_parameter_groups, initial_card,
                                  l2_penalty_term, memory_layout)

ROOT = Path(__file__).resolve().parents[1]
STRENGTH = 1e-3
BATCH = {"cnn": 50, "mlp": 128}  # the quick profile's batches


def step_seconds(arch: str, way: str, steps: int) -> float:
    """Median seconds of one Adam step of ``arch`` with the penalty applied ``way``."""
    model = initial_card(arch, "true", 0, "authors_code").model
    layout = memory_layout(model)
    model = model.to(memory_format=layout)
    layers = L2_LAYERS["paper_text"][ARCHS[arch]]
    groups = (decayed_parameter_groups(model, layers, STRENGTH) if way == "weight_decay"
              else model.parameters())
    optimizer = torch.optim.Adam(groups, lr=1e-4, fused=True)
    x = torch.rand(BATCH[arch], 1, 28, 28).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (BATCH[arch],))
    times = []
    for _ in range(steps + 5):  # the first 5: warm-up
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        if way == "autograd":
            loss = loss + l2_penalty_term(model, layers, STRENGTH)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/l2_penalty.json")
    args = parser.parse_args()
    flush_denormals()  # as every stage
    rows = []
    for arch in ("mlp", "cnn"):
        ms = {way: [] for way in ("autograd", "weight_decay")}
        for _ in range(args.repeats):
            for way in ms:
                ms[way].append(1000 * step_seconds(arch, way, args.steps))
        row = {"arch": arch, "batch": BATCH[arch],
               **{f"{way}_ms": round(statistics.median(v), 2) for way, v in ms.items()}}
        row["ratio"] = round(row["autograd_ms"] / row["weight_decay_ms"], 2)
        rows.append(row)
        print(f"{arch}: autograd {row['autograd_ms']} ms, weight decay "
              f"{row['weight_decay_ms']} ms a step ({row['ratio']}×)")
    args.out.write_text(json.dumps({
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
        "steps": args.steps, "repeats": args.repeats, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
