"""PreResNet-20 for CIFAR (He et al. 2016, pre-activation), the replication study's model.

Three stages of three pre-activation basic blocks with widths [16, 32, 64] (the "Does KD really work?" replication),
≈0.27M parameters. Stages are named ``layer1``–``layer3`` like the ResNets' so that feature KD
and CKA address every model the same way.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.base import StagedModel, at_size, batch_norm_again


class PreActBlock(nn.Module):
    """BN → ReLU → conv, twice; a 1×1 projection shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreResNet(StagedModel):
    """Pre-activation ResNet of depth 6n+2 with the given stage widths."""

    def __init__(
        self,
        depth: int = 20,
        widths: tuple[int, int, int] | list[int] = (16, 32, 64),
        num_classes: int = 100,
        arch: str = "preresnet20",
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"PreResNet depth must be 6n+2 (20, 56, 110, …), got {depth}")
        n = (depth - 2) // 6
        self.arch = arch
        self.num_classes = num_classes
        self.stage_names = ("layer1", "layer2", "layer3")
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        in_planes = widths[0]
        for i, (name, planes) in enumerate(zip(self.stage_names, widths, strict=True)):
            blocks = []
            for b in range(n):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(PreActBlock(in_planes, planes, stride))
                in_planes = planes
            setattr(self, name, nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_stages(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x = self.conv1(x)
        feats: dict[str, Tensor] = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            feats[name] = x
        x = F.relu(self.bn(x)).mean(dim=(2, 3))
        return self.fc(x), feats

    def head_map(self, last: Tensor) -> Tensor:
        return F.relu(batch_norm_again(self.bn, last))

    def classify(self, pooled: Tensor) -> Tensor:
        return self.fc(pooled)


def preresnet20(
    num_classes: int = 100, widths: tuple[int, int, int] = (16, 32, 64), image_size: int = 32
) -> PreResNet:
    """PreResNet-20 with widths [16, 32, 64] (the "Does KD really work?" replication)."""
    return at_size(PreResNet(20, widths, num_classes, arch="preresnet20"), image_size)


def preresnet56(num_classes: int = 100, image_size: int = 32) -> PreResNet:
    """PreResNet-56, the notebook-style ResNet teacher for the small CNN (the introductory notebook)."""
    return at_size(PreResNet(56, (16, 32, 64), num_classes, arch="r56"), image_size)
