"""The CRD benchmark's CIFAR ShuffleNetV2 (``ShuffleV2``: 1× size, widths 116/232/464, 1024).

ShuffleNetV2 (Ma et al. 2018) adapted to 32×32 inputs: a 1×1 stem conv to 24 channels with BN and
ReLU, three stages each made of one stride-2 down-sampling unit (two branches, concatenated and
shuffled) followed by 3/7/3 basic units (channel split: one half passes, the other goes through
1×1 → depthwise 3×3 → 1×1; concatenate, shuffle), then a 1×1 conv to 1024 channels with BN and
ReLU, global pooling and a ``linear`` classifier.

Parameter names follow the published benchmark code (RepDistiller ``models/ShuffleNetv2.py``)
so that its checkpoints load with ``strict=True``: ``conv1``/``bn1`` (stem), ``layerK.0.conv1``
… ``conv5``/``bn1`` … ``bn5`` (down-sampling unit), ``layerK.i.conv1|bn1|conv2|bn2|conv3|bn3``
(basic units, ``i ≥ 1``), ``conv2``/``bn2`` (final 1×1) and ``linear``.

Stage names and the published feature list (``is_feat=True``)::

    index  published   kdlab stage   shape
    0      f0          stem          (24, 32, 32)   relu(bn1(conv1(x)))
    1      f1          layer1        (116, 16, 16)
    2      f2          layer2        (232, 8, 8)
    3      f3          layer3        (464, 4, 4)
    4      f4          pool          (1024,)        pooled relu(bn2(conv2(·))) fed to ``linear``

With ``preact=True`` the ``layerK`` entries are, as published, the last unit's concatenation
``[passed half, branch before its ReLU]`` *before* the channel shuffle, so the relationship is
``post == channel_shuffle(relu(pre), 2)`` (the passed half is already non-negative).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.base import StagedModel, at_size, batch_norm_again
from kdlab.models.zoo.shufflenetv1 import channel_shuffle

__all__ = ["ShuffleNetV2", "shufflev2"]


class SplitUnit(nn.Module):
    """Basic unit: split channels in halves, transform the second, concatenate and shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(output, pre-activation)``; the latter is unshuffled (see the module doc)."""
        c = x.shape[1] // 2
        passed, branch = x[:, :c], x[:, c:]
        branch = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(branch)))))
        branch_pre = self.bn3(self.conv3(branch))
        out = channel_shuffle(torch.cat([passed, F.relu(branch_pre)], 1), 2)
        return out, torch.cat([passed, branch_pre], 1)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1] // 2
        passed, branch = x[:, :c], x[:, c:]
        branch = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(branch)))))
        branch = F.relu(self.bn3(self.conv3(branch)))
        return channel_shuffle(torch.cat([passed, branch], 1), 2)


class DownUnit(nn.Module):
    """Stride-2 unit: depthwise → 1×1 on the left, 1×1 → depthwise → 1×1 on the right; concat."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = out_ch // 2
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, 2, 1, groups=in_ch, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv2 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(StagedModel):
    """CIFAR ShuffleNetV2 with the published benchmark's module names (see module doc)."""

    head_name = "linear"

    has_preact = True

    def __init__(
        self,
        num_classes: int = 100,
        out_channels: tuple[int, int, int, int] = (116, 232, 464, 1024),
        num_blocks: tuple[int, int, int] = (3, 7, 3),
        arch: str = "shufflev2",
    ) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.stage_names = ("stem", "layer1", "layer2", "layer3", "pool")
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_ch = 24
        for k, (ch, n) in enumerate(zip(out_channels[:3], num_blocks, strict=True)):
            units = [DownUnit(in_ch, ch), *(SplitUnit(ch) for _ in range(n))]
            setattr(self, f"layer{k + 1}", nn.Sequential(*units))
            in_ch = ch
        self.conv2 = nn.Conv2d(in_ch, out_channels[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)

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
        pooled = F.relu(self.bn2(self.conv2(x))).mean(dim=(2, 3))
        feats["pool"] = pooled
        return self.linear(pooled), feats

    def head_map(self, last: Tensor) -> Tensor:
        return F.relu(batch_norm_again(self.bn2, self.conv2(last)))

    def classify(self, pooled: Tensor) -> Tensor:
        return self.linear(pooled)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(F.relu(self.bn2(self.conv2(x))).mean(dim=(2, 3)))


def shufflev2(num_classes: int = 100, image_size: int = 32) -> ShuffleNetV2:
    """ShuffleNetV2 1× (published ``ShuffleV2``; 1,355,528 parameters for 100 classes)."""
    return at_size(ShuffleNetV2(num_classes, arch="shufflev2"), image_size)
