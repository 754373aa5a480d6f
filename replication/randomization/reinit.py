"""Model-parameter randomization (Sanity Checks §4; notes §4, §8, §9.2): cascading and independent.

Both walk ``card.randomization_blocks`` (output block first). Cascading yields "Original"
(index 0), then stage k re-initialises ``blocks[:k]`` (Fig. 2, 4, 5, 20); independent stage
k = 0 … n−1 re-initialises ``blocks[k]`` alone, every other block pretrained (Fig. 3, 21).
``RandomizationOptions`` (``sanity_checks.randomization`` in params.yaml) defaults to the
authors' code:

``batchnorm``
    ``"authors_code"``: re-run the initialisers of trainable parameters only (conv/linear
    weights and biases, BN γ → 1, β → 0). BN running mean/variance keep their pretrained values:
    they are not trainable TF variables, so the authors' ``tf.initialize_variables`` never
    touched them (notes §4.2, §8 item 2).
    ``"paper_text"``: "we randomize all the filter weights, biases, and batch-norm variables".
    Our reading: every BN variable, trainable or not, goes back to its initial value, so the
    running statistics are reset too (mean 0, variance 1) on top of ``authors_code``.
    ``"reset_parameters"``: Quantus MPRT (notes §9.2): ``module.reset_parameters()`` for every
    module of the block that has one (PyTorch defaults: kaiming-uniform conv/linear, BN γ 1, β 0,
    running statistics 0/1), under the stage's seed.
``distribution``
    ``"truncated_normal"`` (the authors' code): each layer's own initialiser, see
    ``replication.models.initializers``; ``"uniform"`` (the paper's "we replicated these
    randomization for a uniform distribution"): a zero-mean uniform of the same variance. Applies
    to ``authors_code`` and ``paper_text``; ``reset_parameters`` draws PyTorch's defaults only.
``draws``
    ``"fresh"`` (the authors' code): every stage reloads the pretrained weights and re-draws
    every block it randomises, so the top block's random weights differ between stages.
    ``"nested"``: each block's random weights are drawn once per seed and are the same in every
    stage that randomises it.
    ``"quantus"``: Quantus's random layer generator (notes §9.2): every block of every stage is
    drawn from the one seed ``seed + 1`` (its ``torch.manual_seed(seed + 1)`` before each
    layer's ``reset_parameters()``), so with ``batchnorm="reset_parameters"``, one module per
    block (``parameter_module_blocks``) and Quantus's ``seed`` the weights are Quantus's.
``seed``
    The authors set none. Block b of stage s uses a generator seeded from (seed, s, b) under
    ``fresh``, from (seed, b) under ``nested`` and ``seed + 1`` under ``quantus``
    (``block_seed``); ``Stage.seeds`` records them.

The stages share ONE deep copy of the model, reloaded from ``card.model``'s state dict at every
stage (one extra copy, also for Inception v3); ``card.model`` is never modified. ``Stage.model``
is therefore only valid until the next stage is requested: use it inside the loop, do not
``list()`` the iterator.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from replication.attribution import create_method
from replication.errors import ConfigError
from replication.models.base import ModelCard
from replication.models.initializers import Initializer, initializer, reinitialise
from replication.randomization import RandomizationOptions

TARGET_MODES = ("predicted", "label")
ORIGINAL = "Original"


@dataclass(frozen=True, eq=False)
class Stage:
    """One randomization stage. ``index`` is the stage's position in its sequence: cascading
    0 = "Original" and k = ``blocks[:k]`` randomised (the x-position of the papers' plots);
    independent k = ``blocks[k]`` alone (its plot position is k + 1 beside an original)."""

    label: str
    index: int
    randomized: tuple[str, ...]
    model: nn.Module
    seeds: dict[str, int] = field(default_factory=dict)  # block label -> generator seed


def block_seed(options: RandomizationOptions, stage_index: int, block_label: str) -> int:
    """The seed of one block's generator: from (seed, stage, block) under ``fresh``, from
    (seed, block) under ``nested``, ``seed + 1`` for every block under ``quantus``."""
    if options.draws == "quantus":
        return options.seed + 1
    if options.draws == "nested":
        key = f"{options.seed}/nested/{block_label}"
    else:
        key = f"{options.seed}/fresh/{stage_index}/{block_label}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def _blocks(card: ModelCard) -> list[tuple[str, list[str]]]:
    blocks = list(card.randomization_blocks)
    if not blocks:
        raise ConfigError(f"{card.name} declares no randomization blocks")
    labels = [label for label, _ in blocks]
    if len(set(labels)) != len(labels) or ORIGINAL in labels:
        raise ConfigError(f"{card.name}: block labels must be unique and not {ORIGINAL!r}; "
                          f"got {labels}")
    return blocks


def parameter_module_blocks(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Quantus's randomisation layers as blocks: every module that has ``reset_parameters``
    (each Conv2d, BatchNorm, Linear on its own), output first, i.e. ``named_modules()`` order
    reversed (notes §9.2). Use with ``dataclasses.replace(card, randomization_blocks=...)``.

    A block re-initialises its module's descendants too (``randomize_block``); Quantus calls
    the module's own ``reset_parameters()`` only. They differ only for a module with
    ``reset_parameters`` inside another one, which no model card here has.
    """
    names = [name for name, module in model.named_modules()
             if name and hasattr(module, "reset_parameters")]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no module with reset_parameters()")
    return [(name, [name]) for name in reversed(names)]


def _unique_modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    seen: set[int] = set()
    modules = []
    for name in names:
        for module in model.get_submodule(name).modules():
            if id(module) not in seen:
                seen.add(id(module))
                modules.append(module)
    return modules


def _reset_parameters(model: nn.Module, modules: list[nn.Module], seed: int) -> None:
    # reset_parameters() takes no generator: seed the global RNGs of the model's devices inside
    # a fork, so the caller's random state (every device's) is left as it was.
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        for module in modules:
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def randomize_block(model: nn.Module, module_names: Sequence[str], init: Initializer | None,
                    options: RandomizationOptions, seed: int) -> None:
    """Re-initialise the modules ``module_names`` of ``model`` in place (``options``)."""
    modules = _unique_modules(model, module_names)
    if options.batchnorm == "reset_parameters":
        _reset_parameters(model, modules, seed)
        return
    if init is None:
        raise ConfigError(f"batchnorm={options.batchnorm!r} needs the model's initializer")
    generator = torch.Generator().manual_seed(seed)
    for module in modules:
        reinitialise(model, module, init, generator, options.distribution)
        if options.batchnorm == "paper_text" and isinstance(module, _BatchNorm):
            module.reset_running_stats()


def _stages(card: ModelCard, options: RandomizationOptions | None,
            plan: list[tuple[int, str, list[int]]]) -> Iterator[Stage]:
    options = options or RandomizationOptions()
    blocks = _blocks(card)
    init = None if options.batchnorm == "reset_parameters" else initializer(card.initializer)
    working = copy.deepcopy(card.model)
    original = card.model.state_dict()
    for index, label, chosen in plan:
        working.load_state_dict(original)
        seeds: dict[str, int] = {}
        for b in chosen:
            block_label, module_names = blocks[b]
            seeds[block_label] = block_seed(options, index, block_label)
            randomize_block(working, module_names, init, options, seeds[block_label])
        yield Stage(label=label, index=index, randomized=tuple(blocks[b][0] for b in chosen),
                    model=working.eval(), seeds=seeds)


def cascading(card: ModelCard, options: RandomizationOptions | None = None) -> Iterator[Stage]:
    """"Original", then stage k (k = 1 … n) with ``blocks[:k]`` randomised, top block first."""
    n = len(_blocks(card))
    plan = [(0, ORIGINAL, [])]
    plan += [(k, card.randomization_blocks[k - 1][0], list(range(k))) for k in range(1, n + 1)]
    return _stages(card, options, plan)


def fully_randomized(card: ModelCard, options: RandomizationOptions | None = None) -> Stage:
    """The last cascading stage alone (every block randomised, the same seeds as stage n of
    ``cascading``), without computing the stages before it."""
    n = len(_blocks(card))
    return next(_stages(card, options, [(n, card.randomization_blocks[n - 1][0], list(range(n)))]))


def independent(card: ModelCard, options: RandomizationOptions | None = None) -> Iterator[Stage]:
    """Stage k (k = 0 … n−1) with only ``blocks[k]`` randomised (no "Original" stage)."""
    blocks = _blocks(card)
    plan = [(k, label, [k]) for k, (label, _) in enumerate(blocks)]
    return _stages(card, options, plan)


def explained_classes(model: nn.Module, images: Tensor, mode: str = "predicted",
                      labels: Tensor | Sequence[int] | None = None,
                      batch_size: int = 64) -> Tensor:
    """The class each stage explains, (B,) long on ``images``' device.

    ``"predicted"`` (the authors' code): argmax of *this* model's logits, recomputed at every
    stage, so a randomised model explains its own top class. ``"label"`` (Quantus, Heyjuke58):
    the given ``labels``.
    """
    if mode not in TARGET_MODES:
        raise ConfigError(f"unknown target mode {mode!r}; choose 'predicted' (the authors' "
                          "code: argmax of the current model) or 'label'")
    if mode == "label":
        if labels is None:
            raise ConfigError("target mode 'label' needs the true labels")
        targets = torch.as_tensor(labels, dtype=torch.long).reshape(-1).to(images.device)
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        return targets
    device = next((p.device for p in model.parameters()), images.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            classes = [model(images[i:i + batch_size].to(device)).argmax(1)
                       for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(classes).to(images.device)


def stage_card(card: ModelCard, stage: Stage) -> ModelCard:
    """``card`` with the stage's model, so an engine method resolves its layers in that model."""
    return dataclasses.replace(card, model=stage.model)


def explain(card: ModelCard, stages: Iterator[Stage], method: str, images: Tensor,
            target: str = "predicted", labels: Tensor | Sequence[int] | None = None,
            **params: Any) -> Iterator[tuple[Stage, Tensor, Tensor]]:
    """(stage, explained classes, raw maps) for every stage: ``method`` with ``params`` through
    the attribution engine, for the classes ``explained_classes`` gives under ``target``."""
    for stage in stages:
        targets = explained_classes(stage.model, images, target, labels)
        maps = create_method(method, stage_card(card, stage), **params).attribute(images, targets)
        yield stage, targets, maps
