"""The CRD benchmark's CIFAR ShuffleNetV1 (``ShuffleV1``: 3 groups, widths 240/480/960).

ShuffleNet (Zhang et al. 2018) adapted to 32×32 inputs: a 1×1 stem conv to 24 channels with BN
and ReLU, three stages of 4/8/4 bottlenecks (grouped 1×1 → channel shuffle → depthwise 3×3 →
grouped 1×1). Each stage starts with a stride-2 unit whose shortcut is a 3×3 average pool
concatenated to the branch; the other units add an identity shortcut. Global pooling and a
``linear`` classifier follow.

Parameter names follow the published benchmark code (RepDistiller ``models/ShuffleNetv1.py``)
so that its checkpoints load with ``strict=True``: ``conv1``/``bn1`` for the stem,
``layerK.i.conv1|bn1|conv2|bn2|conv3|bn3`` in the units and ``linear`` for the classifier.

Stage names and the published feature list (``is_feat=True``)::

    index  published   kdlab stage   shape
    0      f0          stem          (24, 32, 32)   relu(bn1(conv1(x)))
    1      f1          layer1        (240, 16, 16)
    2      f2          layer2        (480, 8, 8)
    3      f3          layer3        (960, 4, 4)
    4      f4          pool          (960,)         pooled vector fed to ``linear``

With ``preact=True`` the ``layerK`` entries are the last unit's branch + shortcut before the
final ReLU (``relu(pre) == post``), as in the published code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.base import StagedModel, at_size

__all__ = ["ShuffleNetV1", "channel_shuffle", "shufflev1"]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` equal groups ([g, C/g] → [C/g, g] order)."""
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV1 bottleneck; ``out_planes`` counts the branch only (the pool is concatenated)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        # the first unit after the 24-channel stem uses an ungrouped 1×1 conv, as published
        self.first_groups = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def forward_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(output, pre-activation)``: the pre-activation is the merge before the final ReLU."""
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            pre = torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        else:
            pre = out + x
        return F.relu(pre), pre

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_pre(x)[0]


class ShuffleNetV1(StagedModel):
    """CIFAR ShuffleNetV1 with the published benchmark's module names (see module doc)."""

    head_name = "linear"
    map_stage = "layer3"

    has_preact = True

    def __init__(
        self,
        num_classes: int = 100,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        arch: str = "shufflev1",
    ) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.stage_names = ("stem", "layer1", "layer2", "layer3", "pool")
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_planes = 24
        for k, (planes, n) in enumerate(zip(out_planes, num_blocks, strict=True)):
            # the stride-2 unit's branch yields planes - in_planes; the pool adds in_planes
            units = [ShuffleUnit(in_planes, planes - in_planes, 2, groups)]
            units += [ShuffleUnit(planes, planes, 1, groups) for _ in range(n - 1)]
            setattr(self, f"layer{k + 1}", nn.Sequential(*units))
            in_planes = planes
        self.linear = nn.Linear(in_planes, num_classes)

    def forward_stages(self, x: Tensor, preact: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        x = F.relu(self.bn1(self.conv1(x)))
        feats = {"stem": x}
        for name in ("layer1", "layer2", "layer3"):
            layer: nn.Sequential = getattr(self, name)
            for unit in layer[:-1]:
                x = unit(x)
            x, pre = layer[-1].forward_pre(x)
            feats[name] = pre if preact else x
        # global mean = the published avg_pool2d(·, 4) on the 4×4 map of a 32×32 input
        pooled = x.mean(dim=(2, 3))
        feats["pool"] = pooled
        return self.linear(pooled), feats

    def head_map(self, last: Tensor) -> Tensor:
        return last

    def classify(self, pooled: Tensor) -> Tensor:
        return self.linear(pooled)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(x.mean(dim=(2, 3)))


def shufflev1(num_classes: int = 100, image_size: int = 32) -> ShuffleNetV1:
    """ShuffleNetV1 g=3 (published ``ShuffleV1``; 949,258 parameters for 100 classes)."""
    return at_size(ShuffleNetV1(num_classes, arch="shufflev1"), image_size)
