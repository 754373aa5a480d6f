"""The paper profile's cost on a GPU, measured: one prepared script for a lent GPU machine.

In stand-in mode (seeded random weights of each architecture: the GPU machine has no internet,
and speed does not depend on the weights' values), for every model of the paper profile and the
offline ones, this measures on the device:

1. the seconds of one forward+backward pass (to the input) and one forward pass per image, in
   batches (``throughput-<device>.json``, the table ``python -m replication cost --throughput``
   reads to estimate every stage's time from measured, not assumed, throughput);
2. the milliseconds per map of every method the papers use, at the paper profile's settings
   (``gpu_methods-<device>.json``).

    python benchmarks/gpu.py --device cuda --budget 480   # the lent machine: ~8 minutes
    python benchmarks/gpu.py --device cpu --models mnist_cnn --budget 60   # a check on a CPU
    python benchmarks/gpu.py --device cpu --batch 16 --no-methods \
        --models efficientnet_lite0 efficientnet_lite1 efficientnet_lite2 mnist_cnn mnist_mlp
        # this CPU's per-pass times: `cost --profile quick --throughput …` gives the quick
        # profile's floor here

Everything is written as soon as it is measured, so a run stopped by its budget (or a signal)
keeps what it had. Not a test, never part of CI.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from attribution import synthetic_statistics  # noqa: E402

from replication.attribution import create_method  # noqa: E402
from replication.models import create_model  # noqa: E402

MODELS = ["inception_v3", "vgg16", "resnet50", "resnet18", "vgg16_bn", "efficientnet_b0",
          "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mnist_cnn"]
# The papers' methods at the paper profile's settings (params.yaml's base values).
METHODS = {
    "gradient": {}, "input_x_gradient": {}, "guided_backprop": {}, "gradcam": {},
    "guided_gradcam": {}, "smoothgrad": {"n_samples": 50, "noise_level": 0.15},
    "integrated_gradients": {"steps": 50}, "ig_smoothgrad": {"n_samples": 50, "steps": 50},
    "gradcam_pp": {}, "xgradcam": {}, "layercam": {}, "hirescam": {},
    "integrated_gradcam": {"steps": 50}, "smooth_gradcam_pp": {"n_samples": 4, "noise_std": 0.3},
    "expected_gradcam": {"n_samples": 50, "sigma": 0.15},
    "scorecam": {}, "ablationcam": {}, "parchgrad": {},
}


def synchronized(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def timed(function: Callable[[], object], sync: Callable[[], None], repeats: int = 3) -> float:
    """Median seconds of ``function`` after a warm-up call, the device synchronised."""
    function()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def measure(models: list[str], device: torch.device, batch: int, budget: float,
            out: Path, with_methods: bool = True) -> None:
    sync, started = synchronized(device), time.monotonic()
    name = device_name(device)
    throughput = {"device": name, "batch": batch, "models": {}}
    methods = {"device": name, "batch": batch, "settings": METHODS, "ms_per_map": {}}
    paths = (out / f"throughput-{slug(name)}.json", out / f"gpu_methods-{slug(name)}.json")
    torch.backends.cudnn.benchmark = True

    def left() -> float:
        return budget - (time.monotonic() - started)

    for model_name in models:
        if left() <= 0:
            print(f"budget spent before {model_name}", flush=True)
            break
        card = create_model(model_name, stand_in=True) if not model_name.startswith("mnist") \
            else create_model(model_name)
        card.model.eval().to(device)
        size, channels = card.preprocessing.input_size, card.preprocessing.channels
        images = torch.randn(batch, channels, size, size, device=device)
        targets = torch.randint(0, card.num_classes, (batch,), device=device)

        def forward_backward():
            x = images.detach().requires_grad_(True)
            torch.autograd.grad(card.model(x).gather(1, targets[:, None]).sum(), x)

        def forward():
            with torch.no_grad():
                card.model(images)

        throughput["models"][model_name] = {
            "forward_backward_ms": 1e3 * timed(forward_backward, sync) / batch,
            "forward_ms": 1e3 * timed(forward, sync) / batch, "stand_in": card.stand_in}
        write(paths[0], throughput)
        print(model_name, throughput["models"][model_name], flush=True)
        methods["ms_per_map"][model_name] = {}
        for method, params in (METHODS if with_methods else {}).items():
            if left() <= 0:
                break
            params = dict(params)
            if method == "expected_gradcam":
                params["references"] = torch.randn(16, channels, size, size, device=device)
            if method == "parchgrad":
                params["statistics"] = synthetic_statistics(card)
            try:
                attribution = create_method(method, card, **params)
            except Exception as error:  # e.g. Guided Backprop on SiLU networks: say so
                methods["ms_per_map"][model_name][method] = f"not run: {error}"
                continue
            # Few images for the expensive ones: the per-map time does not depend on the count.
            n = 1 if attribution.passes().forward_backward + attribution.passes().forward > 256 \
                else min(batch, 8)
            seconds = timed(lambda: attribution.attribute(images[:n], targets[:n]), sync,
                            repeats=1 if n == 1 else 3)
            methods["ms_per_map"][model_name][method] = 1e3 * seconds / n
            write(paths[1], methods)
        card.model.cpu()
        del card
        if device.type == "cuda":
            torch.cuda.empty_cache()
    written = paths if with_methods else paths[:1]
    print(f"wrote {' and '.join(map(str, written))} in {time.monotonic() - started:.0f} s",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds to spend at most")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-methods", dest="with_methods", action="store_false",
                        help="the per-pass throughput only (what `cost --throughput` reads)")
    args = parser.parse_args()
    measure(args.models, torch.device(args.device), args.batch, args.budget, args.out,
            args.with_methods)


if __name__ == "__main__":
    main()
