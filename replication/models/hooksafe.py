"""Make a network safe for hook-based attribution (Guided Backprop, ParchGrad, Zennit rules).

Hooks only see ``nn.Module`` calls. Three things hide a ReLU from them or corrupt what they see:
functional ``F.relu`` (torchvision's Inception v3), in-place ReLUs (their hooked output is
overwritten), and one ReLU module reused several times in a block (torchvision's ResNet). The
classes below compute exactly what torchvision's do, with one ReLU module per use.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import inception, resnet

RELUS = (nn.ReLU, nn.ReLU6)


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


def make_hook_safe(model: nn.Module) -> nn.Module:
    """In place: ReLU modules everywhere, none in-place, none reused. Outputs are unchanged."""
    for module in list(model.modules()):
        if isinstance(module, inception.BasicConv2d):
            module.__class__ = HookSafeBasicConv2d
            module.relu = nn.ReLU()
        elif isinstance(module, resnet.Bottleneck):
            module.__class__ = HookSafeBottleneck
            module.relu2, module.relu_out = nn.ReLU(), nn.ReLU()
        elif isinstance(module, resnet.BasicBlock):
            module.__class__ = HookSafeBasicBlock
            module.relu_out = nn.ReLU()
    for module in model.modules():
        if isinstance(module, RELUS):
            module.inplace = False
    return model
