"""ResNet-18/34/50/101/152 for 32×32 CIFAR images, built on torchvision's ResNet.

The capacity-gap study uses the "CIFAR stem": a 3×3 stride-1 first convolution and
no max-pool, so that the 32×32 input keeps its resolution into ``layer1``. ``stem="imagenet"``
keeps torchvision's 7×7 stride-2 convolution and max-pool for the stem ablation. Parameter
names equal torchvision's, so torchvision state dicts (minus ``conv1``/``fc``) load directly.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from kdlab.models.base import StagedModel, at_size

Stem = Literal["cifar", "imagenet"]


class CifarResNet(ResNet, StagedModel):
    """torchvision ResNet with a selectable stem and named stages ``layer1``–``layer4``."""

    stage_names = ("layer1", "layer2", "layer3", "layer4")
    head_name = "fc"
    map_stage = "layer4"

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 10,
        stem: Stem = "cifar",
        arch: str = "resnet",
    ) -> None:
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        super().__init__(block, layers, num_classes=num_classes)
        self.arch = arch
        self.num_classes = num_classes
        self.stem = stem
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()

    def forward_stages(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats: dict[str, Tensor] = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            feats[name] = x
        # mean over H, W instead of AdaptiveAvgPool2d: same value, and its CUDA backward is
        # deterministic (adaptive pooling's is not, which breaks trainer.deterministic=true).
        logits = self.fc(torch.flatten(x.mean(dim=(2, 3)), 1))
        return logits, feats

    def head_map(self, last: Tensor) -> Tensor:
        return last

    def classify(self, pooled: Tensor) -> Tensor:
        return self.fc(pooled)

    def _forward_impl(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)[0]


def resnet18(num_classes: int = 10, stem: Stem = "cifar", image_size: int = 32) -> CifarResNet:
    """ResNet-18 (≈11.17M parameters for 10 classes with the CIFAR stem)."""
    return at_size(CifarResNet(BasicBlock, [2, 2, 2, 2], num_classes, stem, arch="r18"), image_size)


def resnet34(num_classes: int = 10, stem: Stem = "cifar", image_size: int = 32) -> CifarResNet:
    """ResNet-34 (≈21.28M parameters for 10 classes)."""
    return at_size(CifarResNet(BasicBlock, [3, 4, 6, 3], num_classes, stem, arch="r34"), image_size)


def resnet50(num_classes: int = 10, stem: Stem = "cifar", image_size: int = 32) -> CifarResNet:
    """ResNet-50 (≈23.52M parameters for 10 classes)."""
    return at_size(CifarResNet(Bottleneck, [3, 4, 6, 3], num_classes, stem, arch="r50"), image_size)


def resnet101(num_classes: int = 10, stem: Stem = "cifar", image_size: int = 32) -> CifarResNet:
    """ResNet-101."""
    return at_size(
        CifarResNet(Bottleneck, [3, 4, 23, 3], num_classes, stem, arch="r101"), image_size
    )


def resnet152(num_classes: int = 10, stem: Stem = "cifar", image_size: int = 32) -> CifarResNet:
    """ResNet-152."""
    return at_size(
        CifarResNet(Bottleneck, [3, 8, 36, 3], num_classes, stem, arch="r152"), image_size
    )
