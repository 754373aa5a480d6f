"""Model-parameter randomization (Sanity Checks §4): cascading / independent stages, seeds,
fresh vs nested draws, the batch-norm options, the initialisers, and the explained class."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from replication.attribution import create_method
from replication.errors import ConfigError
from replication.randomization.reinit import cascading, explain, explained_classes, independent
from replication.randomization import RandomizationOptions
from replication.models import create_model
from replication.models.base import ModelCard
from replication.models.initializers import (available_initializers, initializer, reinitialise,
                                             truncated_std_factor)
from replication.models.mnist import initialise_layer
from tolerance import assert_differs, assert_within, atol, network_ops

TRUNC = truncated_std_factor(2.0)  # SD of N(0, 1) cut at ±2: 0.8796


def _pretrained_like(card: ModelCard, seed: int = 0) -> ModelCard:
    """Shift every parameter and BN statistic away from any initialiser's constants, as
    training would, so a re-initialisation changes every tensor it touches."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in card.model.parameters():
            tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
        for tensor in card.model.buffers():  # BN statistics (running_var stays positive)
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator)).abs_()
    return card


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _block_of(card: ModelCard, key: str) -> str:
    for label, modules in card.randomization_blocks:
        if any(key.startswith(m + ".") for m in modules):
            return label
    raise AssertionError(f"{key} belongs to no block")


def _changed_blocks(card: ModelCard, original: dict[str, torch.Tensor],
                    model: nn.Module) -> set[str]:
    state = model.state_dict()
    return {_block_of(card, k) for k in original if not torch.equal(state[k], original[k])}


def _all_keys_of(card: ModelCard, original, blocks) -> set[str]:
    return {k for k in original if _block_of(card, k) in blocks}


@pytest.fixture(scope="module")
def cnn() -> ModelCard:
    torch.manual_seed(0)
    return _pretrained_like(create_model("mnist_cnn"))


@pytest.fixture(scope="module")
def lite0() -> ModelCard:
    return _pretrained_like(create_model("efficientnet_lite0", pretrained=False))


# --- stages --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_mlp"])
def test_cascading_randomizes_exactly_the_blocks_above(name):
    card = _pretrained_like(create_model(name))
    original = _snapshot(card.model)
    blocks = [label for label, _ in card.randomization_blocks]
    stages = []
    for stage in cascading(card):
        state = stage.model.state_dict()
        changed = {k for k in original if not torch.equal(state[k], original[k])}
        # every tensor of a randomised block changes (weights and biases), nothing else does
        assert changed == _all_keys_of(card, original, stage.randomized), stage.label
        assert not stage.model.training
        stages.append((stage.index, stage.label, stage.randomized))
    assert stages[0] == (0, "Original", ())
    assert [s[1] for s in stages[1:]] == blocks
    assert [s[2] for s in stages[1:]] == [tuple(blocks[:i + 1]) for i in range(len(blocks))]
    assert all(torch.equal(v, original[k]) for k, v in card.model.state_dict().items())


def test_mnist_cnn_stage_labels_are_the_papers_four_layers(cnn):
    assert [s.label for s in cascading(cnn)] == ["Original", "fc2", "fc1", "conv2", "conv1"]


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_mlp"])
def test_independent_randomizes_one_block_each(name):
    card = _pretrained_like(create_model(name))
    original = _snapshot(card.model)
    seen = []
    for stage in independent(card):
        assert stage.randomized == (stage.label,)
        assert _changed_blocks(card, original, stage.model) == {stage.label}
        seen.append((stage.index, stage.label))
    assert seen == [(i, label) for i, (label, _) in enumerate(card.randomization_blocks)]
    assert all(torch.equal(v, original[k]) for k, v in card.model.state_dict().items())


def _fc2_weights(card: ModelCard, options: RandomizationOptions) -> list[torch.Tensor]:
    return [s.model.fc2.weight.detach().clone() for s in cascading(card, options)]


def test_nested_keeps_a_blocks_draw_and_fresh_redraws_it(cnn):
    nested = _fc2_weights(cnn, RandomizationOptions(draws="nested", seed=1))
    fresh = _fc2_weights(cnn, RandomizationOptions(draws="fresh", seed=1))
    assert torch.equal(nested[1], nested[2]) and torch.equal(nested[1], nested[4])
    assert not torch.equal(fresh[1], fresh[2])
    assert not torch.equal(nested[0], nested[1])  # stage 0 is the original


@pytest.mark.parametrize("draws", ["fresh", "nested"])
def test_draws_are_deterministic_for_a_seed_and_differ_across_seeds(cnn, draws):
    def run(seed: int) -> list[dict[str, torch.Tensor]]:
        return [_snapshot(s.model) for s in cascading(cnn, RandomizationOptions(draws=draws,
                                                                               seed=seed))]

    first, again, other = run(3), run(3), run(4)
    for a, b, c in zip(first[1:], again[1:], other[1:]):
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not torch.equal(a["fc2.weight"], c["fc2.weight"])


def test_nested_independent_and_cascading_draw_the_same_block_weights(cnn):
    options = RandomizationOptions(draws="nested", seed=2)
    by_block = {s.label: s.model.fc1.weight.detach().clone() for s in independent(cnn, options)}
    cascade = {s.label: s.model.fc1.weight.detach().clone() for s in cascading(cnn, options)}
    assert torch.equal(by_block["fc1"], cascade["fc1"])
    assert torch.equal(by_block["fc1"], cascade["conv1"])


def test_randomization_leaves_the_global_random_state_alone(cnn):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for batchnorm in ("authors_code", "reset_parameters"):
        for _ in cascading(cnn, RandomizationOptions(batchnorm=batchnorm)):
            pass
    assert torch.equal(torch.rand(3), expected)


def test_stage_seeds_are_recorded_per_block(cnn):
    stages = [(s.label, dict(s.seeds)) for s in cascading(cnn, RandomizationOptions(seed=5))]
    assert stages[0][1] == {}
    assert list(stages[2][1]) == ["fc2", "fc1"]
    assert stages[1][1]["fc2"] != stages[2][1]["fc2"]  # fresh: a new draw per stage


# --- batch norm ----------------------------------------------------------------------------------

def _conv_head_stage(card: ModelCard, batchnorm: str) -> dict[str, torch.Tensor]:
    for stage in independent(card, RandomizationOptions(batchnorm=batchnorm)):
        if stage.label == "conv_head":
            return _snapshot(stage.model)
    raise AssertionError("no conv_head stage")


def test_authors_code_keeps_running_statistics_and_resets_gamma_beta(lite0):
    original = _snapshot(lite0.model)
    state = _conv_head_stage(lite0, "authors_code")
    assert torch.equal(state["bn2.running_mean"], original["bn2.running_mean"])
    assert torch.equal(state["bn2.running_var"], original["bn2.running_var"])
    assert torch.equal(state["bn2.weight"], torch.ones_like(state["bn2.weight"]))
    assert torch.equal(state["bn2.bias"], torch.zeros_like(state["bn2.bias"]))
    assert not torch.equal(state["conv_head.weight"], original["conv_head.weight"])
    assert torch.equal(state["bn1.weight"], original["bn1.weight"])  # another block


def test_paper_text_also_resets_running_statistics(lite0):
    state = _conv_head_stage(lite0, "paper_text")
    assert torch.equal(state["bn2.running_mean"], torch.zeros_like(state["bn2.running_mean"]))
    assert torch.equal(state["bn2.running_var"], torch.ones_like(state["bn2.running_var"]))
    assert torch.equal(state["bn2.weight"], torch.ones_like(state["bn2.weight"]))
    original = _snapshot(lite0.model)
    assert torch.equal(state["bn1.running_var"], original["bn1.running_var"])


def test_reset_parameters_draws_pytorch_defaults(lite0):
    state = _conv_head_stage(lite0, "reset_parameters")
    weight = state["conv_head.weight"]  # 1280 × 320 × 1 × 1
    bound = 1.0 / math.sqrt(320)  # kaiming_uniform_(a=√5) on fan_in 320
    assert weight.abs().max() <= bound and weight.abs().max() > 0.99 * bound
    assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert torch.equal(state["bn2.running_mean"], torch.zeros_like(state["bn2.running_mean"]))
    assert torch.equal(state["bn2.running_var"], torch.ones_like(state["bn2.running_var"]))
    # the authors' code draws timm's normal instead: unbounded, σ = √(2/1280)
    authors = _conv_head_stage(lite0, "authors_code")["conv_head.weight"]
    assert authors.abs().max() > 3 * bound


# --- initialisers --------------------------------------------------------------------------------

def _redraw(card: ModelCard, name: str, distribution: str = "truncated_normal",
            seed: int = 0) -> nn.Module:
    module = card.module(name)
    reinitialise(card.model, module, initializer(card.initializer), torch.Generator().manual_seed(seed),
                 distribution)
    return module


def test_inception_v3_redraws_tf_variance_scaling():
    card = create_model("inception_v3", pretrained=False)
    assert card.initializer == "tf_variance_scaling"
    conv = _redraw(card, "Mixed_7c.branch3x3dbl_1.conv")  # 1×1, 2048 → 448: 917,504 weights
    sigma = math.sqrt(1.3 * 2.0 / 2048)
    weight = conv.weight.detach()
    assert weight.abs().max() <= 2 * sigma  # cut at ±2σ
    # the 1.3 compensates the truncation: the SD is σ·0.8796 ≈ √(2/fan_in)
    assert weight.std().item() == pytest.approx(sigma * TRUNC, rel=0.01)
    assert weight.std().item() == pytest.approx(math.sqrt(2.0 / 2048), rel=0.01)
    uniform = _redraw(card, "Mixed_7c.branch3x3dbl_1.conv", "uniform").weight.detach()
    assert uniform.var().item() == pytest.approx(weight.var().item(), rel=0.02)
    assert uniform.abs().max() <= math.sqrt(3) * sigma * TRUNC


def test_lite0_redraws_timms_goog_init_with_grouped_fan_out(lite0):
    card = copy.deepcopy(lite0)
    fresh = create_model("efficientnet_lite0", pretrained=False)  # built by timm's own init
    head = _redraw(card, "conv_head").weight.detach()  # fan_out = 1280
    assert head.std().item() == pytest.approx(math.sqrt(2.0 / 1280), rel=0.01)
    depthwise = _redraw(card, "blocks.6.0.conv_dw").weight.detach()  # 3×3, groups = 1152
    assert depthwise.std().item() == pytest.approx(math.sqrt(2.0 / 9), rel=0.03)
    built = fresh.module("blocks.6.0.conv_dw").weight.detach()
    assert depthwise.std().item() == pytest.approx(built.std().item(), rel=0.05)
    classifier = _redraw(card, "classifier")
    assert classifier.weight.abs().max() <= 1 / math.sqrt(1000)
    assert torch.equal(classifier.bias, torch.zeros(1000))


def test_mnist_cnn_redraws_truncated_normal_0_1(cnn):
    card = copy.deepcopy(cnn)
    fc1 = _redraw(card, "fc1")  # 1024 × 3136 weights
    assert fc1.weight.std().item() == pytest.approx(0.1 * TRUNC, rel=0.005)
    assert fc1.weight.abs().max() <= 0.2
    assert torch.equal(fc1.bias, torch.full((1024,), 0.1))
    uniform = _redraw(card, "fc1", "uniform")
    assert uniform.weight.std().item() == pytest.approx(0.1 * TRUNC, rel=0.005)
    assert uniform.weight.abs().max() <= math.sqrt(3) * 0.1 * TRUNC


def test_mnist_initializer_is_the_factorys_own_bit_for_bit(cnn):
    mlp = create_model("mnist_mlp")
    for card, layer in ((copy.deepcopy(cnn), "fc2"), (mlp, "fc3")):
        reference = copy.deepcopy(card.model)
        torch.manual_seed(7)
        initialise_layer(reference, reference.get_submodule(layer), "authors_code")
        redrawn = _redraw(card, layer, seed=7)
        assert torch.equal(redrawn.weight, reference.get_submodule(layer).weight)
        assert torch.equal(redrawn.bias, reference.get_submodule(layer).bias)


@pytest.mark.parametrize("name, conv", [("resnet18", "layer4.0.conv1"),
                                        ("efficientnet_b0", "features.6.0.block.1.0")])
def test_torchvision_rules_match_the_weights_torchvision_builds(name, conv):
    card = create_model(name, pretrained=False)
    built = card.module(conv).weight.detach().clone()
    redrawn = _redraw(card, conv).weight.detach()
    assert redrawn.std().item() == pytest.approx(built.std().item(), rel=0.05)
    generator = torch.Generator().manual_seed(0)
    init = initializer(card.initializer)
    for module in card.model.modules():  # every parameter of the model has a rule
        reinitialise(card.model, module, init, generator)


def test_every_model_names_a_registered_initializer():
    assert {"mnist_authors_code", "tf_variance_scaling", "timm_efficientnet",
            "torchvision_vgg", "torchvision_resnet", "torchvision_efficientnet",
            "pytorch_default"} <= set(available_initializers())
    assert create_model("mnist_cnn", init="pytorch_default").initializer == "pytorch_default"


def test_unknown_initializer_and_missing_rules_are_clear_errors(cnn):
    with pytest.raises(ConfigError, match="unknown initializer 'xavier'.*tf_variance_scaling"):
        initializer("xavier")
    broken = copy.copy(cnn)
    broken.initializer = "xavier"
    with pytest.raises(ConfigError, match="unknown initializer 'xavier'"):
        broken.check()
    with pytest.raises(ConfigError, match="no rule for LayerNorm"):
        reinitialise(nn.Sequential(), nn.LayerNorm(4), initializer("mnist_authors_code"),
                     torch.Generator())


def test_invalid_options_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown batchnorm option 'all'"):
        RandomizationOptions(batchnorm="all")
    with pytest.raises(ConfigError, match="unknown re-initialisation distribution 'gaussian'"):
        RandomizationOptions(distribution="gaussian")
    with pytest.raises(ConfigError, match="applies to authors_code and paper_text"):
        RandomizationOptions(batchnorm="reset_parameters", distribution="uniform")
    with pytest.raises(ConfigError, match="unknown draws option"):
        RandomizationOptions(draws="once")
    with pytest.raises(ConfigError, match="seed"):
        RandomizationOptions(seed=-1)
    with pytest.raises(ConfigError, match="randomization.sed: unknown key; did you mean 'seed'"):
        RandomizationOptions.from_params({"sed": 1}, "sanity_checks.randomization")
    with pytest.raises(ConfigError, match="randomization.draws is 'once'"):
        RandomizationOptions.from_params({"draws": "once"}, "sanity_checks.randomization")
    assert RandomizationOptions.from_params({"draws": "nested"}, "r").draws == "nested"


# --- explained class -----------------------------------------------------------------------------

def test_explained_classes_recomputes_the_argmax_per_stage(cnn):
    images = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(16) % 10
    per_stage = []
    for stage in cascading(cnn, RandomizationOptions(seed=0)):
        with torch.no_grad():
            expected = stage.model(images).argmax(1)
        targets = explained_classes(stage.model, images)
        assert torch.equal(targets, expected)
        assert torch.equal(explained_classes(stage.model, images, "label", labels), labels)
        per_stage.append(targets)
    assert any(not torch.equal(per_stage[0], t) for t in per_stage[1:])
    with pytest.raises(ConfigError, match="needs the true labels"):
        explained_classes(cnn.model, images, "label")
    with pytest.raises(ConfigError, match="unknown target mode"):
        explained_classes(cnn.model, images, "true")


def test_explain_attributes_each_stage_for_its_own_class(cnn):
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    results = list((s.label, t, m) for s, t, m in explain(cnn, cascading(cnn), "gradient", images))
    assert [label for label, _, _ in results] == ["Original", "fc2", "fc1", "conv2", "conv1"]
    original = create_method("gradient", cnn).attribute(images, explained_classes(cnn.model, images))
    # The same method on the same images, possibly in other batches: the network's rounding.
    rounding = atol(original, ops=network_ops(cnn.model), dtype=torch.float32)
    assert_within(results[0][2], original, rounding)
    assert_differs(results[1][2], original, rounding)
