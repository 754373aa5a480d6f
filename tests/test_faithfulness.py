"""Faithfulness metrics: agreement with reference implementations, sanity, batching, determinism.

Every reference comparison derives its tolerance from float32 rounding (tests/tolerance.py). The
references are evaluated on the same model, inputs, targets and maps (and, for random metrics, the
same noise, injected into the reference), but score them in other batches, so the target logits
may round apart by the network's forward accumulations (``_logit_atol``):

| ours                         | reference                                             | tolerance from         |
|------------------------------|-------------------------------------------------------|------------------------|
| insertion / deletion AUC     | torchcam 0.5.0 ``DeletionInsertionMetric``            | logits                 |
| rise_blur                    | scipy.ndimage.correlate with RISE's kernel, zero pad  | 121-tap sums           |
| infidelity, patches          | Quantus 0.6.0 ``Infidelity`` (softmax and logits)     | logits, Σ map·Δx       |
| infidelity, gaussian         | ``captum.metrics.infidelity`` (normalize on and off)  | logits, captum's sums  |
| max_sensitivity              | Quantus 0.6.0 ``MaxSensitivity``                      | gradients' passes      |
| complexity / sparseness      | Quantus 0.6.0 ``Complexity`` / ``Sparseness``         | numpy's pairwise sums  |
| ROAD MoRF / LeRF             | pytorch-grad-cam 1.5.7 ROAD, NoisyLinearImputer       | logits                 |
| ParchGrad AOPC / log-odds    | the authors' ``evaluate_attr_with_logits`` transcribed | logits                 |

Quantus and torchcam are test-only dependencies; those tests skip (and ``-ra`` lists them) when
the packages are absent.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replication.errors import ConfigError
from replication.metrics import faithfulness as fm
from tolerance import (FLOAT32, FLOAT64, assert_close, assert_differs, assert_within, atol,
                       network_ops)


def _net(seed: int = 0, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, classes),
    )
    with torch.no_grad():
        net[-1].weight.mul_(20)  # spread the probabilities over (0, 1) instead of ~1/classes
    return net.eval()


class RegionModel(nn.Module):
    """Looks only at rows/columns 8..15: a map marking that square is the perfect explanation."""

    def __init__(self, classes: int = 10):
        super().__init__()
        torch.manual_seed(1)
        self.linear = nn.Linear(3 * 8 * 8, classes)
        with torch.no_grad():
            self.linear.weight.mul_(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[:, :, 8:16, 8:16].flatten(1))


def _data(n: int = 4, size: int = 32, seed: int = 1, model: nn.Module | None = None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    coarse = torch.rand(n, 1, 4, 4, generator=g)
    maps = F.interpolate(coarse, size=(size, size), mode="bilinear") + 1e-3 * torch.rand(n, 1, size, size, generator=g)
    with torch.no_grad():
        targets = (model or _net())(x).argmax(1)
    return x, targets, maps


def _logit_atol(model: nn.Module, x: torch.Tensor) -> float:
    """How far a target logit may round apart when an image is scored in another batch: the
    network's forward accumulations at the scale of its logits. A probability then moves by at
    most half as much (Σ_j |∂p/∂z_j| ≤ 1/2), a log-probability by at most twice as much."""
    with torch.no_grad():
        logits = model(x)
    return atol(logits, ops=network_ops(model, backward=False), dtype=FLOAT32)


# How each metric's value may round apart when its forwards run in other batches, in units of
# ``_logit_atol``; infidelity is compared as √loss, an RMS of (Σ map·I − Δf), which moves by at
# most as much as Δf does (|‖u‖ − ‖v‖| ≤ ‖u − v‖).
_LOGIT_UNITS = {"deletion": 1, "insertion": 1, "road_morf": 1, "road_lerf": 1, "morf_aopc": 1,
                "lerf_aopc": 1, "morf_lodds": 4, "lerf_lodds": 4, "infidelity": 1}


def _comparable(name: str, values: np.ndarray) -> np.ndarray:
    return np.sqrt(values) if name == "infidelity" else values


def _gradient_explainer(model: nn.Module, log: list[torch.Tensor] | None = None):
    def explain(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if log is not None:
            log.append(inputs.detach().clone())
        inputs = inputs.detach().requires_grad_(True)
        score = model(inputs).gather(1, targets.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, inputs)
        return grad
    return explain


# ----------------------------------------------------------------------------------------------
# Insertion / deletion
# ----------------------------------------------------------------------------------------------


class _FixedCams:
    """A torchcam CAM extractor returning the maps under test."""

    def __init__(self, model: nn.Module):
        self.model, self.cams = model, None

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.cams]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        return contextlib.nullcontext()


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_insertion_deletion_match_torchcam(mode):
    tc_metrics = pytest.importorskip("torchcam.metrics")
    model = _net()
    x, t, maps = _data(model=model)
    extractor = _FixedCams(model)
    # torchcam uses one baseline for both curves: zeros for our deletion, RISE's blur for insertion.
    baseline = None if mode == "deletion" else fm.rise_blur
    metric = tc_metrics.DeletionInsertionMetric(extractor, functools.partial(torch.softmax, dim=-1),
                                                steps=16, baseline=baseline, batch_size=5)
    reference = []
    for i in range(len(x)):
        extractor.cams = maps[i:i + 1, 0]
        metric.reset()
        metric.update(x[i:i + 1], class_idx=[int(t[i])])
        reference.append(metric.summary()[f"{mode}_auc"])
    ours = getattr(fm, mode)(model, x, t, maps, n_steps=16)
    # Probabilities within half a logit's rounding; the trapezoid sums 17 of them.
    np.testing.assert_allclose(ours, reference, rtol=0,
                               atol=_logit_atol(model, x) + atol(1.0, ops=17, dtype=FLOAT32))


def test_rise_blur_is_rise_kernel_with_zero_padding():
    from scipy.ndimage import correlate, gaussian_filter

    x, _, _ = _data(n=2)
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    kernel = gaussian_filter(delta, 5)  # RISE's gkern(11, 5)
    expected = np.stack([[correlate(x[b, c].double().numpy(), kernel, mode="constant", cval=0.0)
                          for c in range(3)] for b in range(2)])
    # float32 sums of 121 taps of a kernel summing to 1, against float64.
    assert_close(fm.rise_blur(x), expected, ops=121, dtype=FLOAT32, scale=x)
    assert abs(kernel.sum() - 1) <= atol(1.0, ops=121, dtype=FLOAT64)


def test_curves_start_and_end_where_rise_says():
    model = _net()
    x, t, maps = _data(model=model)
    with torch.no_grad():
        p_x = model(x).softmax(-1).gather(1, t.view(-1, 1)).squeeze(1).numpy()
        p_zero = model(torch.zeros_like(x)).softmax(-1).gather(1, t.view(-1, 1)).squeeze(1).numpy()
        p_blur = model(fm.rise_blur(x)).softmax(-1).gather(1, t.view(-1, 1)).squeeze(1).numpy()
    deletion = fm.deletion_curves(model, x, t, maps, n_steps=8)
    insertion = fm.insertion_curves(model, x, t, maps, n_steps=8)
    np.testing.assert_array_equal(deletion.fractions, np.linspace(0, 1, 9))  # k/8: exact in binary
    scored_apart = _logit_atol(model, x)  # the curves score 36 images a batch, the references 4
    np.testing.assert_allclose(deletion.scores[:, 0], p_x, rtol=0, atol=scored_apart)
    np.testing.assert_allclose(deletion.scores[:, -1], p_zero, rtol=0, atol=scored_apart)
    np.testing.assert_allclose(insertion.scores[:, 0], p_blur, rtol=0, atol=scored_apart)
    np.testing.assert_allclose(insertion.scores[:, -1], p_x, rtol=0, atol=scored_apart)
    for curves in (deletion, insertion):
        assert curves.auc.dtype == np.float64 and curves.auc.shape == (4,)
        assert ((curves.auc >= 0) & (curves.auc <= 1)).all()


def test_auc_is_comparable_across_step_counts():
    model = _net()
    x, t, maps = _data(n=2, model=model)
    for fn in (fm.deletion, fm.insertion):
        fine = fn(model, x, t, maps, n_steps=256)  # 4 pixels a step
        coarse = fn(model, x, t, maps, n_steps=16)
        assert np.abs(fine - coarse).max() < 0.01
    # RISE's `step` and our `n_steps` agree when step · n_steps = H·W: the same pixel counts, so
    # the same jobs in the same batches, exactly.
    np.testing.assert_array_equal(fm.deletion(model, x, t, maps, step=64),
                                  fm.deletion(model, x, t, maps, n_steps=16))
    np.testing.assert_array_equal(fm.pixel_counts(1000, step=224), [0, 224, 448, 672, 896, 1000])
    np.testing.assert_array_equal(fm.pixel_counts(50176), np.arange(225) * 224)  # RISE default


# ----------------------------------------------------------------------------------------------
# Sanity: a perfect map beats a random one, in each metric's stated direction
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["insertion", "deletion", "road_morf", "road_lerf", "morf_aopc",
                                  "lerf_aopc", "morf_lodds", "lerf_lodds"])
def test_perfect_map_beats_random_map(name):
    model = RegionModel().eval()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, 32, 32, generator=g)
    t = model(x).argmax(1)
    perfect = torch.zeros(6, 1, 32, 32)
    perfect[:, :, 8:16, 8:16] = 1.0
    random_map = torch.rand(6, 1, 32, 32, generator=g)
    metric = fm.get_metric(name)
    params = {"n_steps": 32} if name in ("insertion", "deletion") else {}
    if name.startswith("road"):
        params["percentages"] = [10, 30, 50, 70, 90]
    good = metric(model=model, inputs=x, targets=t, maps=perfect, **params)
    bad = metric(model=model, inputs=x, targets=t, maps=random_map, **params)
    better = good > bad if metric.higher_is_better else good < bad
    assert better.mean() >= 5 / 6, (good, bad)
    assert (good.mean() > bad.mean()) == metric.higher_is_better


# ----------------------------------------------------------------------------------------------
# Batching and determinism
# ----------------------------------------------------------------------------------------------

_MAP_METRICS = {
    "deletion": {"n_steps": 8},
    "insertion": {"n_steps": 8},
    "infidelity": {"patch_size": 8},
    "road_morf": {"percentages": [20, 60], "noise": 0.0},
    "morf_aopc": {},
    "lerf_lodds": {},
}


@pytest.mark.parametrize("name", sorted(_MAP_METRICS))
def test_batch_size_and_one_by_one_do_not_change_results(name):
    model = _net()
    x, t, maps = _data(n=3, model=model)
    metric, params = fm.get_metric(name), _MAP_METRICS[name]
    together = metric(model=model, inputs=x, targets=t, maps=maps, batch_size=64, **params)
    tiny_batches = metric(model=model, inputs=x, targets=t, maps=maps, batch_size=1, **params)
    alone = np.concatenate([metric(model=model, inputs=x[i:i + 1], targets=t[i:i + 1], maps=maps[i:i + 1],
                                   **params) for i in range(3)])
    bound = _LOGIT_UNITS[name] * _logit_atol(model, x)
    for other in (tiny_batches, alone):
        np.testing.assert_allclose(_comparable(name, other), _comparable(name, together), rtol=0,
                                   atol=bound)


@pytest.mark.parametrize("name,params", [
    ("road_lerf", {"percentages": [30, 70]}),
    ("infidelity", {"perturbation": "gaussian", "n_samples": 4}),
])
def test_random_metrics_are_seeded(name, params):
    model = _net()
    x, t, maps = _data(n=3, model=model)
    metric = fm.get_metric(name)
    first = metric(model=model, inputs=x, targets=t, maps=maps, seed=7, **params)
    # Exact: the same call on the same inputs runs the same kernels on the same noise.
    np.testing.assert_array_equal(first, metric(model=model, inputs=x, targets=t, maps=maps, seed=7, **params))
    bound = _LOGIT_UNITS[name] * _logit_atol(model, x)
    assert_differs(_comparable(name, first), _comparable(
        name, metric(model=model, inputs=x, targets=t, maps=maps, seed=8, **params)), bound)
    # Image i's noise depends only on (seed, i): batch_size changes nothing, and image 0 scores as alone.
    np.testing.assert_allclose(_comparable(name, metric(model=model, inputs=x, targets=t, maps=maps,
                                                        seed=7, batch_size=1, **params)),
                               _comparable(name, first), rtol=0, atol=bound)
    np.testing.assert_allclose(_comparable(name, metric(model=model, inputs=x[:1], targets=t[:1],
                                                        maps=maps[:1], seed=7, **params)),
                               _comparable(name, first[:1]), rtol=0, atol=bound)


def test_max_sensitivity_is_seeded_and_batch_size_invariant():
    model = _net()
    x, t, _ = _data(n=3, model=model)
    explain = _gradient_explainer(model)
    first = fm.max_sensitivity(explain, x, t, n_samples=4, seed=3)
    # Exact: the same call on the same inputs runs the same kernels on the same noise.
    np.testing.assert_array_equal(first, fm.max_sensitivity(explain, x, t, n_samples=4, seed=3))
    bound = _sensitivity_atol(model, explain, x, t)
    assert_differs(first, fm.max_sensitivity(explain, x, t, n_samples=4, seed=4), bound.max())
    assert_within(fm.max_sensitivity(explain, x, t, n_samples=4, seed=3, batch_size=2), first, bound)
    assert_within(fm.max_sensitivity(explain, x[:1], t[:1], n_samples=4, seed=3), first[:1], bound[:1])


def _sensitivity_atol(model: nn.Module, explain, x: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    """Per image, how far max ‖e(x + δ) − e(x)‖ / ‖e(x)‖ may round apart when the gradients run
    in other batches: each element of e within the network's passes' rounding at the scale of
    max|e|, so the norm of the difference within √N times that, over ‖e(x)‖."""
    maps = explain(x, t).flatten(1)
    elements = maps.shape[1]
    per_element = np.array([atol(m, ops=network_ops(model), dtype=FLOAT32) for m in maps])
    return 2 * np.sqrt(elements) * per_element / maps.norm(dim=1).numpy()


# ----------------------------------------------------------------------------------------------
# Infidelity and max-sensitivity against Quantus / Captum
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output,softmax", [("probability", True), ("logit", False)])
def test_patch_infidelity_matches_quantus(output, softmax):
    quantus = pytest.importorskip("quantus")
    model = _net()
    x, t, _ = _data(n=3, model=model)
    maps = 0.01 * torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    # Quantus' patch perturbation is deterministic, so one of its n_perturb_samples repeats suffices.
    reference = quantus.Infidelity(perturb_patch_sizes=[8], n_perturb_samples=1, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=maps.numpy(), softmax=softmax, device="cpu")
    ours = fm.infidelity(model, x, t, maps, perturbation="patches", patch_size=8, output=output)
    # √loss is an RMS of (Σ map·Δx − Δf): it moves by at most as much as one term does. Quantus
    # scores one perturbed image at a time (Δf: a logit, or half that as a probability, each
    # side) and sums map·Δx over up to 3·32·32 values in float32.
    units = 2 if output == "logit" else 1
    sums = (maps.expand_as(x) * (x - x.flatten(1).amin(1).view(-1, 1, 1, 1))).abs().sum((1, 2, 3))
    bound = units * _logit_atol(model, x) + atol(sums, ops=3 * 32 * 32, dtype=FLOAT32)
    np.testing.assert_allclose(np.sqrt(ours), np.sqrt(reference), rtol=0, atol=bound)


@pytest.mark.parametrize("normalize", [False, True])
def test_gaussian_infidelity_matches_captum(normalize):
    from captum.metrics import infidelity as captum_infidelity

    model = _net()
    x, t, maps = _data(n=3, model=model)
    n, std, seed = 5, 0.2, 11
    # The documented draw order: image i's generator, n samples of N(0, std²) in turn.
    generators = fm.index_generators(seed, len(x))
    noise = torch.stack([torch.randn(x.shape[1:], generator=generators[b]) * std
                         for b in range(len(x)) for _ in range(n)])

    def perturb(inputs):
        return noise, inputs - noise

    reference = captum_infidelity(lambda z: model(z).softmax(-1), perturb, x, maps.expand_as(x), target=t,
                                  n_perturb_samples=n, normalize=normalize)
    ours = fm.infidelity(model, x, t, maps, perturbation="gaussian", n_samples=n, noise_std=std,
                         normalize=normalize, seed=seed)
    # captum works in float32: Σ map·I over 3·32·32 values, and, with normalize, the loss through
    # (a−b)² = a² − 2ab + b², whose rounding is at the scale of E[a² + b²] ≤ 2·loss + 3·E[Δf²].
    with torch.no_grad():
        p = model(x).softmax(-1).gather(1, t[:, None])
        p_noisy = model(x.repeat_interleave(n, 0) - noise).softmax(-1).gather(
            1, t.repeat_interleave(n)[:, None])
    mean_square_delta = ((p.repeat_interleave(n, 0) - p_noisy) ** 2).view(-1, n).mean(1).double()
    scale = 2 * (2 * torch.from_numpy(ours) + 3 * mean_square_delta)
    bound = np.array([atol(v, ops=3 * 32 * 32 + 4 * n, dtype=FLOAT32) for v in scale])
    assert_within(ours, reference, bound)


def test_infidelity_normalize_makes_it_scale_invariant():
    model = _net()
    x, t, maps = _data(n=2, model=model)
    raw = fm.infidelity(model, x, t, maps, patch_size=8)
    assert (fm.infidelity(model, x, t, 8 * maps, patch_size=8) > 2 * raw).all()
    # Exact: scaling by 8, a power of two, scales every sum exactly, so β·(Σ map·I) is the same.
    np.testing.assert_array_equal(fm.infidelity(model, x, t, maps, patch_size=8, normalize=True),
                                  fm.infidelity(model, x, t, 8 * maps, patch_size=8, normalize=True))


def test_max_sensitivity_matches_quantus_with_the_same_noise():
    quantus = pytest.importorskip("quantus")
    model = _net()
    x, t, _ = _data(n=3, model=model)
    seen: list[torch.Tensor] = []
    explain = _gradient_explainer(model, log=seen)
    n = 5
    ours = fm.max_sensitivity(explain, x, t, radius=0.2, n_samples=n, seed=3)
    # captum explains the originals, then all perturbed copies (repeat_interleave order) in one call.
    assert [s.shape[0] for s in seen] == [3, 3 * n]
    noise = (seen[1] - x.repeat_interleave(n, 0)).view(3, n, -1)
    assert 0.19 < noise.abs().max() <= 0.2

    step = {"i": 0}

    def same_noise(arr, indices, **kwargs):
        out = arr + noise[:, step["i"]].numpy()
        step["i"] += 1
        return out

    def quantus_explain(model, inputs, targets, **kwargs):
        return explain(torch.from_numpy(inputs), torch.from_numpy(np.asarray(targets)).long()).numpy()

    reference = quantus.MaxSensitivity(nr_samples=n, perturb_func=same_noise, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=None, explain_func=quantus_explain,
        device="cpu")
    assert step["i"] == n
    assert_within(ours, reference, _sensitivity_atol(model, explain, x, t))


# ----------------------------------------------------------------------------------------------
# Complexity and sparseness against Quantus
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,cls", [("complexity", "Complexity"), ("sparseness", "Sparseness")])
def test_complexity_and_sparseness_match_quantus(name, cls):
    quantus = pytest.importorskip("quantus")
    model = _net()
    x, t, _ = _data(n=3, model=model)
    maps = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(4)).relu()
    # One image per call: Quantus max-normalises over the whole batch it is given.
    def reference(a):
        return np.array([getattr(quantus, cls)(disable_warnings=True)(
            model=model, x_batch=x[i:i + 1].numpy(), y_batch=t[i:i + 1].numpy(), a_batch=a[i:i + 1].numpy())[0]
            for i in range(3)])

    fn = getattr(fm, name)
    # Quantus sums up to 3·32·32 float32 values with numpy's pairwise summation, whose error
    # grows with log2 of the count (Higham §4.2), plus its 8-way unrolled base case. The terms
    # of the entropy share one sign (scale: the value); the Gini index's are at most 1 together.
    ops = 8 + int(np.log2(3 * 32 * 32)) + 4
    for ours, theirs in ((fn(maps), reference(maps)), (fn(x, channel_reduction="none"), reference(x))):
        assert_close(ours, theirs, ops=ops, dtype=FLOAT32,
                     scale=theirs if name == "complexity" else 1.0)


def test_complexity_and_sparseness_extremes():
    one_hot = torch.zeros(2, 1, 8, 8)
    one_hot[:, 0, 3, 4] = 5.0
    flat = torch.ones(2, 1, 8, 8)
    # Not 0 and log 64 exactly: Quantus' entropy takes log(p + 1e-12), which shifts each of the
    # 64 terms by at most 1e-12 (float64 sums of 64 terms on top).
    stabiliser = 64 * 1e-12
    np.testing.assert_allclose(fm.complexity(one_hot), 0.0, rtol=0, atol=stabiliser)
    np.testing.assert_allclose(fm.complexity(flat), np.log(64), rtol=0,
                               atol=stabiliser + atol(np.log(64), ops=64, dtype=FLOAT64))
    assert (fm.sparseness(one_hot) > 0.98).all()
    # Σ (2i − n − 1)·m over n·Σm cancels to 0: 64 terms of up to 63·m over 64·64·m.
    np.testing.assert_allclose(fm.sparseness(flat), 0.0, rtol=0, atol=atol(63 / 64, ops=64, dtype=FLOAT64))
    # Scale- and sign-free; Σ_c |map| before the measures by default. Exact: scaling by −4 (a
    # power of two) rounds nothing, and the default reduction is the explicit one.
    m = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(fm.sparseness(-4 * m), fm.sparseness(m))
    np.testing.assert_array_equal(fm.complexity(m), fm.complexity(m.abs().sum(1, keepdim=True)))
    assert np.isnan(fm.complexity(torch.zeros(1, 1, 4, 4))).all()


# ----------------------------------------------------------------------------------------------
# ROAD against pytorch-grad-cam
# ----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # grad-cam: np.float32(tensor)
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_matches_pytorch_grad_cam(order):
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric, RemoveLeastRelevantFirst, RemoveMostRelevantFirst)
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = _net()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 40, 40, generator=g)
    t = model(x).argmax(1)
    # Distinct values and 40·40 = 1600 pixels: grad-cam's percentile threshold then removes exactly
    # p·H·W/100 pixels, as our rank rule does.
    maps = torch.stack([torch.randperm(1600, generator=g) for _ in range(3)]).float().div(1600).view(3, 1, 40, 40)
    percentages = [10, 50, 90]
    removal = RemoveMostRelevantFirst if order == "morf" else RemoveLeastRelevantFirst
    targets = [ClassifierOutputSoftmaxTarget(int(k)) for k in t]
    # grad-cam's percentile q keeps q %, i.e. removes 100 − q %; noise 0 so the imputation is exact.
    reference = np.stack([
        PerturbationConfidenceMetric(removal(100 - p, NoisyLinearImputer(noise=0.0)))(
            x, maps[:, 0].numpy(), targets, model, return_diff=False)
        for p in percentages], axis=1)
    ours = fm.road_curves(model, x, t, maps, order=order, percentages=percentages, noise=0.0)
    # The imputed images agree to float32 resolution (below); grad-cam scores them in other batches.
    np.testing.assert_allclose(ours.scores, reference, rtol=0, atol=_logit_atol(model, x))


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # inside grad-cam's imputer
def test_noisy_linear_imputation_matches_pytorch_grad_cam_and_is_seeded():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    g = torch.Generator().manual_seed(0)
    image = torch.randn(3, 20, 30, generator=g)
    removed = torch.rand(20, 30, generator=g) < 0.6
    ours = fm.noisy_linear_impute(image, removed, noise=0.0)
    reference = NoisyLinearImputer(noise=0.0)(image, (~removed).float())  # its mask: 1 = kept
    # Both solve the same well-conditioned system in float64 (other orderings), far below
    # float32's resolution: the float32 results differ by at most a unit in the last place.
    assert_close(ours, reference, ops=1, dtype=FLOAT32)
    assert torch.equal(ours[:, ~removed], image[:, ~removed])  # kept pixels are copied
    noisy = fm.noisy_linear_impute(image, removed, noise=0.01, generator=torch.Generator().manual_seed(1))
    again = fm.noisy_linear_impute(image, removed, noise=0.01, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy, again)  # the same generator draws the same noise
    assert 0.005 < (noisy - ours)[:, removed].std() < 0.015


# ----------------------------------------------------------------------------------------------
# ParchGrad pixel removal against the authors' protocol
# ----------------------------------------------------------------------------------------------


def _authors_protocol(model, image, label, attr, ratios, order):
    """``parchgrad/metric/evaluate_attr_with_logits.py`` transcribed (with a stable sort)."""
    with torch.no_grad():
        probs = model(image[None]).softmax(-1)[0]
        prob_orig, label_hat = probs[label].item(), probs.argmax().item()
        _, index = torch.sort(attr.flatten(), descending=order == "morf", stable=True)
        copies = []
        for ratio in ratios:
            copy = image.clone().reshape(image.shape[0], -1)
            copy[:, index[:int(copy.shape[1] * ratio)]] = 0.0
            copies.append(copy.reshape(image.shape))
        new = model(torch.stack(copies)).softmax(-1)
    prob_new = new[:, label].numpy()
    accuracy = (new.argmax(-1) == label).numpy().astype(float)
    fracdiff = np.abs(probs[label_hat].item() - new[:, label_hat].numpy())
    return prob_orig - prob_new, np.log(prob_new / (prob_orig + 1e-10)), accuracy, fracdiff


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_pixel_removal_matches_the_authors_protocol(order):
    model = _net()
    x, t, _ = _data(n=3, model=model)
    maps = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    ours = fm.pixel_removal_curves(model, x, t, maps, order=order)
    # The authors score one image's copies a batch (and in float32): a difference of two
    # probabilities within one logit's rounding, a log-ratio within four.
    scored_apart = _logit_atol(model, x)
    for b in range(3):
        aopc, lodds, acc, fracdiff = _authors_protocol(model, x[b], int(t[b]), maps[b].abs().mean(0),
                                                       fm.PARCHGRAD_RATIOS, order)
        np.testing.assert_allclose(ours.aopc[b], aopc, rtol=0, atol=scored_apart)
        np.testing.assert_allclose(ours.lodds[b], lodds, rtol=0, atol=4 * scored_apart)
        np.testing.assert_array_equal(ours.accuracy[b], acc)  # no near-tie of the top two logits here
        np.testing.assert_allclose(ours.fracdiff[b], fracdiff, rtol=0, atol=scored_apart)
    # Ratio 0 leaves x untouched: p(x) from a batch of 3 against p(x) among 18 copies.
    np.testing.assert_allclose(ours.aopc[:, 0], 0.0, rtol=0, atol=scored_apart)
    summary = fm.morf_aopc if order == "morf" else fm.lerf_aopc
    np.testing.assert_array_equal(summary(model, x, t, maps), ours.aopc.mean(1))  # the same call


# ----------------------------------------------------------------------------------------------
# Non-finite maps
# ----------------------------------------------------------------------------------------------


def _non_finite_maps(maps: torch.Tensor) -> torch.Tensor:
    """Image 0 all NaN, image 1 one NaN pixel, image 2 one +inf pixel, image 3 as it was."""
    broken = maps.clone()
    broken[0] = float("nan")
    broken[1, 0, 7, 3] = float("nan")
    broken[2, 0, 0, 0] = float("inf")
    return broken


@pytest.mark.parametrize("name", sorted(set(fm.FAITHFULNESS_METRICS) - {"max_sensitivity"}))
def test_a_non_finite_map_scores_nan_never_a_plausible_number(name):
    # Before: an all-NaN map scored like an all-zero one (ties ranked in raster order).
    model = _net()
    x, t, maps = _data(n=4, model=model)
    params = {"insertion": {"n_steps": 4}, "deletion": {"n_steps": 4}, "infidelity": {"patch_size": 8},
              "road_morf": {"percentages": [50]}, "road_lerf": {"percentages": [50]}}.get(name, {})
    metric = fm.get_metric(name)
    scores = metric(model=model, inputs=x, targets=t, maps=_non_finite_maps(maps), **params)
    assert np.isnan(scores[:3]).all(), scores
    # Exact: the same batch shapes run the same kernels, and no other image enters image 3's sums.
    assert scores[3] == metric(model=model, inputs=x, targets=t, maps=maps, **params)[3]


def test_curves_of_a_non_finite_map_are_nan():
    model = _net()
    x, t, maps = _data(n=4, model=model)
    broken = _non_finite_maps(maps)
    for curves in (fm.deletion_curves(model, x, t, broken, n_steps=4),
                   fm.road_curves(model, x, t, broken, percentages=[50])):
        assert np.isnan(curves.scores[:3]).all() and np.isfinite(curves.scores[3]).all()
    removal = fm.pixel_removal_curves(model, x, t, broken)
    for values in (removal.aopc, removal.lodds, removal.accuracy, removal.fracdiff):
        assert np.isnan(values[:3]).all() and np.isfinite(values[3]).all()
    assert np.isfinite(removal.probability).all()  # p_y(x) does not depend on the map


def test_max_sensitivity_of_a_non_finite_explanation_is_nan():
    model = _net()
    x, t, _ = _data(n=3, model=model)
    gradient = _gradient_explainer(model)

    def broken(inputs, targets):  # image 0 NaN at x; image 1 +inf at every perturbed copy
        maps = gradient(inputs, targets)
        if len(inputs) == len(x):
            maps[0, 0, 0, 0] = float("nan")
        else:
            maps[len(inputs) // 3:2 * len(inputs) // 3, 0, 0, 0] = float("inf")
        return maps

    scores = fm.max_sensitivity(broken, x, t, n_samples=3)
    assert np.isnan(scores[:2]).all() and np.isfinite(scores[2])


# ----------------------------------------------------------------------------------------------
# Registry and errors
# ----------------------------------------------------------------------------------------------


def test_registry_directions_and_unknown_names():
    higher = {name for name, m in fm.FAITHFULNESS_METRICS.items() if m.higher_is_better}
    assert higher == {"insertion", "sparseness", "road_lerf", "morf_aopc", "lerf_lodds"}
    assert set(fm.FAITHFULNESS_METRICS) == higher | {"deletion", "infidelity", "max_sensitivity", "complexity",
                                                     "road_morf", "lerf_aopc", "morf_lodds"}
    with pytest.raises(ConfigError, match=r"unknown faithfulness metric 'auc'.*'deletion'.*'sparseness'"):
        fm.get_metric("auc")
    with pytest.raises(ValueError, match="max_sensitivity needs explain"):
        fm.get_metric("max_sensitivity")(inputs=torch.zeros(1, 3, 4, 4), targets=torch.zeros(1, dtype=torch.long))


def test_bad_inputs_name_what_is_wrong():
    model = _net()
    x, t, maps = _data(n=2, model=model)
    with pytest.raises(ValueError, match=r"\(2, 1, 16, 16\).*\(2, 3, 32, 32\)"):
        fm.deletion(model, x, t, maps[:, :, :16, :16])
    with pytest.raises(ValueError, match=r"targets must have shape \(2,\).*got \(3,\)"):
        fm.insertion(model, x, torch.zeros(3, dtype=torch.long), maps)
    with pytest.raises(ConfigError, match=r"unknown substrate 'noise'.*\['blur', 'zeros'\]"):
        fm.deletion(model, x, t, maps, substrate="noise")
    with pytest.raises(ConfigError, match=r"unknown perturbation 'uniform'.*\['gaussian', 'patches'\]"):
        fm.infidelity(model, x, t, maps, perturbation="uniform")
    with pytest.raises(ConfigError, match=r"unknown channel_reduction 'max'"):
        fm.sparseness(maps, channel_reduction="max")
    with pytest.raises(ValueError, match="patch_size 5 must divide"):
        fm.infidelity(model, x, t, maps, patch_size=5)
    with pytest.raises(ValueError, match="percentages must be integers in"):
        fm.road_morf(model, x, t, maps, percentages=[50, 100])
    with pytest.raises(ValueError, match="n_steps or step, not both"):
        fm.deletion(model, x, t, maps, n_steps=4, step=8)
    with pytest.raises(ValueError, match="training mode"):
        fm.morf_aopc(model.train(), x, t, maps)
