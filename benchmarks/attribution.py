"""Speed of every attribution method: seconds per map, its floor, and its library peer.

For each model (EfficientNet-Lite0 on a batch of 16 sample images; the MNIST CNN on 16 test
digits) this measures, in one run on one machine:

- the model's forward+backward time per image (gradient w.r.t. the input) and forward time;
- for every method: seconds per map (median of repeats after a warm-up), its floor =
  passes × those times (``Attribution.passes()``: what the method cannot avoid), the ratio to
  the floor, and the same computation in Captum, pytorch-grad-cam, TorchCAM or Zennit where one
  exists, timed alike (ratio ours / peer).

Sample counts are reduced (8 samples or steps) so a run takes minutes; ratios do not depend on
them. Score-CAM and Ablation-CAM run one forward per channel of the target layer (1280 on Lite0),
so they use 2 images. ParchGrad's timing uses synthetic channel statistics of the right shapes.

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
from replication.models import ModelCard, create_model  # noqa: E402

SETTINGS = {
    "smoothgrad": {"n_samples": 8}, "smoothgrad_sq": {"n_samples": 8}, "vargrad": {"n_samples": 8},
    "ig_smoothgrad": {"n_samples": 4, "steps": 4}, "integrated_gradients": {"steps": 8},
    "integrated_gradcam": {"steps": 8}, "smooth_gradcam_pp": {"n_samples": 4},
    "expected_gradcam": {"n_samples": 8}, "expected_gradcam_pp": {"n_samples": 8},
}
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


def pass_times(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
               repeats: int) -> tuple[float, float]:
    """Per-image seconds of one forward+backward (to the input) and of one forward."""

    def forward_backward():
        x = images.detach().requires_grad_(True)
        torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)

    def forward():
        with torch.no_grad():
            model(images)

    n = len(images)
    return timed(forward_backward, repeats) / n, timed(forward, repeats) / n


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
    params = dict(SETTINGS.get(name, {}))
    if name in ("expected_gradcam", "expected_gradcam_pp"):
        params["references"] = references
    if name == "parchgrad":
        params["statistics"] = synthetic_statistics(card)
    return params


def peer(name: str, card: ModelCard, params: dict) -> tuple[Callable | None, str]:
    """A library computing the same (or, as noted, the nearest) thing, as f(images, targets)."""
    model, layer = card.model, card.module(card.cam_layer)
    if name in ("gradient", "input_x_gradient", "guided_backprop", "integrated_gradients",
                "smoothgrad", "smoothgrad_sq", "vargrad", "ig_smoothgrad", "guided_gradcam"):
        from captum import attr

        note = "Captum"
        if name == "gradient":
            return lambda x, t: attr.Saliency(model).attribute(x, target=t, abs=False), note
        if name == "input_x_gradient":
            return lambda x, t: attr.InputXGradient(model).attribute(x, target=t), note
        if name == "guided_backprop":
            relu6 = any(isinstance(m, torch.nn.ReLU6) for m in model.modules())
            return (lambda x, t: attr.GuidedBackprop(model).attribute(x, target=t),
                    note + (" (computes the plain gradient through ReLU6)" if relu6 else ""))
        if name == "guided_gradcam":
            return (lambda x, t: attr.GuidedGradCam(model, layer).attribute(
                x, target=t, interpolate_mode="bilinear"), note + " GuidedGradCam")
        if name == "integrated_gradients":
            return (lambda x, t: attr.IntegratedGradients(model).attribute(
                x, target=t, n_steps=params["steps"], method="riemann_trapezoid",
                internal_batch_size=32), note + " (riemann_trapezoid)")
        nt_type = {"smoothgrad": "smoothgrad", "smoothgrad_sq": "smoothgrad_sq",
                   "vargrad": "vargrad", "ig_smoothgrad": "smoothgrad"}[name]
        if name == "ig_smoothgrad":
            base = attr.IntegratedGradients(model)
            extra = {"n_steps": params["steps"], "method": "riemann_trapezoid"}
        else:
            base, extra = attr.Saliency(model), {"abs": False}
        samples = params["n_samples"]
        return (lambda x, t: attr.NoiseTunnel(base).attribute(
            x, nt_type=nt_type, nt_samples=samples, nt_samples_batch_size=max(1, 32 // len(x)),
            stdevs=0.15, target=t, **extra), note + " NoiseTunnel")
    if name in ("gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "scorecam",
                "ablationcam"):
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
               "layercam": "LayerCAM", "hirescam": "HiResCAM", "scorecam": "ScoreCAM",
               "ablationcam": "AblationCAM"}[name]

        def run(x, t):
            cam = getattr(pytorch_grad_cam, cls)(model=model, target_layers=[layer])
            cam.batch_size = 32
            with cam:
                return cam(x, targets=[ClassifierOutputTarget(int(c)) for c in t])

        return run, "pytorch-grad-cam"
    if name == "smooth_gradcam_pp":
        from torchcam.methods import SmoothGradCAMpp

        def run(x, t):
            with SmoothGradCAMpp(model, target_layer=card.cam_layer,
                                 num_samples=params["n_samples"],
                                 input_shape=tuple(x.shape[1:])) as extractor:
                scores = model(x)
                return extractor(t.tolist(), scores, normalized=False)

        return run, "TorchCAM"
    if name == "lrp":
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlus

        method = create_method("lrp", card)

        def run(x, t):
            onehot = torch.nn.functional.one_hot(t, card.num_classes).float()
            with Gradient(model, EpsilonPlus(canonizers=method._canonizers())) as attributor:
                return attributor(x.requires_grad_(True), lambda out: out * onehot)

        return run, "Zennit"
    if name == "expected_gradcam":
        from captum.attr import LayerGradientShap

        references = params["references"]
        return (lambda x, t: LayerGradientShap(model, layer).attribute(
            x, baselines=references, n_samples=params["n_samples"], stdevs=0.0, target=t),
            "Captum LayerGradientShap (the layer_eg variant's primitive)")
    return None, ""


def benchmark_model(card: ModelCard, images: torch.Tensor, targets: torch.Tensor,
                    references: torch.Tensor, methods: list[str], repeats: int) -> dict:
    card.model.eval()
    t_fb, t_f = pass_times(card.model, images, targets, repeats)
    print(f"{card.name}: forward+backward {t_fb * 1e3:.2f} ms/image, forward {t_f * 1e3:.2f} "
          f"ms/image (batch {len(images)})", flush=True)
    rows = {}
    for name in methods:
        params = method_params(name, card, references)
        method = create_method(name, card, **params)
        n = PERTURBATION_IMAGES if name in ("scorecam", "ablationcam") else len(images)
        x, t = images[:n], targets[:n]
        reps = 1 if name in ("scorecam", "ablationcam") else repeats
        ours = timed(lambda: method.attribute(x, t), reps) / n
        passes = method.passes()
        floor = passes.forward_backward * t_fb + passes.forward * t_f
        row = {"params": {k: v for k, v in params.items() if not isinstance(
                   v, (torch.Tensor, ChannelStatistics))},
               "images": n, "seconds_per_map": ours,
               "passes": {"forward_backward": passes.forward_backward, "forward": passes.forward},
               "floor_seconds": floor, "ratio_to_floor": ours / floor if floor else None,
               "peer": None, "peer_seconds_per_map": None, "ratio_to_peer": None}
        run, note = peer(name, card, params)
        if run is not None:
            peer_seconds = timed(lambda: run(x, t), reps) / n
            row.update(peer=note, peer_seconds_per_map=peer_seconds, ratio_to_peer=ours / peer_seconds)
        rows[name] = row
        peer_text = f"{row['ratio_to_peer']:.2f}× {note}" if run is not None else "no peer"
        print(f"  {name:20s} {ours * 1e3:9.2f} ms/map  floor {floor * 1e3:9.2f}  "
              f"×floor {row['ratio_to_floor']:.2f}  ×peer {peer_text}", flush=True)
    return {"batch": len(images), "forward_backward_seconds": t_fb, "forward_seconds": t_f,
            "methods": rows}


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
               "settings": SETTINGS, "models": {}}
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
