"""What ``OMP_WAIT_POLICY=PASSIVE`` costs on an idle machine.

On a busy machine OpenMP's default spin-waiting made PyTorch many times slower here; PASSIVE
avoids that, but sleeping threads wake up later, which may cost something when the machine is
idle. This times three workloads of the quick profile, each in a fresh process, alternately
with the default policy and with PASSIVE (``--repeats`` times each), and prints the medians
and their ratio:

- ``train_cnn``: 200 Adam steps of the MNIST CNN, batch 50 (the `train` stage's inner loop);
- ``train_mlp``: 100 Adam steps of the MNIST MLP, batch 128;
- ``lite0_ig``: Integrated Gradients (10 steps) on 8 images of EfficientNet-Lite0 at 224 px
  (the Sanity Checks ImageNet stages' kind of work).

    python benchmarks/omp_wait_policy.py     # writes benchmarks/results/omp_wait_policy.json

Run it on an idle machine: it measures the policy, not the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from _fresh import last_line

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("train_cnn", "train_mlp", "lite0_ig")


def workload(name: str) -> float:
    """Seconds of one run of ``name`` (after a warm-up step), in this process."""
    import torch

    torch.manual_seed(0)
    if name.startswith("train"):
        from replication.models import create_model
        from replication.schema import TrainRun
        from replication.training import fit

        arch, batch, steps = ("mnist_cnn", 50, 200) if name == "train_cnn" else ("mnist_mlp", 128, 100)
        model = create_model(arch).model
        images, labels = torch.rand(2000, 1, 28, 28), torch.randint(0, 10, (2000,))
        run = lambda n: fit(model, images, labels, TrainRun(epochs=None, steps=n, batch_size=batch,  # noqa: E731
                            lr=1e-3), seed=0, layers=("fc1",), strength=1e-3,
                            device=torch.device("cpu"))
        run(5)
        start = time.perf_counter()
        run(steps)
        return time.perf_counter() - start
    from replication.attribution import Explainer
    from replication.models import create_model

    card = create_model("efficientnet_lite0")
    images = torch.rand(8, 3, 224, 224)
    targets = torch.zeros(8, dtype=torch.long)
    explainer = Explainer("cpu", batch_size=8)
    explainer(card, "gradient", {}, images, targets)
    start = time.perf_counter()
    explainer(card, "integrated_gradients", {"steps": 10}, images, targets)
    return time.perf_counter() - start


def timed(name: str, policy: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    return float(last_line(__file__, "--run", name, env=env))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/omp_wait_policy.json"))
    args = parser.parse_args()
    if args.run:
        print(f"{workload(args.run):.4f}")
        return
    rows = {}
    for name in WORKLOADS:
        seconds = {"default": [], "PASSIVE": []}
        for _ in range(args.repeats):
            seconds["default"].append(timed(name, None))
            seconds["PASSIVE"].append(timed(name, "PASSIVE"))
        medians = {k: statistics.median(v) for k, v in seconds.items()}
        rows[name] = {"seconds": seconds, "median_default": medians["default"],
                      "median_passive": medians["PASSIVE"],
                      "passive_over_default": medians["PASSIVE"] / medians["default"]}
        print(f"{name}: default {medians['default']:.2f} s, PASSIVE {medians['PASSIVE']:.2f} s, "
              f"ratio {rows[name]['passive_over_default']:.3f}", flush=True)
    import torch

    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats, "workloads": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
