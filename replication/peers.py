"""The one table of each engine method's library peer: which library computes the same map (or
the nearest one), with which cheap parameters, and how close the two must agree.

The tests check every peer whose ``agreement`` says it computes the same map
(``tests/test_attribution.py``), and the benchmark times ours against it
(``benchmarks/attribution.py``), both from this table. Peer libraries (Captum,
pytorch-grad-cam, TorchCAM, Zennit) are test and benchmark dependencies only: they are imported
when a peer is built, never when this module is.

``agreement``:

- ``equal``: the same map up to float round-off, bounded by ``tolerance``;
- ``equal_on_relu``: equal on ReLU networks; the peer only overrides ``nn.ReLU``, so through
  ReLU6 (EfficientNet-Lite) it computes the plain gradient (compared on ReLU models only);
- ``same_noise``: equal when both draw the same noise (checked with the noise patched);
- ``expectation``: the same expectation over the draws, not the same draws;
- ``nearest``: another computation of the same family, for timing only (``note`` says how it
  differs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from replication.models.base import ModelCard

Agreement = Literal["equal", "equal_on_relu", "same_noise", "expectation", "nearest"]
PeerCall = Callable[[Tensor, Tensor], Tensor]

# Reduced sample and step counts: a benchmark run takes minutes and a test seconds; the ratio of
# our time to the peer's does not depend on them.
CHEAP_PARAMS: dict[str, dict[str, Any]] = {
    "smoothgrad": {"n_samples": 8}, "smoothgrad_sq": {"n_samples": 8}, "vargrad": {"n_samples": 8},
    "ig_smoothgrad": {"n_samples": 4, "steps": 4},
    "integrated_gradients": {"steps": 8, "integration": "gausslegendre"},
    "integrated_gradcam": {"steps": 8}, "smooth_gradcam_pp": {"n_samples": 4},
    "expected_gradcam": {"n_samples": 8}, "expected_gradcam_pp": {"n_samples": 8},
}


@dataclass(frozen=True)
class Tolerance:
    """The float32 roundings one compared value may accumulate between ours and the peer (the
    tests turn them into an absolute bound, ``tests/tolerance.py``): ``ops`` fixed ones, plus the
    network's fan-ins (``network``: forward only, or forward and backward) where the two run the
    passes in other batch shapes, plus the CAM's sums (``cam``: a few per weight over the layer's
    positions and one per channel), plus a bilinear upsampling's four taps (``upsample``)."""

    ops: int = 0
    network: Literal["none", "forward", "backward"] = "none"
    cam: bool = False
    upsample: bool = False


@dataclass(frozen=True)
class Peer:
    """``build(card, params, layer)`` returns the peer as ``f(images, targets) -> maps`` (raw
    maps, shaped as ours)."""

    library: str
    note: str
    build: Callable[[ModelCard, Mapping[str, Any], str | None], PeerCall]
    agreement: Agreement
    tolerance: Tolerance | None = None


def cheap_params(method: str) -> dict[str, Any]:
    """The method's cheap parameters (a copy; empty for methods without samples or steps)."""
    return dict(CHEAP_PARAMS.get(method, {}))


def _layer(card: ModelCard, layer: str | None) -> nn.Module:
    return card.module(layer or card.cam_layer)


# --- Captum -------------------------------------------------------------------------------------

def _saliency(card, params, layer):
    from captum.attr import Saliency

    return lambda x, t: Saliency(card.model).attribute(x, target=t, abs=False).detach()


def _input_x_gradient(card, params, layer):
    from captum.attr import InputXGradient

    return lambda x, t: InputXGradient(card.model).attribute(x, target=t).detach()


def _guided_backprop(card, params, layer):
    from captum.attr import GuidedBackprop

    return lambda x, t: GuidedBackprop(card.model).attribute(x, target=t).detach()


def _guided_gradcam(card, params, layer):
    from captum.attr import GuidedGradCam

    return lambda x, t: GuidedGradCam(card.model, _layer(card, layer)).attribute(
        x, target=t, interpolate_mode="bilinear").detach()


def _integrated_gradients(card, params, layer):
    from captum.attr import IntegratedGradients

    rule = params.get("integration", "gausslegendre")
    return lambda x, t: IntegratedGradients(card.model).attribute(
        x, target=t, n_steps=params["steps"], method=rule, internal_batch_size=32).detach()


def _noise_tunnel(kind: str):
    def build(card, params, layer):
        from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

        if kind == "ig_smoothgrad":
            base = IntegratedGradients(card.model)
            extra = {"n_steps": params["steps"], "method": "riemann_trapezoid"}
        else:
            base, extra = Saliency(card.model), {"abs": False}
        nt_type = "smoothgrad" if kind == "ig_smoothgrad" else kind
        samples = params["n_samples"]
        return lambda x, t: NoiseTunnel(base).attribute(
            x, nt_type=nt_type, nt_samples=samples, nt_samples_batch_size=max(1, 32 // len(x)),
            stdevs=0.15, target=t, **extra).detach()

    return build


def _layer_gradient_shap(card, params, layer):
    from captum.attr import LayerGradientShap

    references = params["references"]
    return lambda x, t: LayerGradientShap(card.model, _layer(card, layer)).attribute(
        x, baselines=references, n_samples=params["n_samples"], stdevs=0.0, target=t).detach()


# --- pytorch-grad-cam, TorchCAM, Zennit ---------------------------------------------------------

GRAD_CAM_CLASSES = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus",
                    "xgradcam": "XGradCAM", "layercam": "LayerCAM", "hirescam": "HiResCAM",
                    "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}


def _pytorch_grad_cam(method: str):
    def build(card, params, layer):
        return lambda x, t: library_cam(method, card.model, _layer(card, layer), x, t)

    return build


def library_cam(method: str, model: nn.Module, layer: nn.Module, inputs: Tensor,
                targets: Tensor, batch_size: int = 32) -> Tensor:
    """pytorch-grad-cam's raw map (its ReLU'd ``get_cam_image``, before it min-max scales and
    resizes every map), (B, 1, h, w), from activations and gradients its own hooks captured."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = getattr(pytorch_grad_cam, GRAD_CAM_CLASSES[method])(model=model, target_layers=[layer])
    cam.batch_size = batch_size  # Score-CAM's and Ablation-CAM's forwards per batch
    try:
        outputs = cam.activations_and_grads(inputs)
        chosen = [ClassifierOutputTarget(int(c)) for c in targets]
        grads = None
        if cam.uses_gradients:
            model.zero_grad()
            sum(c(o) for c, o in zip(chosen, outputs)).backward()
            grads = cam.activations_and_grads.gradients[0].cpu().numpy()
        activations = cam.activations_and_grads.activations[0].cpu().numpy()
        raw = cam.get_cam_image(inputs, layer, chosen, activations, grads, eigen_smooth=False)
    finally:
        cam.activations_and_grads.release()
    return torch.as_tensor(raw).clamp_min(0).unsqueeze(1).to(inputs)


def _torchcam_smooth_gradcam_pp(card, params, layer):
    from torchcam.methods import SmoothGradCAMpp

    def run(x, t):
        with SmoothGradCAMpp(card.model, target_layer=layer or card.cam_layer,
                             num_samples=params["n_samples"],
                             input_shape=tuple(x.shape[1:])) as extractor:
            scores = card.model(x)
            maps = extractor(t.tolist(), scores, normalized=False)
        return maps[0].unsqueeze(1).detach()

    return run


def _zennit_lrp(card, params, layer):
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlus

    from replication.attribution import create_method

    canonizers = create_method("lrp", card)._canonizers()

    def run(x, t):
        onehot = torch.nn.functional.one_hot(t, card.num_classes).to(x.dtype)
        with Gradient(card.model, EpsilonPlus(canonizers=canonizers)) as attributor:
            return attributor(x.detach().requires_grad_(True), lambda out: out * onehot)[1]

    return run


SAME_PASSES = Tolerance(ops=2)  # the same forward and backward: the last products round apart
CAM_SUMS = Tolerance(cam=True)  # the same activations and gradients, summed in another order

PEERS: dict[str, Peer] = {
    "gradient": Peer("Captum", "Saliency (abs=False)", _saliency, "equal", SAME_PASSES),
    "input_x_gradient": Peer("Captum", "InputXGradient", _input_x_gradient, "equal", SAME_PASSES),
    "guided_backprop": Peer("Captum", "GuidedBackprop (overrides nn.ReLU only: through ReLU6 "
                            "it computes the plain gradient)", _guided_backprop, "equal_on_relu",
                            SAME_PASSES),
    "guided_gradcam": Peer("Captum", "GuidedGradCam (bilinear)", _guided_gradcam,
                           "equal_on_relu", Tolerance(ops=2, cam=True, upsample=True)),
    "integrated_gradients": Peer("Captum", "IntegratedGradients (the same rule)",
                                 _integrated_gradients, "equal",
                                 Tolerance(network="backward", ops=CHEAP_PARAMS[
                                     "integrated_gradients"]["steps"])),
    "smoothgrad": Peer("Captum", "NoiseTunnel(Saliency)", _noise_tunnel("smoothgrad"),
                       "same_noise", Tolerance(ops=2 * 8)),
    "smoothgrad_sq": Peer("Captum", "NoiseTunnel(Saliency), smoothgrad_sq",
                          _noise_tunnel("smoothgrad_sq"), "same_noise", Tolerance(ops=2 * 8)),
    "vargrad": Peer("Captum", "NoiseTunnel(Saliency), vargrad", _noise_tunnel("vargrad"),
                    "same_noise", Tolerance(ops=2 * 8)),
    "ig_smoothgrad": Peer("Captum", "NoiseTunnel(IntegratedGradients), riemann_trapezoid: "
                          "another integration rule and noise scale", _noise_tunnel(
                              "ig_smoothgrad"), "nearest"),
    **{name: Peer("pytorch-grad-cam", cls, _pytorch_grad_cam(name), "equal", CAM_SUMS)
       for name, cls in GRAD_CAM_CLASSES.items() if name not in ("scorecam", "ablationcam")},
    # Their per-channel forwards run in other batch shapes: the network's forward fan-ins too.
    **{name: Peer("pytorch-grad-cam", f"{GRAD_CAM_CLASSES[name]} (full forwards)",
                  _pytorch_grad_cam(name), "equal", Tolerance(network="forward", cam=True))
       for name in ("scorecam", "ablationcam")},
    "smooth_gradcam_pp": Peer("TorchCAM", "SmoothGradCAMpp: the denominator 2g² + Σ(g³·A) "
                              "instead of eq. 19's 2g² + ΣA·g³, and the last sample's ReLU'd "
                              "gradient where ours averages",
                              _torchcam_smooth_gradcam_pp, "nearest"),
    "lrp": Peer("Zennit", "EpsilonPlus with the same canonizers", _zennit_lrp, "equal",
                Tolerance(network="backward")),
    "expected_gradcam": Peer("Captum", "LayerGradientShap: the layer_eg variant's primitive "
                             "(σ = 0), other draws", _layer_gradient_shap, "expectation"),
}


def peer(method: str) -> Peer | None:
    """The method's peer, or None where no library computes anything like it."""
    return PEERS.get(method)
