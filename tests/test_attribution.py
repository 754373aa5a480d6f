"""The attribution engine: agreement with Captum, pytorch-grad-cam, TorchCAM and Zennit; the
papers' identities; Expected Grad-CAM's special cases; ParchGrad's variance identities;
batched equals one image at a time; clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replication.attribution import (ChannelStatistics, LayerStatistics, attribute,
                                     available_methods, create_method, method_class,
                                     partition_gradient, postprocess)
from replication.peers import GRAD_CAM_CLASSES, PEERS, cheap_params
from replication.attribution._base import Passes, image_generators
from replication.errors import ConfigError
from replication.models import create_model
from tolerance import assert_close, assert_differs, atol, network_ops

# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return create_model("mnist_cnn")


@pytest.fixture(scope="module")
def digits(mirror, tmp_path_factory):
    """Four real MNIST test digits in [0, 1] and their labels."""
    from replication.data import mnist

    folder = tmp_path_factory.mktemp("mnist")
    mnist.prepare("mnist", folder, mirror=mirror)
    images, labels = mnist.load(folder, "test")
    return (torch.from_numpy(images[:4].astype(np.float32) / 255).unsqueeze(1),
            torch.from_numpy(labels[:4]))


@pytest.fixture(scope="module")
def lite0():
    return create_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos(lite0, mirror):
    """Two real sample images through Lite0's preprocessing, with their true classes."""
    from PIL import Image

    from replication.data import imagenet

    names = ["n01530575_brambling.JPEG", "n09472597_volcano.JPEG"]
    transform = lite0.preprocessing.transform()
    folder = mirror / imagenet.SAMPLE_MIRROR_FOLDER
    images = torch.stack([transform(Image.open(folder / n).convert("RGB")) for n in names])
    return images, torch.tensor([imagenet.class_index(n.split("_")[0]) for n in names])


def _close(ours: torch.Tensor, reference, *, ops: int, scale=None) -> None:
    """Equal up to float32 rounding of ``ops`` accumulated operations (see tests/tolerance.py)."""
    reference = torch.as_tensor(np.asarray(reference), dtype=ours.dtype).reshape(ours.shape)
    assert_close(ours, reference, ops=ops, dtype=torch.float32, scale=scale)


def _cam_ops(card, maps: torch.Tensor, layer: str | None = None) -> int:
    """Where two CAMs of the same activations and gradients may round differently: the weights'
    spatial sums (a few per weight, as Grad-CAM++'s α) and the map's sum over the channels."""
    with torch.no_grad():
        store = {}
        handle = card.module(layer or card.cam_layer).register_forward_hook(
            lambda m, i, o: store.update(channels=o.shape[1]))
        p = card.preprocessing
        card.model(torch.zeros(1, p.channels, p.input_size, p.input_size))
        handle.remove()
    return 3 * maps.shape[-2] * maps.shape[-1] + store["channels"]


# --- peers: the table of replication.peers -------------------------------------------------------

EQUAL = sorted(m for m, p in PEERS.items() if p.agreement in ("equal", "equal_on_relu"))
# Score- and Ablation-CAM at Lite0's CAM layer run 1,281 forwards per map: they are compared
# at its stem below; the rest of the peers that compute our map are compared on it here.
LITE0_EQUAL = sorted(m for m, p in PEERS.items() if p.agreement == "equal"
                     and m not in ("scorecam", "ablationcam"))


def _peer_ops(card, method: str, ours: torch.Tensor, layer: str | None = None) -> int:
    """The table's tolerance of ``method``'s peer as rounded operations (tests/tolerance.py)."""
    tolerance = PEERS[method].tolerance
    ops = tolerance.ops + (4 if tolerance.upsample else 0)
    if tolerance.network != "none":
        ops += network_ops(card.model, backward=tolerance.network == "backward")
    if tolerance.cam:
        ops += _cam_ops(card, ours, layer)
    return max(ops, 1)


def _assert_equals_peer(method: str, card, images, labels, layer: str | None = None) -> None:
    params = cheap_params(method)
    extra = {"layer": layer} if layer else {}
    ours = attribute(method, card, images, labels, **params, **extra)
    theirs = PEERS[method].build(card, params, layer)(images, labels)
    _close(ours, theirs, ops=_peer_ops(card, method, ours, layer))


@pytest.mark.parametrize("method", EQUAL)
def test_methods_equal_their_peer_on_the_mnist_cnn(cnn, digits, method):
    _assert_equals_peer(method, cnn, *digits)


@pytest.mark.parametrize("method", LITE0_EQUAL)
def test_methods_equal_their_peer_on_lite0(lite0, photos, method):
    _assert_equals_peer(method, lite0, *photos)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_perturbation_cams_equal_their_peer_on_lite0(lite0, photos, method):
    # The 32-channel stem (ReLU6 output) at a reduced input size keeps the per-channel forwards
    # cheap. It is non-negative, where the library's Ablation-CAM zeroes channels as the paper
    # does (on layers with negative values it writes min − 1e7 instead; ours always zeroes).
    images = F.interpolate(photos[0][:1], size=128, mode="bilinear", align_corners=False)
    _assert_equals_peer(method, lite0, images, photos[1][:1], layer="bn1")


def test_every_peer_of_the_table_is_checked_by_its_agreement():
    """Each agreement has its check: ``equal`` ones above, ``equal_on_relu`` ones on the CNN
    and through ReLU6 by the trap test, ``same_noise`` with the noise patched, ``expectation``
    in the limit of many draws; ``nearest`` ones say how they differ."""
    by_agreement = {}
    for method, entry in PEERS.items():
        method_class(method)  # a registered method
        by_agreement.setdefault(entry.agreement, set()).add(method)
        assert entry.library and entry.note
        assert (entry.tolerance is not None) == (entry.agreement in ("equal", "equal_on_relu",
                                                                     "same_noise"))
    assert by_agreement["same_noise"] == set(NOISE_TUNNEL)
    assert by_agreement["expectation"] == {"expected_gradcam"}
    assert by_agreement["equal_on_relu"] == {"guided_backprop", "guided_gradcam"}
    assert set(GRAD_CAM_CLASSES) <= by_agreement["equal"]


def test_normalised_upsampled_gradcam_equals_the_librarys_output(lite0, photos):
    """The library's full output is our raw map after the explicit post-processing steps."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    images, labels = photos
    ours = postprocess.minmax(postprocess.upsample(attribute("gradcam", lite0, images, labels), 224))
    with GradCAM(model=lite0.model, target_layers=[lite0.module(lite0.cam_layer)]) as cam:
        library = cam(images, targets=[ClassifierOutputTarget(int(t)) for t in labels])
    # The CAM's sums, then 4-tap bilinear upsampling (OpenCV's in the library) and min-max.
    raw = attribute("gradcam", lite0, images, labels)
    _close(ours, library, ops=_cam_ops(lite0, raw) + 4 + 2)


def _full_forward_ablation(card):
    """The same card without its declared head: Ablation-CAM falls back to full forwards."""
    import dataclasses

    return dataclasses.replace(card, head=None)


@pytest.mark.parametrize("model", ["cnn", "lite0"])
def test_ablation_cam_runs_only_the_head_and_equals_full_forwards(request, model, digits, photos):
    card = request.getfixturevalue(model)
    images, labels = digits
    if model == "lite0":  # at 64 px (bn2: 2×2) its 1,280 full forwards take seconds
        images = F.interpolate(photos[0][:1], size=64, mode="bilinear", align_corners=False)
        labels = photos[1][:1]
    method = create_method("ablationcam", card)
    channels = method._channels()
    assert method.passes() == Passes(0, 1, head=1 + channels)
    full = create_method("ablationcam", _full_forward_ablation(card))
    assert full.passes() == Passes(0, 2 + channels)
    ours, reference = method.attribute(images, labels), full.attribute(images, labels)
    # The same head layers on the same ablated activations; only the batch layout and the
    # clean logits' path (head of the captured layer vs a full forward) may round apart: the
    # network's forward fan-ins, then the weights' ratio and the map's sum over channels.
    _close(ours, reference, ops=network_ops(card.model, backward=False) + _cam_ops(card, ours))


def test_ablation_cam_on_another_layer_runs_full_forwards(cnn, digits):
    method = create_method("ablationcam", cnn, layer="relu1")
    assert method.head() is None and method.passes().head == 0


def test_normalised_upsampled_gradcam_equals_the_librarys_output(lite0, photos):
    """The library's full output is our raw map after the explicit post-processing steps."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    images, labels = photos
    ours = postprocess.minmax(postprocess.upsample(attribute("gradcam", lite0, images, labels), 224))
    with GradCAM(model=lite0.model, target_layers=[lite0.module(lite0.cam_layer)]) as cam:
        library = cam(images, targets=[ClassifierOutputTarget(int(t)) for t in labels])
    # The CAM's sums, then 4-tap bilinear upsampling (OpenCV's in the library) and min-max.
    raw = attribute("gradcam", lite0, images, labels)
    _close(ours, library, ops=_cam_ops(lite0, raw) + 4 + 2)


# --- Captum -------------------------------------------------------------------------------------


def test_integrated_gradients_authors_rule_and_captums(cnn, digits):
    from captum.attr import IntegratedGradients, Saliency

    images, labels = digits
    ours = attribute("integrated_gradients", cnn, images, labels, steps=20)
    # The authors' rule: equal weights on linspace(0, 1, steps), both end points.
    saliency = Saliency(cnn.model)
    expected = sum(saliency.attribute(a * images, target=labels, abs=False)
                   for a in torch.linspace(0, 1, 20)) / 20 * images
    # Ours runs the 80 scaled images in other batches than one call per α: every pass may round
    # differently, and then the 20 (or 64) terms are summed in another order.
    passes = network_ops(cnn.model)
    _close(ours, expected.detach(), ops=passes + 20)
    # Any other rule is Captum's, and all rules converge to the same integral.
    captum = IntegratedGradients(cnn.model).attribute(images, target=labels, n_steps=64).detach()
    _close(attribute("integrated_gradients", cnn, images, labels, steps=64,
                     integration="gausslegendre"), captum, ops=passes + 64)
    fine = attribute("integrated_gradients", cnn, images, labels, steps=400)
    assert (fine - captum).norm() / captum.norm() < 0.02


def test_trapezoid_rule_runs_on_the_engine_and_matches_captum_up_to_its_weight_sum(cnn, digits):
    """The ParchGrad authors' rule, on our core so that hooks see every sample's class. Captum's
    riemann_trapezoid uses the same points but weights 1/n (sum (n−1)/n): a fixed factor."""
    from captum.attr import IntegratedGradients

    images, labels = digits
    n = 26
    captum = IntegratedGradients(cnn.model).attribute(images, target=labels, n_steps=n,
                                                      method="riemann_trapezoid").detach()
    _close(attribute("integrated_gradients", cnn, images, labels, steps=n,
                     integration="trapezoid", internal_batch_size=7), captum * n / (n - 1),
           ops=network_ops(cnn.model) + n)


def test_smoothgrad_can_average_absolute_maps(cnn, digits):
    images, labels = digits
    signed = attribute("smoothgrad", cnn, images, labels, n_samples=4)
    absolute = attribute("smoothgrad", cnn, images, labels, n_samples=4, absolute=True)
    # mean |g| ≥ |mean g| over the same 4 gradients, up to the rounding of the two 4-term sums.
    assert torch.all(absolute >= signed.abs() - atol(absolute, ops=4))
    assert_differs(absolute, signed.abs(), atol(absolute, ops=4))


def test_integrated_gradients_completeness(cnn, digits):
    images, labels = digits
    maps = attribute("integrated_gradients", cnn, images, labels, steps=300)
    with torch.no_grad():
        logits = cnn.model(images).gather(1, labels[:, None])[:, 0]
        baseline = cnn.model(torch.zeros_like(images)).gather(1, labels[:, None])[:, 0]
    difference = logits - baseline
    assert torch.all((maps.sum((1, 2, 3)) - difference).abs() <= 0.01 * difference.abs())


class _GuidedReLU6(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ((x > 0) & (x < 6) & (grad > 0))


class _GuidedReLU6Module(nn.Module):
    def forward(self, x):
        return _GuidedReLU6.apply(x)


def test_guided_backprop_handles_relu6_where_captum_silently_does_not(lite0, photos):
    """Captum's GuidedBackprop only overrides nn.ReLU: on Lite0 (ReLU6) it is the plain gradient."""
    import copy

    from captum.attr import GuidedBackprop

    images, labels = photos
    plain = attribute("gradient", lite0, images[:1], labels[:1])
    captum = GuidedBackprop(lite0.model).attribute(images[:1], target=labels[:1]).detach()
    _close(captum, plain, ops=2)  # the trap, documented
    ours = attribute("guided_backprop", lite0, images[:1], labels[:1])
    assert (ours - plain).norm() > 0.1 * plain.norm()
    # An independent implementation: every ReLU6 module swapped for an autograd function.
    swapped = copy.deepcopy(lite0.model).eval()
    for name, module in list(swapped.named_modules()):
        if isinstance(module, nn.ReLU6):
            parent, _, child = name.rpartition(".")
            setattr(swapped.get_submodule(parent) if parent else swapped, child, _GuidedReLU6Module())
    x = images[:1].clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(swapped(x)[0, labels[0]], x)
    _close(ours, reference, ops=2)  # the same convs on the same image; the masks are exact


def test_guided_backprop_on_inception_v3_is_not_the_plain_gradient():
    torch.manual_seed(0)
    card = create_model("inception_v3", pretrained=False)
    image = torch.randn(1, 3, 299, 299)
    guided = attribute("guided_backprop", card, image, 3)
    plain = attribute("gradient", card, image, 3)
    assert (guided - plain).norm() > 0.1 * plain.norm()


def _our_noise(images: torch.Tensor, n: int, level: float, seed: int) -> torch.Tensor:
    """The noise our wrappers draw: image-major, σ = level · (max − min) of each image."""
    generators = image_generators(images, seed)
    flat = images.flatten(1)
    sigma = level * (flat.amax(1) - flat.amin(1))
    return torch.cat([sigma[i] * torch.stack([torch.randn(images.shape[1:], generator=g)
                                              for _ in range(n)])
                      for i, g in enumerate(generators)])


NOISE_TUNNEL = {"smoothgrad": "smoothgrad", "smoothgrad_sq": "smoothgrad_sq", "vargrad": "vargrad"}


@pytest.mark.parametrize("ours, nt_type", sorted(NOISE_TUNNEL.items()))
def test_noise_wrappers_equal_captum_noise_tunnel_given_the_same_noise(monkeypatch, cnn, digits,
                                                                     ours, nt_type):
    from captum.attr import NoiseTunnel, Saliency

    images, labels = digits
    noise = _our_noise(images, 6, 0.15, seed=7)
    monkeypatch.setattr(torch, "normal", lambda mean, std: noise.to(std.dtype))
    captum = NoiseTunnel(Saliency(cnn.model)).attribute(
        images, nt_type=nt_type, nt_samples=6, stdevs=1.0, target=labels, abs=False).detach()
    monkeypatch.undo()
    # The same 24 noisy images in one pass each; the 6-sample mean (and VarGrad's E[g²] − E[g]²,
    # so at the scale of E[g²]) may be summed in another order.
    ours_maps = attribute(ours, cnn, images, labels, n_samples=6, seed=7)
    squares = attribute("smoothgrad_sq", cnn, images, labels, n_samples=6, seed=7)
    _close(ours_maps, captum, ops=2 * 6, scale=squares if ours == "vargrad" else None)


# --- identities (Sanity Checks §5) --------------------------------------------------------------


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_linear_model_identities():
    """f(x) = w·x: Gradient = SmoothGrad = w; IG (zero baseline) = w ⊙ x = Gradient⊙Input."""
    torch.manual_seed(0)
    model = _Linear()
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([0, 2, 4])
    w = model.fc.weight.detach()[t].view(3, 3, 8, 8)
    # Exact: the backward of a one-hot through one linear layer adds zeros to w.
    assert torch.equal(attribute("gradient", model, x, t), w)
    _close(attribute("smoothgrad", model, x, t, n_samples=5), w, ops=5)  # a mean of 5 equal terms
    _close(attribute("integrated_gradients", model, x, t, steps=7), w * x, ops=7 + 1)
    _close(attribute("input_x_gradient", model, x, t), w * x, ops=1)
    # Var of 5 equal gradients: 0 up to the rounding of E[g²] and E[g]², at the scale of w².
    _close(attribute("vargrad", model, x, t, n_samples=5), torch.zeros_like(x), ops=2 * 5,
           scale=w ** 2)


# --- TorchCAM, Integrated Grad-CAM, Expected Grad-CAM -------------------------------------------


def test_smooth_gradcam_pp_without_noise_is_gradcam_pp_and_torchcam_differs_as_documented(
        monkeypatch, lite0, photos):
    """Without noise ours is Grad-CAM++ (eq. 19, checked against pytorch-grad-cam above).
    TorchCAM's SmoothGradCAMpp uses the denominator 2g² + Σ(g³·A) instead of 2g² + ΣA·g³
    (libraries.md §1.5): given the same gradients, TorchCAM equals that formula exactly."""
    from torchcam.methods import SmoothGradCAMpp

    from replication.attribution._base import layer_gradients

    images, labels = photos
    ours = attribute("smooth_gradcam_pp", lite0, images, labels, n_samples=3, noise_std=0.0)
    # Three copies of each image run in other batch shapes than the images alone.
    plain = attribute("gradcam_pp", lite0, images, labels)
    _close(ours, plain, ops=network_ops(lite0.model) + _cam_ops(lite0, plain) + 3)
    with SmoothGradCAMpp(lite0.model, target_layer=lite0.cam_layer, num_samples=3) as extractor:
        monkeypatch.setattr(extractor._distrib, "sample", lambda shape: torch.zeros(shape))
        scores = lite0.model(images)
        (library,) = extractor(labels.tolist(), scores, normalized=False)
    a, g = layer_gradients(lite0.model, lite0.module(lite0.cam_layer), images, labels)
    alpha = g ** 2 / (2 * g ** 2 + (g ** 3 * a).sum((2, 3), keepdim=True) + 1e-8)
    torchcam_formula = F.relu((((alpha * F.relu(g)).sum((2, 3), keepdim=True)) * a).sum(1))
    cam_ops = _cam_ops(lite0, plain)  # TorchCAM hooks the same forward and backward on its own
    _close(torchcam_formula, library.detach(), ops=cam_ops)
    assert_differs(ours[:, 0], torchcam_formula,
                   atol(torchcam_formula, ops=network_ops(lite0.model) + cam_ops))


def test_integrated_gradcam_is_the_sum_of_per_step_gradcams(cnn, digits):
    images, labels = digits
    steps = 6
    ours = attribute("integrated_gradcam", cnn, images, labels, steps=steps, baseline="zeros")
    expected = sum(attribute("gradcam", cnn, images * (i / steps), labels) for i in range(steps))
    # The steps' images run in other batches, and the per-step maps are summed in another order.
    _close(ours, expected, ops=network_ops(cnn.model) + _cam_ops(cnn, ours) + steps)


@pytest.fixture(scope="module")
def references(digits):
    torch.manual_seed(1)
    return torch.rand(7, 1, 28, 28)


def test_expected_gradcam_with_no_noise_at_alpha_one_is_gradcam(cnn, digits, references):
    images, labels = digits
    ours = attribute("expected_gradcam", cnn, images, labels, references=references, n_samples=4,
                     sigma=0.0, alpha=1.0)
    # The 4 samples of each image run in other batch shapes than the images alone.
    _close(ours, attribute("gradcam", cnn, images, labels),
           ops=network_ops(cnn.model) + _cam_ops(cnn, ours) + 4)


def test_expected_gradcam_with_a_fixed_baseline_and_the_grid_is_integrated_gradcam(cnn, digits):
    images, labels = digits
    ours = attribute("expected_gradcam", cnn, images, labels, references="black", n_samples=8,
                     sigma=0.0, alpha="grid")
    expected = attribute("integrated_gradcam", cnn, images, labels, steps=8, baseline="black",
                         form="path_weights")
    _close(ours, expected, ops=network_ops(cnn.model) + _cam_ops(cnn, ours) + 8)


def test_expected_gradcam_with_the_input_as_baseline_is_smoothgrad_cam(cnn, digits):
    images, labels = digits
    n, sigma = 5, 0.2
    ours = attribute("expected_gradcam", cnn, images, labels, references="input", n_samples=n,
                     sigma=sigma, alpha=1.0, seed=3)
    # SmoothGrad-CAM: Grad-CAM with the gradient averaged over the same noisy inputs.
    generators = image_generators(images, 3)
    layer = cnn.module(cnn.cam_layer)
    maps = []
    for i, g in enumerate(generators):
        gradients = []
        for _ in range(n):
            torch.randint(0, 1, (1,), generator=g), torch.rand((), generator=g)  # stream order
            noisy = images[i:i + 1] + sigma * torch.randn(images.shape[1:], generator=g)
            store = {}
            handle = layer.register_forward_hook(lambda m, a, o: store.update(a=o))
            score = cnn.model(noisy.requires_grad_(True))[0, labels[i]]
            handle.remove()
            gradients.append(torch.autograd.grad(score, store["a"])[0])
        with torch.no_grad():
            handle = layer.register_forward_hook(lambda m, a, o: store.update(a=o))
            cnn.model(images[i:i + 1])
            handle.remove()
        weights = torch.stack(gradients).mean(0).mean((2, 3), keepdim=True)
        maps.append(F.relu((weights * store["a"]).sum(1, keepdim=True)))
    # The reference runs one noisy image at a time; ours batches them.
    _close(ours, torch.cat(maps).detach(), ops=network_ops(cnn.model) + _cam_ops(cnn, ours) + n)


def test_expected_gradcam_converges_as_samples_grow(cnn, digits, references):
    images, labels = digits

    def agreement(n):
        a, b = (attribute("expected_gradcam", cnn, images, labels, references=references,
                          n_samples=n, seed=s).flatten(1) for s in (1, 2))
        return F.cosine_similarity(a, b).mean().item()

    assert agreement(64) > agreement(2)


def test_layer_eg_matches_captum_layer_gradient_shap_in_expectation(cnn, digits, references):
    """Captum's LayerGradientShap (the table's peer) samples the same quantity; with many
    samples both agree."""
    images, labels = digits[0][:1], digits[1][:1]
    ours = attribute("expected_gradcam", cnn, images, labels, references=references,
                     n_samples=400, sigma=0.0, variant="layer_eg", relu=False)
    torch.manual_seed(0)
    captum = PEERS["expected_gradcam"].build(cnn, {"references": references, "n_samples": 400},
                                             None)(images, labels).sum(1, keepdim=True)
    assert F.cosine_similarity(ours.flatten(), captum.flatten(), dim=0) > 0.98


def test_expected_gradcam_pp_with_no_noise_at_alpha_one_is_gradcam_pp(cnn, digits, references):
    images, labels = digits
    ours = attribute("expected_gradcam_pp", cnn, images, labels, references=references,
                     n_samples=4, sigma=0.0, alpha=1.0)
    # The 4 samples of each image run in other batch shapes than the images alone; the means of
    # g, g², g³ over them, then Grad-CAM++'s weights.
    _close(ours, attribute("gradcam_pp", cnn, images, labels),
           ops=network_ops(cnn.model) + _cam_ops(cnn, ours) + 3 * 4)
    with pytest.raises(ConfigError, match="expected_gradcam_pp has no parameter 'variant'"):
        create_method("expected_gradcam_pp", cnn, references=references, variant="layer_eg")


# Every CAM with parameters that exercise its own weights (the sampled ones cheaply).
WEIGHTED_CAMS = {
    "gradcam": {}, "gradcam_pp": {}, "xgradcam": {}, "layercam": {}, "hirescam": {},
    "scorecam": {}, "ablationcam": {}, "smooth_gradcam_pp": {"n_samples": 3},
    "integrated_gradcam": {"steps": 3, "form": "path_weights"},
    "expected_gradcam": {"n_samples": 3},
    "expected_gradcam_layer": {"n_samples": 3, "variant": "layer_eg", "alpha": "grid"},
    "expected_gradcam_pp": {"n_samples": 3, "sigma": 0.3},
}


@pytest.mark.parametrize("name", sorted(WEIGHTED_CAMS))
def test_public_weights_step_reproduces_the_maps(cnn, digits, references, name):
    """``activations_and_weights`` returns what the map combines: ReLU(Σ_k W_k ⊙ A_k) of them
    is the map, bit for bit (layer-EG: element-wise weights Φ on unit activations)."""
    images, labels = digits
    params = dict(WEIGHTED_CAMS[name])
    engine = "expected_gradcam" if name == "expected_gradcam_layer" else name
    if engine.startswith("expected_gradcam"):
        params["references"] = references
    method = create_method(engine, cnn, **params)
    activations, weights = method.activations_and_weights(images, labels)
    assert weights.shape[:2] == activations.shape[:2] == (4, 64)
    # Exact: the same code path on the same inputs (attribute() combines the same A and W).
    assert torch.equal(method.combine(activations, weights), method.attribute(images, labels))


def test_integrated_gradcam_of_the_authors_code_has_no_single_weights(cnn, digits):
    images, labels = digits
    with pytest.raises(ConfigError, match="form='path_weights'"):
        create_method("integrated_gradcam", cnn, steps=2).activations_and_weights(images, labels)


# --- ParchGrad ----------------------------------------------------------------------------------


def _random_grad(batch=3, channels=8, size=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=generator, dtype=torch.float64)


def test_parchgrad_prunes_l_and_conserves_the_variance():
    grad = _random_grad()
    high = torch.zeros(3, 8, dtype=torch.bool)
    high[:, :2] = True
    out = partition_gradient(grad, high)
    assert torch.all(out[:, 2:] == 0)
    m = grad[:, :2].sum(1).flatten(1).var(1)
    n = grad[:, 2:].sum(1).flatten(1).var(1)
    # M = m + ε and N = n + ε (ParchGrad's ε = 1e-13): H is scaled by √((M + N) / M), so its
    # variance becomes (M + N)·m / M. Tolerance: float64 variances of 5×5 sums over 8 channels
    # and the scale's few steps.
    eps = 1e-13
    expected = (m + n + 2 * eps) * m / (m + eps)
    assert_close(out[:, :2].sum(1).flatten(1).var(1), expected, ops=25 + 8 + 4)
    zero_pruned = partition_gradient(grad, high, variance_conservation=False)
    assert torch.equal(zero_pruned[:, :2], grad[:, :2])  # H is multiplied by exactly 1.0


def test_parchgrad_finite_gamma_identities():
    grad, gamma = _random_grad(seed=1), 3.0
    high = torch.zeros(3, 8, dtype=torch.bool)
    high[:, :3] = True
    out = partition_gradient(grad, high, gamma=gamma)
    var = lambda g: g.sum(1).flatten(1).var(1)  # noqa: E731
    m, n = var(grad[:, :3]), var(grad[:, 3:])
    # With M = m + ε, N = n + ε (ε = 1e-13): H is scaled by γ√(N/M)·β and L by β, where
    # β² = (M + N) / (γ²N + N). Tolerance: float64 variances of 5×5 sums over 8 channels and the
    # scales' few steps.
    eps, ops = 1e-13, 25 + 8 + 8
    big_m, big_n = m + eps, n + eps
    assert_close(var(out[:, :3]) / var(out[:, 3:]), gamma ** 2 * big_n * m / (big_m * n), ops=ops)
    assert_close(var(out[:, :3]) + var(out[:, 3:]),
                 (big_m + big_n) * (gamma ** 2 * m / big_m + n / big_n) / (gamma ** 2 + 1), ops=ops)


def test_parchgrad_leaves_samples_with_an_empty_group_alone():
    grad = _random_grad(batch=2)
    high = torch.tensor([[True] * 8, [False] * 8])
    assert torch.equal(partition_gradient(grad, high), grad)  # an empty group scales by exactly 1.0


def _cnn_statistics(seed=0) -> ChannelStatistics:
    generator = torch.Generator().manual_seed(seed)
    return ChannelStatistics("class", {
        name: LayerStatistics(log_p=-10 * torch.rand(c, 10, generator=generator, dtype=torch.float64))
        for name, c in (("conv1", 32), ("conv2", 64))})


def test_parchgrad_with_every_channel_is_the_plain_gradient(cnn, digits):
    images, labels = digits
    # Exact: with L empty the hooks multiply the gradient by exactly 1.0; the passes are the same.
    assert torch.equal(attribute("parchgrad", cnn, images, labels, statistics=_cnn_statistics(),
                                 channel_portion=1.0),
                       attribute("gradient", cnn, images, labels))


def test_parchgrad_changes_the_map_and_zeroes_l_at_the_hooked_conv(cnn, digits):
    images, labels = digits
    stats = _cnn_statistics()
    method = create_method("parchgrad", cnn, statistics=stats, channel_portion=0.1)
    seen = {}

    def record(module, inputs, output):  # registered after ParchGrad's: sees the modified gradient
        output.register_hook(lambda g: seen.update(grad=g))

    with method.hooks():
        handle = cnn.module("conv2").register_forward_hook(record)
        try:
            method.base._attribute(images, labels)
        finally:
            handle.remove()
    log_p = stats.layer("conv2").log_p[:, labels].T
    k = int(64 * 0.1)
    low = log_p > log_p.kthvalue(k, dim=1, keepdim=True).values
    assert torch.all(seen["grad"][low] == 0) and seen["grad"][~low].abs().sum() > 0
    plain = attribute("gradient", cnn, images, labels)
    assert_differs(method.attribute(images, labels), plain, atol(plain, ops=network_ops(cnn.model)))


def test_variance_conservation_only_rescales_maps_of_a_sequential_net(cnn, digits):
    images, labels = digits
    kwargs = dict(statistics=_cnn_statistics(), channel_portion=0.2)
    with_vc = attribute("parchgrad", cnn, images, labels, **kwargs)
    without = attribute("parchgrad", cnn, images, labels, variance_conservation=False, **kwargs)
    scale = with_vc.flatten(1).norm(dim=1) / without.flatten(1).norm(dim=1)
    assert torch.all(scale > 1)
    # Linear in the hooked gradient: the backward below the hooks rounds the scaled gradient
    # differently, and the scale itself is a norm over the map.
    _close(with_vc, without * scale.view(-1, 1, 1, 1), ops=network_ops(cnn.model) + 28 * 28)


@pytest.mark.parametrize("base", ["input_x_gradient", "integrated_gradients", "smoothgrad"])
def test_parchgrad_composes_with_other_base_methods(cnn, digits, base):
    images, labels = digits
    params = {"integrated_gradients": {"steps": 8}, "smoothgrad": {"n_samples": 4}}.get(base, {})
    stats = _cnn_statistics()
    plain = attribute(base, cnn, images, labels, **params)
    # Exact: with every channel in H the hooks multiply by exactly 1.0 (same passes, same noise).
    assert torch.equal(plain, attribute("parchgrad", cnn, images, labels, statistics=stats,
                                        base=base, base_params=params, channel_portion=1.0))
    pruned = attribute("parchgrad", cnn, images, labels, statistics=stats, base=base,
                       base_params=params, channel_portion=0.1)
    assert_differs(plain, pruned, atol(plain, ops=network_ops(cnn.model)))


def test_parchgrad_instance_mode_selects_from_the_images_own_activations(cnn, digits):
    images, labels = digits
    stats = ChannelStatistics("instance", {
        name: LayerStatistics(gap_mean=torch.full((c,), 0.05, dtype=torch.float64),
                              gap_std=torch.full((c,), 0.02, dtype=torch.float64))
        for name, c in (("conv1", 32), ("conv2", 64))})
    maps = attribute("parchgrad", cnn, images, labels, statistics=stats, channel_portion=0.2)
    assert maps.shape == images.shape
    plain = attribute("gradient", cnn, images, labels)
    assert_differs(maps, plain, atol(plain, ops=network_ops(cnn.model)))


# --- LRP ----------------------------------------------------------------------------------------


def test_lrp_epsilon_on_a_linear_model_is_gradient_times_input():
    torch.manual_seed(0)
    model = _Linear()
    nn.init.zeros_(model.fc.bias)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 3])
    lrp, expected = attribute("lrp", model, x, t), attribute("input_x_gradient", model, x, t)
    # Not rounding alone: the epsilon rule divides by z + ε·sign(z) (Zennit's ε = 1e-6) where
    # x ⊙ ∂z/∂x divides by z, a relative difference ε / |z| per image.
    z = model(x).gather(1, t[:, None]).detach().view(-1, 1, 1, 1)
    stabiliser = 1e-6 / z.abs()
    bound = stabiliser * expected.abs() + atol(expected, ops=192 + 4, dtype=torch.float32)
    assert torch.all((lrp - expected).abs() <= bound)


def test_lrp_runs_on_lite0_with_merged_batch_norms_and_keeps_the_model_intact(lite0, photos):
    images, labels = photos
    with torch.no_grad():
        before = lite0.model(images)
    relevance = attribute("lrp", lite0, images[:1], labels[:1])
    assert relevance.shape == (1, 3, 224, 224) and torch.isfinite(relevance).all()
    with torch.no_grad():  # exact: the canonizer restores the very tensors, same batch, same kernels
        assert torch.equal(lite0.model(images), before)


# --- every method: batched = one by one; seeded; registry ---------------------------------------

CHEAP = {
    "smoothgrad": {"n_samples": 3}, "smoothgrad_sq": {"n_samples": 3}, "vargrad": {"n_samples": 3},
    "ig_smoothgrad": {"n_samples": 2, "steps": 3}, "integrated_gradients": {"steps": 5},
    "integrated_gradcam": {"steps": 4}, "smooth_gradcam_pp": {"n_samples": 3},
    "expected_gradcam": {"n_samples": 5, "references": "black"},
    "expected_gradcam_pp": {"n_samples": 5, "references": "black"},
}


def _params(name: str) -> dict:
    params = dict(CHEAP.get(name, {}))
    if name == "parchgrad":
        params["statistics"] = _cnn_statistics()
    return params


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_batched_equals_one_by_one(cnn, digits, name):
    images, labels = digits
    method = create_method(name, cnn, internal_batch_size=2, **_params(name)) \
        if "internal_batch_size" in _parameters(name) else create_method(name, cnn, **_params(name))
    batched = method.attribute(images, labels)
    single = torch.cat([method.attribute(images[i:i + 1], labels[i:i + 1]) for i in range(4)])
    # Other batch shapes may run other kernels through the whole network, then the method's own
    # sums (at most a CAM's, or a handful of samples) follow.
    _close(batched, single, ops=network_ops(cnn.model) + _cam_ops(cnn, torch.zeros(1, 1, 14, 14)))
    assert batched.device == images.device and batched.shape[0] == 4


def _parameters(name):
    from replication.attribution import method_parameters

    return method_parameters(name)


def test_stochastic_methods_are_seeded(cnn, digits):
    images, labels = digits
    for name in ("smoothgrad", "expected_gradcam", "smooth_gradcam_pp"):
        params = _params(name)
        a, b = (attribute(name, cnn, images, labels, seed=1, **params) for _ in range(2))
        c = attribute(name, cnn, images, labels, seed=2, **params)
        # Exact: the same call on the same inputs runs the same kernels on the same noise.
        assert torch.equal(a, b) and not torch.equal(a, c), name


def test_attribution_leaves_the_models_mode_and_gradients_alone(cnn, digits):
    images, labels = digits
    cnn.model.zero_grad(set_to_none=True)  # oracles called .backward() on this shared model
    cnn.model.train()
    try:
        attribute("gradcam", cnn, images, labels)
        assert cnn.model.training
    finally:
        cnn.model.eval()
    assert all(p.grad is None for p in cnn.model.parameters())


def test_registry_errors_name_the_valid_choices(cnn, digits):
    images, labels = digits
    with pytest.raises(ConfigError, match="unknown attribution method 'occlusion'.*gradcam"):
        attribute("occlusion", cnn, images, labels)
    with pytest.raises(ConfigError, match="smoothgrad has no parameter 'stdevs'.*noise_level"):
        attribute("smoothgrad", cnn, images, labels, stdevs=0.1)
    with pytest.raises(ConfigError, match="n_samples must be a positive integer"):
        attribute("smoothgrad", cnn, images, labels, n_samples=0)
    with pytest.raises(ConfigError, match="integration must be one of"):
        attribute("integrated_gradients", cnn, images, labels, integration="simpson")
    with pytest.raises(ConfigError, match="needs a reference distribution"):
        attribute("expected_gradcam", cnn, images, labels)
    with pytest.raises(ConfigError, match="no layer 'layer9'"):
        attribute("gradcam", cnn, images, labels, layer="layer9")
    with pytest.raises(ValueError, match="4 inputs, 3 targets"):
        attribute("gradient", cnn, images, labels[:3])
    with pytest.raises(ValueError, match=r"must lie in \[0, 10\)"):
        attribute("gradient", cnn, images, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="float tensor"):
        attribute("gradient", cnn, images[0], labels)
    with pytest.raises(ConfigError, match="statistics of conv1 cover 16 channels"):
        attribute("parchgrad", cnn, images, labels, statistics=ChannelStatistics(
            "class", {"conv1": LayerStatistics(log_p=torch.zeros(16, 10, dtype=torch.float64)),
                      "conv2": LayerStatistics(log_p=torch.zeros(64, 10, dtype=torch.float64))}))


def _method_for(name: str, model):
    """``name`` configured cheaply on ``model`` (a card, or a bare module with its layers named)."""
    params = _params(name)
    if isinstance(model, nn.Module):
        if "layer" in _parameters(name):
            params["layer"] = "relu2"
        if name == "parchgrad":
            params["convs"] = ["conv1", "conv2"]
        if name == "expected_gradcam":
            params["references"] = "zeros"  # "black" needs a card's normalisation
    return create_method(name, model, **params)


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_non_finite_inputs_are_rejected_by_every_method(cnn, digits, name):
    images, labels = digits
    broken = images.clone()
    broken[1, 0, 5, 5] = float("nan")
    broken[3] = float("inf")
    with pytest.raises(ValueError, match=rf"{name}: 785 non-finite input value\(s\) \(NaN or "
                                         r"±inf\) in 2 of 4 image\(s\), at batch index 1, 3"):
        _method_for(name, cnn).attribute(broken, labels)


def test_float_targets_are_rejected_not_truncated(cnn, digits):
    images, labels = digits
    for targets in ([3.7, 7.9, 1.0, 2.0], labels.float(), np.array([3.0, 7.0, 1.0, 2.0]),
                    [True, False, True, False]):
        with pytest.raises(ValueError, match="targets must be integer class indices"):
            attribute("gradient", cnn, images, targets)
    with pytest.raises(ValueError, match=r"float32 values \[3.7, 7.9, 1, 2\]"):
        attribute("gradient", cnn, images, torch.tensor([3.7, 7.9, 1.0, 2.0]))
    # Integer types stay accepted.
    for targets in (labels, labels.tolist(), labels.numpy(), labels.int(), 3):
        assert attribute("gradient", cnn, images, targets).shape == images.shape


def test_wrong_channels_or_size_say_what_the_model_takes(cnn, digits, lite0):
    images, labels = digits
    fix = r"Prepare them with card.preprocessing.transform\(\)"
    with pytest.raises(ValueError, match=r"gradient: mnist_cnn takes 1-channel 28×28 images; got "
                                         rf"inputs of shape \(4, 3, 28, 28\). {fix}"):
        attribute("gradient", cnn, images.expand(-1, 3, -1, -1), labels)
    with pytest.raises(ValueError, match=r"gradcam: mnist_cnn takes 1-channel 28×28 images; got "
                                         r"inputs of shape \(4, 1, 32, 32\)"):
        attribute("gradcam", cnn, F.pad(images, (2, 2, 2, 2)), labels)
    with pytest.raises(ValueError, match=r"efficientnet_lite0 takes 3-channel images \(224×224 "
                                         r"after its preprocessing\); got inputs of shape "
                                         r"\(1, 1, 64, 64\)"):
        attribute("gradient", lite0, torch.zeros(1, 1, 64, 64), [0])


@pytest.mark.parametrize("name", ["gradient", "smoothgrad", "gradcam", "scorecam", "ablationcam",
                                  "lrp", "expected_gradcam", "parchgrad"])
def test_out_of_range_targets_of_a_bare_module_name_its_logits(cnn, digits, name):
    images, labels = digits
    targets = labels.clone()
    targets[2] = 12
    with pytest.raises(ValueError, match=r"target class 12 is out of range: the model returned "
                                         r"10 logits per image|target class 12 has no channel "
                                         r"statistics; the class statistics cover 10 classes"):
        _method_for(name, cnn.model).attribute(images, targets)


def test_guided_backprop_refuses_models_whose_relus_it_cannot_see():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            return self.fc(F.relu(x.flatten(1)))

    with pytest.raises(ConfigError, match="needs ReLU modules.*make_hook_safe"):
        attribute("guided_backprop", Functional(), torch.randn(1, 3, 2, 2), 0)
    inplace = nn.Sequential(nn.Flatten(), nn.ReLU(inplace=True), nn.Linear(12, 3))
    with pytest.raises(ConfigError, match="in-place ReLUs"):
        attribute("guided_backprop", inplace, torch.randn(1, 3, 2, 2), 0)


def test_explainer_batches_equal_one_call_and_keep_gradients_enabled(cnn, digits):
    from replication.attribution import Explainer

    images, labels = digits
    method = create_method("gradient", cnn)
    explainer = Explainer("cpu", batch_size=3)
    maps = explainer(cnn, method, None, images, labels)
    # Batches of 3 and 1 against one of 4: other kernels through the network.
    _close(maps, method.attribute(images, labels), ops=network_ops(cnn.model))
    assert maps.device.type == "cpu" and not maps.requires_grad
    by_name = explainer(cnn, "gradient", {}, images, labels)
    assert torch.equal(by_name, maps)  # the same computation, batch by batch


def test_explainer_places_the_model_once_and_it_stays(cnn, digits, monkeypatch):
    from replication.attribution import Explainer

    images, labels = digits
    moves = []
    original = type(cnn.model).to

    def recording_to(module, *args, **kwargs):
        moves.append(args)
        return original(module, *args, **kwargs)

    monkeypatch.setattr(type(cnn.model), "to", recording_to)
    explainer = Explainer("cpu", batch_size=4)
    for _ in range(3):
        explainer(cnn, "gradient", {}, images, labels)
    assert moves == []  # already on the device: no move, and nothing moves it back


def test_passes_count_what_each_method_needs(cnn):
    assert create_method("gradient", cnn).passes().forward_backward == 1
    assert create_method("smoothgrad", cnn, n_samples=7).passes().forward_backward == 7
    assert create_method("ig_smoothgrad", cnn, n_samples=3, steps=5).passes().forward_backward == 15
    assert create_method("scorecam", cnn).passes().forward == 65  # 64 channels + the clean pass
    assert create_method("expected_gradcam", cnn, references="zeros",
                         n_samples=9).passes().forward_backward == 9
    assert math.isinf(create_method("parchgrad", cnn, statistics=_cnn_statistics()).gamma)
