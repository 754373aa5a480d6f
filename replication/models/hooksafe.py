"""Make a network safe for hook-based attribution (Guided Backprop, ParchGrad, Zennit rules).

Hooks only see ``nn.Module`` calls. Three things hide a ReLU from them or corrupt what they see:
functional ``F.relu`` (torchvision's Inception v3), in-place ReLUs (their hooked output is
overwritten), and one ReLU module reused several times in a block (torchvision's ResNet). The
classes below compute exactly what torchvision's do, with one ReLU module per use. They are built
on first use: importing torchvision costs seconds that a stage on MNIST models need not pay.
"""

from __future__ import annotations

from functools import cache

from torch import Tensor, nn

RELUS = (nn.ReLU, nn.ReLU6)


@cache
def _hook_safe_classes() -> dict[type, tuple[type, tuple[str, ...]]]:
    """torchvision block -> (its hook-safe subclass, the ReLU attributes each use gets)."""
    from torchvision.models import inception, resnet

    class HookSafeBasicConv2d(inception.BasicConv2d):
        def forward(self, x: Tensor) -> Tensor:
            return self.relu(self.bn(self.conv(x)))

    class HookSafeBasicBlock(resnet.BasicBlock):
        def forward(self, x: Tensor) -> Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu_out(out + identity)

    class HookSafeBottleneck(resnet.Bottleneck):
        def forward(self, x: Tensor) -> Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu2(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu_out(out + identity)

    # Bottleneck before BasicBlock: the first matching entry wins.
    return {inception.BasicConv2d: (HookSafeBasicConv2d, ("relu",)),
            resnet.Bottleneck: (HookSafeBottleneck, ("relu2", "relu_out")),
            resnet.BasicBlock: (HookSafeBasicBlock, ("relu_out",))}


def make_hook_safe(model: nn.Module) -> nn.Module:
    """In place: ReLU modules everywhere, none in-place, none reused. Outputs are unchanged."""
    classes = _hook_safe_classes()
    for module in list(model.modules()):
        for block, (safe, relus) in classes.items():
            if isinstance(module, block):
                module.__class__ = safe
                for name in relus:
                    setattr(module, name, nn.ReLU())
                break
    for module in model.modules():
        if isinstance(module, RELUS):
            module.inplace = False
    return model
