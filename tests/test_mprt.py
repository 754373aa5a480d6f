"""The repaired model-parameter randomisation tests (Hedström et al. 2023): Smooth MPRT and
Efficient MPRT on the engine, against Quantus 0.6.0 on the MNIST CNN and four real test digits.

How the comparison is made exact: the randomised weights are Quantus's (``draws="quantus"``,
``reset_parameters``, one block per module: checked bit for bit), and Quantus's noise draws
(``np.random.randn``) are replaced by ours, so both explain the same float32 inputs. What is
left is arithmetic: Quantus adds ``map / nr_samples`` in float32 (we average in float64) and
Captum's gradient may round unlike the engine's batches. Each tolerance is derived from those
float32 errors and the maps' magnitudes (helpers below). Measured here: eMPRT within 5e-16,
sMPRT within 3e-17. With 5 samples instead of 4, Quantus's float32 sum put one near-tied pixel
pair in the other order (2.4e-6 for one image and layer of the top-down run, inside its bound
of 1.2e-4): why the sMPRT bound counts such pairs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

from replication.attribution import create_method
from replication.data import mnist
from replication.errors import ConfigError
from replication.randomization import RandomizationOptions
from replication.randomization.reinit import fully_randomized, parameter_module_blocks
from replication.experiments.common import mnist_set
from replication.metrics import efficient_mprt as em
from replication.metrics import smooth_mprt as sm
from replication.metrics._mprt import randomization_card, randomized_stages
from tolerance import assert_within
from replication.models import create_model

N_SAMPLES = 4       # Quantus's default is 50; 3 noisy copies + the clean image here
NOISE = 0.1         # Quantus's default noise_magnitude
U32 = np.finfo(np.float32).eps / 2   # float32 unit round-off
EPS64 = np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def uniform_cnn():
    """The CNN with PyTorch's uniform initialisers: the default randomization (fresh draws of
    the card's initialiser) without the authors' truncated normal, which is slow to draw."""
    torch.manual_seed(0)
    return create_model("mnist_cnn", init="pytorch_default")


@pytest.fixture(scope="module")
def digits(mirror, tmp_path_factory):
    """The first four MNIST test digits in [0, 1] and their labels."""
    folder = tmp_path_factory.mktemp("mnist")
    mnist.prepare("mnist", folder, mirror=mirror)
    first = mnist_set(folder, 4)
    return first.images, first.labels


def _quantus():
    quantus = pytest.importorskip("quantus")
    warnings.filterwarnings("ignore", module="quantus")
    return quantus


def _stage_models(card, order):
    """Our model states in Quantus's order (original first), with Quantus's weights."""
    yield "Original", card.model
    for stage in randomized_stages(randomization_card(card, "modules", order), order,
                                   sm.QUANTUS_RANDOMIZATION):
        yield stage.label, stage.model


# --- tolerances -------------------------------------------------------------------------------

def _spearman_tolerance(reference: np.ndarray, layer: np.ndarray, captum_gap: float) -> np.ndarray:
    """Per image, how far Quantus's Spearman may lie from ours.

    ``reference``/``layer``: (B, N, n) the per-copy maps of the original model and of the
    layer's state. A pixel's denoised value differs between the two implementations by at most
    E_i = (N + 1)·u·mean_n|g_n,i| (Quantus's float32 sum of N terms g/N; ours is float64),
    + u·|mean| (its float32 normalisation) + the Captum/engine gap of one map. Ranks can then
    differ only in pairs closer than E_i + E_j: each such pair is at most one adjacent
    transposition of a rank vector, which changes Σd² by < 4n and ρ by
    < 24/(n² − 1). The float64 Pearson of ranks adds (3n + 4)·eps64.
    """
    n = reference.shape[-1]
    tolerance = np.full(len(reference), (3 * n + 4) * EPS64)
    for maps in (reference, layer):
        mean = np.abs(maps.mean(1))
        error = (N_SAMPLES + 1) * U32 * np.abs(maps).mean(1) + U32 * mean + captum_gap
        for b in range(len(maps)):
            gap = np.abs(mean[b][:, None] - mean[b][None, :])
            window = error[b][:, None] + error[b][None, :]
            pairs = np.triu((gap <= window) & (window > 0), k=1).sum()
            tolerance[b] += 24 * pairs / (n * n - 1)
    return tolerance


def _entropy_error(rows: np.ndarray, entropy: np.ndarray, n_bins: int, gap: float) -> np.ndarray:
    """Per row, a bound on |H_Quantus − H_ours|: float64 arithmetic, (n_bins + 4)·eps64·(H + 1),
    plus, if the maps differ by ``gap``, each value within 2·gap of a bin edge (the edges move
    with min/max) moving one bin, which changes H by at most 2(1 + ln n)/n."""
    n = rows.shape[1]
    moved = np.zeros(len(rows))
    if gap > 0:
        for b, row in enumerate(rows):
            edges = np.histogram_bin_edges(row, bins=n_bins)
            moved[b] = (np.abs(row[:, None] - edges[None, :]) <= 2 * gap).any(1).sum()
    return (n_bins + 4) * EPS64 * (entropy + 1) + moved * 2 * (1 + math.log(n)) / n


# --- agreement with Quantus ---------------------------------------------------------------------

@pytest.mark.parametrize("order", ["bottom_up", "top_down", "independent"])
def test_quantus_draws_re_create_quantus_random_layer_weights(cnn, order):
    quantus = _quantus()
    wrapped = quantus.helpers.model.pytorch_model.PyTorchModel(cnn.model, channel_first=True)
    assert [label for label, _ in parameter_module_blocks(cnn.model)] == ["fc2", "fc1", "conv2",
                                                                          "conv1"]
    states = _stage_models(cnn, order)
    next(states)  # the original
    # In lockstep: both generators re-use one model object between states.
    for (label, model), (name, theirs) in zip(states, wrapped.get_random_layer_generator(
            order=order, seed=42), strict=True):
        assert label == name
        for key, value in theirs.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), (label, key)
    if order != "independent":  # eMPRT's state: the last cascading one
        full = fully_randomized(randomization_card(cnn, "modules", order), sm.QUANTUS_RANDOMIZATION)
        for key, value in theirs.state_dict().items():
            assert torch.equal(full.model.state_dict()[key], value), key


@pytest.mark.parametrize("order", ["bottom_up", "top_down", "independent"])
def test_smooth_mprt_matches_quantus_with_the_same_noise(cnn, digits, order, monkeypatch):
    quantus = _quantus()
    x, y = digits
    ours = sm.smooth_mprt(cnn, x, y, "gradient", nr_samples=N_SAMPLES, noise_magnitude=NOISE,
                          layer_order=order, randomization=sm.QUANTUS_RANDOMIZATION,
                          blocks="modules", seed=3)

    copies = sm.noisy_copies(x, N_SAMPLES, NOISE, seed=3)  # (B, N, 1, 28, 28), clean last
    x64 = x.numpy().astype(np.float64)
    sigma = NOISE * (x.numpy().max(axis=(1, 2, 3), keepdims=True)
                     - x.numpy().min(axis=(1, 2, 3), keepdims=True))
    calls = []

    def same_noise(*shape):
        # Quantus adds randn · σ to x in float64 and casts to float32: this z gives our copy.
        assert shape == tuple(x.shape)
        k = len(calls) % (N_SAMPLES - 1)
        calls.append(k)
        return (copies[:, k].numpy().astype(np.float64) - x64) / sigma

    monkeypatch.setattr(np.random, "randn", same_noise)
    theirs = quantus.SmoothMPRT(nr_samples=N_SAMPLES, noise_magnitude=NOISE, layer_order=order,
                                disable_warnings=True)(
        model=cnn.model, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=quantus.explain,
        explain_func_kwargs={"method": "Gradient"}, batch_size=len(x))
    monkeypatch.undo()
    # Reference + original + 4 layers, each N − 1 draws: every noisy copy was ours.
    assert len(calls) == (N_SAMPLES - 1) * (2 + len(ours.layers))
    assert list(theirs) == ["original", *ours.layers]
    np.testing.assert_array_equal(theirs["original"], 1.0)  # same noise: reference = original

    # The per-copy maps of each state, by the engine and by Captum, for the tolerance.
    flat, classes = copies.flatten(0, 1), y.repeat_interleave(N_SAMPLES)
    maps, gap = {}, 0.0
    for label, model in _stage_models(cnn, order):
        engine = create_method("gradient", model).attribute(flat, classes)
        captum = np.stack([quantus.explain(model, copies[:, k].numpy(), y.numpy(),
                                           method="Gradient") for k in range(N_SAMPLES)], axis=1)
        gap = max(gap, float(np.abs(engine.numpy().reshape(captum.shape) - captum).max()))
        maps[label] = engine.double().numpy().reshape(len(x), N_SAMPLES, -1)
    for column, label in enumerate(ours.layers):
        difference = np.abs(np.asarray(theirs[label]) - ours.similarity[:, column])
        tolerance = _spearman_tolerance(maps["Original"], maps[label], gap)
        assert (difference <= tolerance).all(), (label, difference, tolerance)
    assert ours.explanations_per_image == N_SAMPLES * (len(ours.layers) + 1)


def test_efficient_mprt_matches_quantus(cnn, digits):
    quantus = _quantus()
    x, y = digits
    ours = em.efficient_mprt(cnn, x, y, "gradient", randomization=em.QUANTUS_RANDOMIZATION,
                             blocks="modules")
    theirs = np.array(quantus.EfficientMPRT(disable_warnings=True)(
        model=cnn.model, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=quantus.explain,
        explain_func_kwargs={"method": "Gradient"}, batch_size=len(x)), dtype=np.float64)

    full = fully_randomized(randomization_card(cnn, "modules", "top_down"),
                            em.QUANTUS_RANDOMIZATION)
    gap, errors = 0.0, []
    for model, entropy in ((cnn.model, ours.original_complexity),
                           (full.model, ours.randomized_complexity)):
        engine = create_method("gradient", model).attribute(x, y).numpy().reshape(len(x), -1)
        captum = quantus.explain(model, x.numpy(), y.numpy(), method="Gradient")
        gap = float(np.abs(engine - captum.reshape(engine.shape)).max())
        errors.append(_entropy_error(engine, entropy, em.N_BINS, gap))
    a, b = ours.original_complexity, ours.randomized_complexity
    # (b − a)/a to first order in the entropies' errors.
    tolerance = (errors[0] + errors[1]) / a + np.abs(b - a) * errors[0] / a ** 2
    assert (np.abs(theirs - ours.scores) <= tolerance).all(), (theirs - ours.scores, tolerance)
    assert ours.randomized == ("fc2", "fc1", "conv2", "conv1")


# --- determinism and cost -------------------------------------------------------------------------

def test_smooth_mprt_is_deterministic_and_batching_free(uniform_cnn, digits):
    x, y = digits
    run = dict(nr_samples=3, layer_order="top_down")
    first = sm.smooth_mprt(uniform_cnn, x, y, "gradient", batch_size=4, **run)
    again = sm.smooth_mprt(uniform_cnn, x, y, "gradient", batch_size=1, **run)
    alone = sm.smooth_mprt(uniform_cnn, x[2:3], y[2:3], "gradient", **run)
    other = sm.smooth_mprt(uniform_cnn, x, y, "gradient", seed=1, **run)
    assert first.layers == ("fc2", "fc1", "conv2", "conv1")  # the card's blocks, output first
    repeat = sm.smooth_mprt(uniform_cnn, x, y, "gradient", batch_size=4, **run)
    np.testing.assert_array_equal(first.similarity, repeat.similarity)  # same path, same inputs
    # Another batch shape rounds the maps differently at the float32 level, which may swap the
    # ranks of near-tied pixels: one swap moves a Spearman ρ over n pixels by at most 24/n², and
    # up to 1% of the pixels may swap.
    pixels = int(np.prod(x.shape[1:]))
    bound = 0.01 * pixels * 24 / pixels ** 2
    assert_within(first.similarity, again.similarity, bound, "batch 4 vs 1")
    assert_within(first.similarity[2:3], alone.similarity, bound, "in a batch vs alone")
    assert not np.array_equal(first.similarity, other.similarity)
    np.testing.assert_array_equal(first.last, first.similarity[:, -1])


def test_efficient_mprt_is_deterministic_and_per_image(uniform_cnn, digits):
    x, y = digits
    options = RandomizationOptions(seed=5)
    first = em.efficient_mprt(uniform_cnn, x, y, "gradient", randomization=options, batch_size=3)
    alone = em.efficient_mprt(uniform_cnn, x[1:2], y[1:2], "gradient", randomization=options)
    again = em.efficient_mprt(uniform_cnn, x, y, "gradient", randomization=options)
    other = em.efficient_mprt(uniform_cnn, x, y, "gradient", randomization=RandomizationOptions())
    repeat = em.efficient_mprt(uniform_cnn, x, y, "gradient", randomization=options, batch_size=3)
    np.testing.assert_array_equal(first.scores, repeat.scores)  # same path, same inputs
    # Another batch shape rounds the maps at the float32 level, which may move a value across a
    # histogram bin edge: one of N values moving to the next bin changes the entropy by at most
    # 2·ln(N)/N nats, and the score divides it by the original entropy. Up to 1% of the values
    # may move.
    values = int(np.prod(x.shape[1:]))
    bound = 0.01 * values * 2 * math.log(values) / values / first.original_complexity
    assert_within(first.scores[1:2], alone.scores, bound[1:2], "in a batch vs alone")
    assert_within(first.scores, again.scores, bound, "batch 3 vs the default")
    assert (np.abs(first.scores - other.scores) > bound).any()  # another seed, other weights


def test_passes_per_image_are_counted(uniform_cnn, digits):
    """sMPRT: nr_samples × (L + 1) engine maps per image, eMPRT: 2; a forward hook on the model
    (copied into every randomised state) counts the rows the engine actually ran."""
    x, y = digits
    rows = []
    card = dataclasses.replace(uniform_cnn, model=copy.deepcopy(uniform_cnn.model))
    card.model.register_forward_pre_hook(lambda _m, args: rows.append(len(args[0])))
    result = sm.smooth_mprt(card, x, y, "gradient", nr_samples=3)
    assert result.explanations_per_image == 3 * 5
    assert sum(rows) == len(x) * result.explanations_per_image
    rows.clear()
    eff = em.efficient_mprt(card, x, y, "smoothgrad", method_params={"n_samples": 4})
    assert sum(rows) == len(x) * eff.explanations_per_image * 4  # SmoothGrad: 4 passes a map
    rows.clear()
    em.efficient_mprt(card, x, "predicted", "gradient")  # + one forward a state for the class
    assert sum(rows) == len(x) * (2 + 2)


def test_efficient_mprt_entropy_and_direction():
    rows = np.array([[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(em.discrete_entropy(rows, n_bins=10), [math.log(2), 0.0])
    result = em.EfficientMPRTResult(np.array([2.0, 0.0]), np.array([3.0, 1.0]), ("a",), 10)
    np.testing.assert_array_equal(result.scores, [0.5, np.nan])
    assert em.HIGHER_IS_BETTER and result.higher_is_better
    assert not sm.HIGHER_IS_BETTER and not sm.SmoothMPRTResult.higher_is_better


# --- argument checks ------------------------------------------------------------------------------

@pytest.mark.parametrize("change, error, message", [
    ({"layer_order": "sideways"}, ConfigError, "layer_order"),
    ({"similarity": "ssim"}, ConfigError, "similarity"),
    ({"nr_samples": 0}, ConfigError, "nr_samples"),
    ({"noise_magnitude": -0.1}, ConfigError, "noise_magnitude"),
    ({"blocks": "layers"}, ConfigError, "blocks"),
    ({"method": "no_such_method"}, ConfigError, "unknown attribution method"),
    ({"method_params": {"steps": 3}}, ConfigError, "no parameter 'steps'"),
    ({"targets": [1, 2]}, ValueError, "4 images but 2 targets"),
    ({"targets": "label"}, ConfigError, "predicted"),
    ({"images": torch.zeros(4, 28, 28)}, ValueError, "batch, channels, height, width"),
    ({"batch_size": 0}, ConfigError, "batch_size"),
])
def test_bad_arguments_fail_before_any_work(cnn, change, error, message):
    call = {"card": cnn, "images": torch.zeros(4, 1, 28, 28), "targets": [0, 1, 2, 3],
            "method": "gradient"}
    call.update(change)
    with pytest.raises(error, match=message):
        sm.smooth_mprt(**call)
    if not {"layer_order", "similarity", "nr_samples", "noise_magnitude"} & set(change):
        with pytest.raises(error, match=message):
            em.efficient_mprt(**call)


def test_bad_bins_and_a_bare_model_are_refused(cnn):
    with pytest.raises(ConfigError, match="n_bins"):
        em.efficient_mprt(cnn, torch.zeros(1, 1, 28, 28), [0], "gradient", n_bins=0)
    with pytest.raises(ConfigError, match="ModelCard"):
        sm.smooth_mprt(cnn.model, torch.zeros(1, 1, 28, 28), [0], "gradient")
