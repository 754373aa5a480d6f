"""Speed of every attribution method: seconds per map, its floor, and its library peer.

For each model (EfficientNet-Lite0 on a batch of 16 sample images; the MNIST CNN on 16 test
digits) this measures, in one run on one machine:

- the model's forward+backward time per image (gradient w.r.t. the input), forward time, and
  the time of its head alone (the layers after the CAM layer, ``ModelCard.head``);
- for every method: seconds per map (median of repeats after a warm-up), its floor =
  passes × those times (``Attribution.passes()``: what the method cannot avoid; Ablation-CAM's
  per-channel passes run the head only), the ratio to the floor, and its peer from the table
  ``replication.peers`` (Captum, pytorch-grad-cam, TorchCAM or Zennit), timed alike
  (ratio ours / peer; pytorch-grad-cam's raw maps, before its min-max scaling and resizing).

Sample counts are the table's cheap ones (8 samples or steps) so a run takes minutes; ratios do
not depend on them. Score-CAM runs one full forward per channel of the target layer (1280 on
Lite0), so it and Ablation-CAM use 2 images. ParchGrad's timing uses synthetic channel
statistics of the right shapes.

    python benchmarks/attribution.py                 # writes benchmarks/results/attribution.json
    python benchmarks/attribution.py --update-readme # and the table in README.md

Not a test: the targets (within 1.3× of the floor, not slower than the peer) are read off the
table, which states where they are missed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replication.attribution import (ChannelStatistics, LayerStatistics,  # noqa: E402
                                     create_method)
from replication.peers import CHEAP_PARAMS, cheap_params, peer  # noqa: E402
from replication.models import ModelCard, create_model  # noqa: E402

PERTURBATION_IMAGES = 2
README_START, README_END = "<!-- benchmark:attribution:start -->", "<!-- benchmark:attribution:end -->"


def timed(function: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``function`` over ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pass_times(card: ModelCard, images: torch.Tensor, targets: torch.Tensor,
               repeats: int) -> tuple[float, float, float]:
    """Per-image seconds of one forward+backward (to the input), of one forward, and of the
    head alone on the CAM layer's output."""
    model = card.model

    def forward_backward():
        x = images.detach().requires_grad_(True)
        torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)

    def forward():
        with torch.no_grad():
            model(images)

    store = {}
    handle = card.module(card.cam_layer).register_forward_hook(
        lambda m, i, o: store.update(output=o.detach()))
    forward()
    handle.remove()

    def head():
        with torch.no_grad():
            card.head(model, store["output"])

    n = len(images)
    head_time = timed(head, repeats) / n if card.head is not None else float("nan")
    return timed(forward_backward, repeats) / n, timed(forward, repeats) / n, head_time


def synthetic_statistics(card: ModelCard) -> ChannelStatistics:
    generator = torch.Generator().manual_seed(0)
    layers = {}
    for name in card.parchgrad_convs:
        channels = card.module(name).out_channels
        layers[name] = LayerStatistics(log_p=-20 * torch.rand(channels, card.num_classes,
                                                               generator=generator,
                                                               dtype=torch.float64))
    return ChannelStatistics("class", layers, {"note": "synthetic, for timing only"})


def method_params(name: str, card: ModelCard, references: torch.Tensor) -> dict:
    params = cheap_params(name)
    if name in ("expected_gradcam", "expected_gradcam_pp"):
        params["references"] = references
    if name == "parchgrad":
        params["statistics"] = synthetic_statistics(card)
    return params


def benchmark_model(card: ModelCard, images: torch.Tensor, targets: torch.Tensor,
                    references: torch.Tensor, methods: list[str], repeats: int) -> dict:
    card.model.eval()
    t_fb, t_f, t_head = pass_times(card, images, targets, repeats)
    print(f"{card.name}: forward+backward {t_fb * 1e3:.2f} ms/image, forward {t_f * 1e3:.2f} "
          f"ms/image, head {t_head * 1e3:.3f} ms/image (batch {len(images)})", flush=True)
    rows = {}
    for name in methods:
        params = method_params(name, card, references)
        method = create_method(name, card, **params)
        n = PERTURBATION_IMAGES if name in ("scorecam", "ablationcam") else len(images)
        x, t = images[:n], targets[:n]
        reps = 1 if name in ("scorecam", "ablationcam") else repeats
        ours = timed(lambda: method.attribute(x, t), reps) / n
        passes = method.passes()
        floor = (passes.forward_backward * t_fb + passes.forward * t_f
                 + (passes.head * t_head if passes.head else 0.0))
        row = {"params": {k: v for k, v in params.items() if not isinstance(
                   v, (torch.Tensor, ChannelStatistics))},
               "images": n, "seconds_per_map": ours,
               "passes": {"forward_backward": passes.forward_backward, "forward": passes.forward,
                          "head": passes.head},
               "floor_seconds": floor, "ratio_to_floor": ours / floor if floor else None,
               "peer": None, "peer_seconds_per_map": None, "ratio_to_peer": None}
        entry = peer(name)
        run = entry.build(card, params, None) if entry is not None else None
        note = f"{entry.library} {entry.note}" if entry is not None else ""
        if run is not None:
            peer_seconds = timed(lambda: run(x, t), reps) / n
            row.update(peer=note, peer_seconds_per_map=peer_seconds, ratio_to_peer=ours / peer_seconds)
        rows[name] = row
        peer_text = f"{row['ratio_to_peer']:.2f}× {note}" if run is not None else "no peer"
        print(f"  {name:20s} {ours * 1e3:9.2f} ms/map  floor {floor * 1e3:9.2f}  "
              f"×floor {row['ratio_to_floor']:.2f}  ×peer {peer_text}", flush=True)
    return {"batch": len(images), "forward_backward_seconds": t_fb, "forward_seconds": t_f,
            "head_seconds": t_head, "methods": rows}


def lite0_inputs(card: ModelCard, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from replication.data.tensors import ImageNetImages

    folder = ROOT / "datasets" / "imagenet_sample"
    dataset = ImageNetImages(folder, card.preprocessing.transform())
    indices = np.random.default_rng(0).choice(len(dataset), 2 * count, replace=False)
    batch = [dataset[int(i)] for i in indices]
    images = torch.stack([b[0] for b in batch])
    with torch.no_grad():
        targets = card.model.eval()(images[:count]).argmax(1)
    return images[:count], targets, images[count:]


def mnist_inputs(card: ModelCard, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from replication.data.tensors import mnist_tensors

    pixels, labels = mnist_tensors(ROOT / "datasets" / "mnist", "test")
    return pixels[:count], labels[:count], pixels[count:2 * count]


def table(results: dict) -> str:
    """The README table: one row per method, both models side by side."""
    models = list(results["models"])
    head = "| method | " + " | ".join(f"{m}: ms/map | ×floor | ×peer" for m in models) + " | peer |"
    lines = [head, "|---" * (2 + 3 * len(models)) + "|"]
    methods = list(results["models"][models[0]]["methods"])
    for name in methods:
        cells, peer_name = [], "—"
        for m in models:
            row = results["models"][m]["methods"][name]
            ratio_peer = f"{row['ratio_to_peer']:.2f}" if row["ratio_to_peer"] else "—"
            cells += [f"{row['seconds_per_map'] * 1e3:.1f}", f"{row['ratio_to_floor']:.2f}",
                      ratio_peer]
            peer_name = row["peer"] or peer_name
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {peer_name} |")
    info = results["machine"]
    lines.append("")
    lines.append(f"Measured by `python benchmarks/attribution.py` on {info['processor']} "
                 f"({info['threads']} torch threads, torch {info['torch']}), {info['date']}.")
    return "\n".join(lines)


def update_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text()
    if README_START not in content:
        raise SystemExit(f"README.md has no {README_START} marker")
    head, rest = content.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{text}\n{README_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    from replication.attribution import available_methods

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "mnist_cnn"])
    parser.add_argument("--methods", nargs="+", default=available_methods())
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attribution.json"))
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    results = {"machine": {"processor": platform.processor() or platform.machine(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "cuda": torch.cuda.is_available(),
                           "date": time.strftime("%Y-%m-%d")},
               "settings": CHEAP_PARAMS, "models": {}}
    for name in args.models:
        card = create_model(name)
        inputs = lite0_inputs if name != "mnist_cnn" else mnist_inputs
        images, targets, references = inputs(card, args.batch)
        results["models"][name] = benchmark_model(card, images, targets, references,
                                                  args.methods, args.repeats)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    print(text)
    if args.update_readme:
        update_readme(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
