"""The CIFAR ResNets of the CRD benchmark (resnet8 … resnet110, resnet8x4, resnet32x4).

These are the "thin" three-stage ResNets of He et al. for 32×32 inputs: a 3×3 stem, three stages
of ``n = (depth - 2) / 6`` basic blocks (strides 1, 2, 2) and a linear classifier on the globally
pooled map. ``resnet8x4`` / ``resnet32x4`` use four times wider stages (32 → 64/128/256).

Parameter names follow the published benchmark code (RepDistiller ``models/resnet.py``, reused by
mdistiller) so that its released checkpoints load with ``strict=True``: ``conv1``/``bn1`` for
the stem, ``layerK.i.conv1|bn1|conv2|bn2`` in the blocks, ``layerK.0.downsample.0|1`` for the
projection shortcut (1×1 conv + BN) and ``fc`` for the classifier.

Stage names and the published feature list (``is_feat=True``)::

    index  published   kdlab stage   resnet8x4 shape
    0      f0          stem          (32, 32, 32)   conv1 → bn1 → ReLU
    1      f1          layer1        (64, 32, 32)
    2      f2          layer2        (128, 16, 16)
    3      f3          layer3        (256, 8, 8)
    4      f4          pool          (256,)         pooled vector fed to ``fc``

With ``preact=True`` the ``layerK`` entries are the last block's sum (residual + shortcut) before
its ReLU, as the published ``preact=True`` features; ``stem`` and ``pool`` are unchanged.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.base import StagedModel, at_size

__all__ = [
    "ThinResNet",
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
]


class ResBlock(nn.Module):
    """Post-activation basic block: two 3×3 conv-BN pairs, shortcut added before the last ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(output, pre-activation)``: the pre-activation is the sum before the final ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        pre = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(pre), pre

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_pre(x)[0]


class ThinResNet(StagedModel):
    """ResNet of depth ``6n + 2`` with stem width ``widths[0]`` and stage widths ``widths[1:]``.

    The module names (``conv1``, ``bn1``, ``layer1``–``layer3``, ``downsample``, ``fc``) are the
    published benchmark's, so its teacher checkpoints (``resnet56``, ``resnet110``,
    ``resnet32x4``) load strictly.
    """

    has_preact = True
    head_name = "fc"
    map_stage = "layer3"

    def __init__(
        self,
        depth: int,
        widths: tuple[int, int, int, int],
        num_classes: int = 100,
        arch: str = "resnet",
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.arch = arch
        self.num_classes = num_classes
        self.stage_names = ("stem", "layer1", "layer2", "layer3", "pool")
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for i, planes in enumerate(widths[1:]):
            blocks = []
            for b in range(n):
                blocks.append(ResBlock(in_planes, planes, 2 if (i > 0 and b == 0) else 1))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_stages(self, x: Tensor, preact: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        x = F.relu(self.bn1(self.conv1(x)))
        feats = {"stem": x}
        for name in ("layer1", "layer2", "layer3"):
            layer: nn.Sequential = getattr(self, name)
            for block in layer[:-1]:
                x = block(x)
            x, pre = layer[-1].forward_pre(x)
            feats[name] = pre if preact else x
        # global mean = the published AvgPool2d(8) on the 8×8 map of a 32×32 input
        pooled = x.mean(dim=(2, 3))
        feats["pool"] = pooled
        return self.fc(pooled), feats

    def head_map(self, last: Tensor) -> Tensor:
        return last

    def classify(self, pooled: Tensor) -> Tensor:
        return self.fc(pooled)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))

    def forward_from(self, stage: str, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The layers after ``stage`` (``stem``, ``layer1``, ``layer2`` or ``layer3``) on ``x``,
        a map shaped like that stage's (post-activation) output."""
        order = ("stem", "layer1", "layer2", "layer3")
        if stage not in order:
            raise ValueError(f"forward_from: stage {stage!r} is not one of {list(order)}")
        feats: dict[str, Tensor] = {}
        for name in order[order.index(stage) + 1 :]:
            x = getattr(self, name)(x)
            feats[name] = x
        pooled = x.mean(dim=(2, 3))
        feats["pool"] = pooled
        return self.fc(pooled), feats


_THIN = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def resnet8(num_classes: int = 100, image_size: int = 32) -> ThinResNet:
    """ResNet-8, widths 16/32/64 (83,892 parameters for 100 classes)."""
    return at_size(ThinResNet(8, _THIN, num_classes, arch="resnet8"), image_size)


def resnet14(num_classes: int = 100, image_size: int = 32) -> ThinResNet:
    """ResNet-14, widths 16/32/64 (181,108 parameters)."""
    return at_size(ThinResNet(14, _THIN, num_classes, arch="resnet14"), image_size)


def resnet20(num_classes: int = 100, image_size: int = 32) -> ThinResNet:
    """ResNet-20, widths 16/32/64 (278,324 parameters)."""
    return at_size(ThinResNet(20, _THIN, num_classes, arch="resnet20"), image_size)


def resnet32(num_classes: int = 100, image_size: int = 32) -> ThinResNet:
    """ResNet-32, widths 16/32/64 (472,756 parameters)."""
    return at_size(ThinResNet(32, _THIN, num_classes, arch="resnet32"), image_size)


def resnet44(num_classes: int = 100, image_size: int = 32) -> ThinResNet:
    """ResNet-44, widths 16/32/64 (667,188 parameters)."""
    return at_size(ThinResNet(44, _THIN, num_classes, arch="resnet44"), image_size)


def resnet56(num_classes: int = 100, image_size: int = 32) -> ThinResNet:
    """ResNet-56, widths 16/32/64 (861,620 parameters), a benchmark teacher."""
    return at_size(ThinResNet(56, _THIN, num_classes, arch="resnet56"), image_size)


def resnet110(num_classes: int = 100, image_size: int = 32) -> ThinResNet:
    """ResNet-110, widths 16/32/64 (1,736,564 parameters), a benchmark teacher."""
    return at_size(ThinResNet(110, _THIN, num_classes, arch="resnet110"), image_size)


def resnet8x4(num_classes: int = 100, image_size: int = 32) -> ThinResNet:
    """ResNet-8×4, stem 32 and widths 64/128/256 (1,233,540 parameters), a benchmark student."""
    return at_size(ThinResNet(8, _WIDE, num_classes, arch="resnet8x4"), image_size)


def resnet32x4(num_classes: int = 100, image_size: int = 32) -> ThinResNet:
    """ResNet-32×4, stem 32 and widths 64/128/256 (7,433,860 parameters), a benchmark teacher."""
    return at_size(ThinResNet(32, _WIDE, num_classes, arch="resnet32x4"), image_size)
