"""Why every stage flushes subnormal floats to zero (``pipeline.flush_denormals``).

Trains a model of the data-randomization matrix (true labels, the authors' init, the paper-text
L2 layers at 1e-3, Adam 1e-3) on the prepared MNIST folder and prints the seconds of every
500 steps, with or without flushing:

    python benchmarks/denormals.py --arch cnn --steps 2000 datasets/mnist
    python benchmarks/denormals.py --arch cnn --steps 2000 --flush datasets/mnist

Run it on an idle machine. The measured numbers are in benchmarks/results/denormals.md.
"""

from __future__ import annotations

import argparse
import time

import torch

from replication.schema import TrainRun
from replication.training import TrainingData, fit, initial_card, memory_layout, penalised_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a prepared MNIST folder (the idx_data stage's output)")
    parser.add_argument("--arch", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--flush", action="store_true", help="flush subnormals to zero")
    args = parser.parse_args()
    torch.set_flush_denormal(args.flush)  # before any parallel region: threads inherit it
    card = initial_card(args.arch, "true", 0, "authors_code")
    data = TrainingData(args.folder, "true", 0, 5000, None)
    run = TrainRun(epochs=None, steps=args.steps, batch_size=50 if args.arch == "cnn" else 128,
                   lr=1e-3, schedule="constant" if args.arch == "cnn" else "onecycle")
    marks = [time.perf_counter()]

    def every_500(step: int, _model) -> None:
        if step % 500 == 0:
            marks.append(time.perf_counter())
            print(f"steps {step - 499}-{step}: {marks[-1] - marks[-2]:.1f} s", flush=True)

    model = card.model.to(memory_format=memory_layout(card.model))
    history = fit(model, *data.train, run, seed=0, layers=penalised_layers(card.name, "paper_text"),
                  strength=1e-3, device=torch.device("cpu"), after_step=every_500)
    print(f"flush {args.flush}: {time.perf_counter() - marks[0]:.1f} s in all; final data loss "
          f"{history['data_loss'][-1]:.4f}, fc1 RMS {history['fc1_rms'][-1]:.4f}")


if __name__ == "__main__":
    main()
