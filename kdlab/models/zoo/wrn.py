"""Wide ResNets of the CRD benchmark (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2).

WRN-d-k (Zagoruyko & Komodakis 2016): a plain 3×3 stem conv with 16 channels, three groups of
``(d - 4) / 6`` pre-activation blocks with widths 16k/32k/64k (strides 1, 2, 2), then BN → ReLU →
global pooling → linear. Dropout is not used (the benchmark trains with ``dropRate=0``).

Parameter names follow the published benchmark code (RepDistiller ``models/wrn.py``) so that its
released checkpoints (``wrn_40_2``) load with ``strict=True``: the groups are ``block1``–``block3``
whose blocks sit in ``.layer.<i>`` and are named ``bn1``, ``conv1``, ``bn2``, ``conv2`` plus
``convShortcut`` (1×1, only where the width changes); ``bn1``/``fc`` at the top are the final BN
and the classifier.

Stage names and the published feature list (``is_feat=True``); the stage names are ``layerK``
like every kdlab ResNet although the modules are called ``blockK``::

    index  published   kdlab stage   wrn_40_2 shape
    0      f0          stem          (16, 32, 32)   conv1 output (no BN/ReLU: pre-activation net)
    1      f1          layer1        (32, 32, 32)   output of block1
    2      f2          layer2        (64, 16, 16)   output of block2
    3      f3          layer3        (128, 8, 8)    output of block3
    4      f4          pool          (128,)         relu(bn1(·)) pooled, fed to ``fc``

Because the blocks are pre-activation, a group's output is followed by a BN *then* a ReLU. With
``preact=True`` the published code returns that BN's output for ``layerK`` (the first BN of the
next group, ``block2.layer.0.bn1`` / ``block3.layer.0.bn1``, and the final ``bn1`` for
``layer3``), i.e. the value right before the ReLU; kdlab returns the same values but computes each
BN once (the published code runs it a second time, which in training mode would also update the
running statistics twice). ``relu(pre)`` is the input of the following convolution, not the
post-activation stage (that is the raw group output).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.base import StagedModel, at_size, batch_norm_again

__all__ = ["WideResNet", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"]


class WideBlock(nn.Module):
    """Pre-activation block BN → ReLU → conv → BN → ReLU → conv, plus the shortcut.

    As in the published WRN, a width-changing block applies its 1×1 ``convShortcut`` to the
    *activated* input, an identity block adds the raw input.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.equal_in_out = in_planes == planes
        self.convShortcut: nn.Conv2d | None = None  # noqa: N815 (published parameter name)
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, planes, 1, stride, 0, bias=False)

    def forward(self, x: Tensor, normed: Tensor | None = None) -> Tensor:
        """``normed`` is ``bn1(x)`` when the caller already computed it (for preact features)."""
        act = F.relu(self.bn1(x) if normed is None else normed)
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class WideGroup(nn.Module):
    """A group of blocks kept in ``.layer`` (the published nesting ``blockK.layer.<i>``)."""

    def __init__(self, n: int, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        blocks = [WideBlock(in_planes, planes, stride)]
        blocks += [WideBlock(planes, planes, 1) for _ in range(n - 1)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: Tensor, normed: Tensor | None = None) -> Tensor:
        x = self.layer[0](x, normed)
        for block in self.layer[1:]:
            x = block(x)
        return x


class WideResNet(StagedModel):
    """WRN-``depth``-``widen`` with the published benchmark's module names (see module doc)."""

    head_name = "fc"
    activated_stages = False  # stage outputs are raw sums, before the next BN and ReLU
    # the pooled map is relu(bn1(layer3)): layer3's pre-activation output is bn1's, already
    # computed once (running the BN again would update its statistics twice)
    map_stage = "layer3"
    map_preact = True

    has_preact = True

    def __init__(self, depth: int, widen: int, num_classes: int = 100, arch: str = "wrn") -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (16, 22, 28, 40), got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.arch = arch
        self.num_classes = num_classes
        self.stage_names = ("stem", "layer1", "layer2", "layer3", "pool")
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = WideGroup(n, widths[0], widths[1], 1)
        self.block2 = WideGroup(n, widths[1], widths[2], 2)
        self.block3 = WideGroup(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: Tensor, preact: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        x = self.conv1(x)
        feats = {"stem": x}
        groups = (self.block1, self.block2, self.block3)
        # the BN that follows each group: first BN of the next group, then the final bn1
        next_bns = (self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1)
        normed = None
        for i, (group, bn) in enumerate(zip(groups, next_bns, strict=True)):
            x = group(x, normed)
            normed = bn(x)
            feats[f"layer{i + 1}"] = normed if preact else x
        pooled = F.relu(normed).mean(dim=(2, 3))
        feats["pool"] = pooled
        return self.fc(pooled), feats

    def head_map(self, last: Tensor) -> Tensor:
        return F.relu(batch_norm_again(self.bn1, last))

    def classify(self, pooled: Tensor) -> Tensor:
        return self.fc(pooled)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(F.relu(self.bn1(x)).mean(dim=(2, 3)))

    def pooled_map(self, feat: Tensor) -> Tensor:
        return F.relu(feat)

    def forward_from(self, stage: str, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The groups after ``stage`` (``stem``, ``layer1``, ``layer2`` or ``layer3``) on ``x``,
        a map shaped like that stage's raw (pre-BN) output."""
        order = ("stem", "layer1", "layer2", "layer3")
        if stage not in order:
            raise ValueError(f"forward_from: stage {stage!r} is not one of {list(order)}")
        feats: dict[str, Tensor] = {}
        for i in range(order.index(stage) + 1, 4):
            x = getattr(self, f"block{i}")(x)
            feats[f"layer{i}"] = x
        pooled = F.relu(self.bn1(x)).mean(dim=(2, 3))
        feats["pool"] = pooled
        return self.fc(pooled), feats


def wrn_16_1(num_classes: int = 100, image_size: int = 32) -> WideResNet:
    """WRN-16-1 (180,916 parameters for 100 classes)."""
    return at_size(WideResNet(16, 1, num_classes, arch="wrn_16_1"), image_size)


def wrn_16_2(num_classes: int = 100, image_size: int = 32) -> WideResNet:
    """WRN-16-2 (703,284 parameters), a benchmark student."""
    return at_size(WideResNet(16, 2, num_classes, arch="wrn_16_2"), image_size)


def wrn_40_1(num_classes: int = 100, image_size: int = 32) -> WideResNet:
    """WRN-40-1 (569,780 parameters), a benchmark student."""
    return at_size(WideResNet(40, 1, num_classes, arch="wrn_40_1"), image_size)


def wrn_40_2(num_classes: int = 100, image_size: int = 32) -> WideResNet:
    """WRN-40-2 (2,255,156 parameters), a benchmark teacher."""
    return at_size(WideResNet(40, 2, num_classes, arch="wrn_40_2"), image_size)
