"""Model zoo: shapes, registry errors, declared modules, hook safety, the Lite0 weight mapping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replication.errors import ConfigError
from replication.models import WeightsUnavailable, available_models, create_model
from replication.models.hooksafe import RELUS
from replication.models.mnist import MnistCNN, initialise
from tolerance import atol

IMAGENET_MODELS = ["vgg16", "vgg16_bn", "resnet18", "resnet50", "inception_v3",
                   "efficientnet_b0", "efficientnet_lite0", "efficientnet_lite1",
                   "efficientnet_lite2"]
OFFLINE_IMAGENET = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def _card(name: str):
    torch.manual_seed(0)
    if name.startswith("mnist"):
        return create_model(name)
    return create_model(name, pretrained=False)


def _input(card, batch: int = 2) -> torch.Tensor:
    size = card.preprocessing.input_size
    return torch.randn(batch, card.preprocessing.channels, size, size)


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_mlp", *IMAGENET_MODELS])
def test_output_shape_and_declared_modules(name):
    card = _card(name)
    assert card.model.eval()(_input(card)).shape == (2, card.num_classes)
    assert card.randomization_blocks, "every model declares its randomization blocks"
    block_modules = [m for _, modules in card.randomization_blocks for m in modules]
    assert len(block_modules) == len(set(block_modules))
    card.module(card.cam_layer)  # exists


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_mlp", *IMAGENET_MODELS])
def test_the_declared_head_continues_the_network_from_the_cam_layer(name):
    """``head(model, A)`` of the CAM layer's output A is the model's logits (Ablation-CAM runs
    only it), on random weights and a random batch."""
    card = _card(name)
    assert card.head is not None, "every model of the zoo declares its head"
    model, x, store = card.model.eval(), _input(card), {}
    handle = card.module(card.cam_layer).register_forward_hook(
        lambda m, i, o: store.update(output=o.clone()))
    with torch.no_grad():
        logits = model(x)
        handle.remove()
        head = card.head(model, store["output"])
    # The same layers on the same tensor: only the batch's memory layout may differ, so at most
    # the head's own sums round apart (its fan-ins).
    ops = sum(m.in_features for m in model.modules() if isinstance(m, nn.Linear))
    torch.testing.assert_close(head, logits, rtol=0, atol=atol(logits, ops=ops))


def test_registry_errors_name_the_valid_choices():
    with pytest.raises(ConfigError, match="unknown model 'alexnet'.*efficientnet_lite0.*vgg16"):
        create_model("alexnet")
    assert set(available_models()) == {"mnist_cnn", "mnist_mlp", *IMAGENET_MODELS}


def test_inception_has_the_papers_17_blocks_from_logits_down():
    card = _card("inception_v3")
    labels = [label for label, _ in card.randomization_blocks]
    assert len(labels) == 17 and labels[0] == "Logits" and labels[-1] == "Conv2d_1a_3x3"
    assert labels[1:4] == ["Mixed_7c", "Mixed_7b", "Mixed_7a"]
    assert card.cam_layer == "Mixed_7c"


def test_mnist_blocks_and_cam_layers():
    assert [b for b, _ in _card("mnist_cnn").randomization_blocks] == ["fc2", "fc1", "conv2", "conv1"]
    assert [b for b, _ in _card("mnist_mlp").randomization_blocks] == ["fc4", "fc3", "fc2", "fc1"]
    cnn = _card("mnist_cnn")
    captured = {}
    cnn.module(cnn.cam_layer).register_forward_hook(lambda m, i, o: captured.update(a=o))
    cnn.model(torch.rand(1, 1, 28, 28))
    assert captured["a"].shape == (1, 64, 14, 14)  # ReLU(conv2) before pooling
    assert (captured["a"] >= 0).all()


def test_authors_init_matches_the_tf_code():
    model = initialise(MnistCNN(), "authors_code")
    weights = model.fc1.weight.detach()
    # truncated at 2σ, σ = 0.1: the float32 bound 0.2 rounds by half a unit in the last place
    assert weights.abs().max() <= 0.2 + atol(0.2, ops=1, dtype=torch.float32)
    assert abs(weights.std().item() - 0.088) < 0.005  # std of N(0, 0.1²) truncated at ±2σ
    assert torch.all(model.fc1.bias == 0.1)
    mlp = _card("mnist_mlp").model
    assert abs(mlp.fc1.weight.std().item() - 0.88 * 2 / 784 ** 0.5) < 0.003
    with pytest.raises(ValueError, match="unknown init scheme"):
        initialise(MnistCNN(), "xavier")


class _CountReLUCalls:
    """Counts every functional ReLU-family call and every call of a ReLU module."""

    def __init__(self, monkeypatch, model: nn.Module):
        self.functional = 0
        self.module_calls: dict[str, int] = {}
        for name in ("relu", "relu6", "hardtanh"):
            original = getattr(F, name)

            def counted(*args, _original=original, **kwargs):
                self.functional += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(F, name, counted)
        for name, module in model.named_modules():
            if isinstance(module, RELUS):
                module.register_forward_hook(
                    lambda m, i, o, name=name: self.module_calls.update(
                        {name: self.module_calls.get(name, 0) + 1}))


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_mlp", "vgg16", "resnet18", "resnet50",
                                  "inception_v3", "efficientnet_lite0"])
def test_hook_safe_models_use_relu_modules_only_each_once_not_inplace(monkeypatch, name):
    card = _card(name)
    counter = _CountReLUCalls(monkeypatch, card.model)
    card.model.eval()(_input(card, 1))
    assert counter.module_calls, "the model has ReLU modules"
    assert set(counter.module_calls.values()) == {1}, "a ReLU module was reused"
    assert counter.functional == sum(counter.module_calls.values()), "a functional ReLU was called"
    assert not any(m.inplace for m in card.model.modules() if isinstance(m, RELUS))


@pytest.mark.parametrize("name", ["resnet50", "inception_v3"])
def test_hook_safe_form_computes_what_torchvision_does(name):
    import torchvision

    card = _card(name)
    reference = torchvision.models.get_model(name, weights=None, **(
        {"aux_logits": False, "init_weights": False} if name == "inception_v3" else {}))
    reference.load_state_dict(card.model.state_dict(), strict=False)
    reference.to(memory_format=torch.channels_last)  # the cards' format: same arithmetic order
    if name == "inception_v3":
        reference.transform_input = False
    x = _input(card, 2)
    # Exact: the same weights in the same memory format through the same operations in the same
    # order run the same kernels on the same batch.
    assert torch.equal(card.model.eval()(x), reference.eval()(x))


def test_torchvision_weights_offline_give_a_clear_error(monkeypatch):
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("network unreachable (simulated)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailable, match="paper. profile.*efficientnet_lite0"):
        create_model("vgg16")


@pytest.fixture(scope="module")
def lite0():
    return create_model("efficientnet_lite0")


@pytest.mark.parametrize("name", OFFLINE_IMAGENET)
def test_offline_imagenet_weights_classify_sample_images(name, mirror):
    """The packages' weights really are ImageNet-trained: known-class images are recognised."""
    from PIL import Image

    from replication.data import imagenet

    card = create_model(name)
    folder = mirror / imagenet.SAMPLE_MIRROR_FOLDER
    names = ["n01440764_tench.JPEG", "n01530575_brambling.JPEG", "n01443537_goldfish.JPEG",
             "n03417042_garbage_truck.JPEG", "n09472597_volcano.JPEG"]
    transform = card.preprocessing.transform()
    batch = torch.stack([transform(Image.open(folder / n).convert("RGB")) for n in names])
    with torch.no_grad():
        predicted = card.model.eval()(batch).argmax(1).tolist()
    assert predicted == [imagenet.class_index(n.split("_")[0]) for n in names]


@pytest.mark.parametrize("name, size, resize", [("efficientnet_lite1", 240, 272),
                                                ("efficientnet_lite2", 260, 292)])
def test_lite1_and_lite2_use_their_training_recipe(name, size, resize):
    p = create_model(name, pretrained=False).preprocessing
    assert (p.input_size, p.resize, p.interpolation, p.mean, p.std) == (
        size, resize, "bicubic", (0.5,) * 3, (0.5,) * 3)


def test_lite0_uses_relu6_and_the_packages_preprocessing(lite0):
    assert sum(isinstance(m, nn.ReLU6) for m in lite0.model.modules()) == 33
    assert lite0.model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    p = lite0.preprocessing
    assert (p.input_size, p.resize, p.interpolation, p.mean) == (224, 256, "bicubic", (0.5,) * 3)


@pytest.mark.parametrize("name", ["vgg16", "vgg16_bn", "resnet18", "resnet50", "inception_v3",
                                  "efficientnet_b0"])
def test_stand_in_weights_replace_unavailable_ones_alive_and_labelled(monkeypatch, name):
    """Offline, stand-in mode builds the architecture with seeded random weights whose
    batch-norm statistics were measured, so logits have a usable scale; never by default."""
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("network unreachable (simulated)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailable, match="stand_in_weights"):
        create_model(name)
    card = create_model(name, stand_in=True)
    assert card.stand_in and not create_model(name, pretrained=False).stand_in
    x = torch.randn(2, 3, card.preprocessing.input_size, card.preprocessing.input_size)
    with torch.no_grad():
        logits = card.model.eval()(x)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    assert logits.std() > 1e-3, "uncalibrated batch-norm would squash the logits to ~1e-14"
    if name == "resnet18":  # seeded: the same stand-in every time (one model is enough)
        again = create_model(name, stand_in=True)
        assert all(torch.equal(a, b) for a, b in zip(card.model.state_dict().values(),
                                                      again.model.state_dict().values()))
