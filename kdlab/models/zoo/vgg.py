"""VGG-8/11/13/16/19 with BatchNorm, the CIFAR VGGs of the CRD benchmark.

The convolutions are split into five blocks (``block0``–``block4``) of 3×3 conv → BN → ReLU
layers; a block's last ReLU is left out and applied by the network, so that the pre-activation
block output is available. 2×2 max-pools follow blocks 0–2 (and block 3 only for 64×64 inputs),
then global average pooling and a single linear ``classifier`` (no VGG fully-connected head).
The convolutions keep their bias although BN follows, as in the published code.

Parameter names follow the published benchmark code (RepDistiller ``models/vgg.py``, factories
``vgg8_bn`` … ``vgg19_bn``) so its checkpoints (``vgg13``) load with ``strict=True``: inside a
block the layers are numbered ``blockK.<i>`` with conv, BN and ReLU each taking an index
(conv ``0``, BN ``1``, ReLU ``2``, conv ``3``, …) and the classifier is ``classifier``.

Stage names and the published feature list (``is_feat=True``)::

    index  published   kdlab stage   vgg13 shape
    0      f0          stem          (64, 32, 32)   relu(block0(x))
    1      f1          block1        (128, 16, 16)
    2      f2          block2        (256, 8, 8)
    3      f3          block3        (512, 4, 4)
    4      f4          block4        (512, 4, 4)
    5      f5          pool          (512,)         pooled vector fed to ``classifier``

The first block is called ``stem`` like every kdlab model's first conv block. With
``preact=True`` ``block1``–``block4`` are the block outputs before the ReLU (``relu(pre) ==
post``); ``stem`` and ``pool`` are unchanged (the published code has no pre-activation ``f0``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.base import StagedModel, at_size

__all__ = ["VGG", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19"]

# conv widths of the five blocks per depth
CONFIGS: dict[int, tuple[tuple[int, ...], ...]] = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _conv_block(in_ch: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_ch, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_ch = w
    return nn.Sequential(*layers[:-1])  # the block's last ReLU is applied by the network


class VGG(StagedModel):
    """CIFAR VGG with BatchNorm, depth 8/11/13/16/19 (see the module doc for the names)."""

    head_name = "classifier"
    map_stage = "block4"

    has_preact = True

    def __init__(self, depth: int, num_classes: int = 100, arch: str = "vgg") -> None:
        super().__init__()
        if depth not in CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth}")
        cfg = CONFIGS[depth]
        self.arch = arch
        self.num_classes = num_classes
        self.stage_names = ("stem", "block1", "block2", "block3", "block4", "pool")
        in_ch = 3
        for i, widths in enumerate(cfg):
            setattr(self, f"block{i}", _conv_block(in_ch, widths))
            in_ch = widths[-1]
        self.classifier = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: Tensor, preact: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        # the published net skips the pool after block3 unless the input is 64×64
        pool_after_block3 = x.shape[2] == 64
        x = F.relu(self.block0(x))
        feats = {"stem": x}
        blocks = (self.block1, self.block2, self.block3, self.block4)
        for i, block in enumerate(blocks, start=1):
            if i < 4 or pool_after_block3:
                x = F.max_pool2d(x, 2, 2)
            pre = block(x)
            x = F.relu(pre)
            feats[f"block{i}"] = pre if preact else x
        pooled = x.mean(dim=(2, 3))
        feats["pool"] = pooled
        return self.classifier(pooled), feats

    def head_map(self, last: Tensor) -> Tensor:
        return last

    def classify(self, pooled: Tensor) -> Tensor:
        return self.classifier(pooled)

    def forward(self, x: Tensor) -> Tensor:
        pool_after_block3 = x.shape[2] == 64
        x = F.relu(self.block0(x))
        x = F.relu(self.block1(F.max_pool2d(x, 2, 2)))
        x = F.relu(self.block2(F.max_pool2d(x, 2, 2)))
        x = F.relu(self.block3(F.max_pool2d(x, 2, 2)))
        if pool_after_block3:
            x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.block4(x))
        return self.classifier(x.mean(dim=(2, 3)))

    def forward_from(self, stage: str, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The blocks after ``stage`` (``stem``, ``block1`` … ``block3``) on ``x``, a map shaped
        like that stage's (post-activation) output."""
        order = ("stem", "block1", "block2", "block3")
        if stage not in order:
            raise ValueError(f"forward_from: stage {stage!r} is not one of {list(order)}")
        k = order.index(stage)
        pool_after_block3 = x.shape[2] * 2**k == 64  # the input side, as in forward_stages
        feats: dict[str, Tensor] = {}
        for i in range(k + 1, 5):
            if i < 4 or pool_after_block3:
                x = F.max_pool2d(x, 2, 2)
            x = F.relu(getattr(self, f"block{i}")(x))
            feats[f"block{i}"] = x
        pooled = x.mean(dim=(2, 3))
        feats["pool"] = pooled
        return self.classifier(pooled), feats


def vgg8(num_classes: int = 100, image_size: int = 32) -> VGG:
    """VGG-8 with BN (published ``vgg8_bn``; 3,965,028 parameters for 100 classes)."""
    return at_size(VGG(8, num_classes, arch="vgg8"), image_size)


def vgg11(num_classes: int = 100, image_size: int = 32) -> VGG:
    """VGG-11 with BN (published ``vgg11_bn``; 9,277,284 parameters)."""
    return at_size(VGG(11, num_classes, arch="vgg11"), image_size)


def vgg13(num_classes: int = 100, image_size: int = 32) -> VGG:
    """VGG-13 with BN (published ``vgg13_bn``; 9,462,180 parameters), a benchmark teacher."""
    return at_size(VGG(13, num_classes, arch="vgg13"), image_size)


def vgg16(num_classes: int = 100, image_size: int = 32) -> VGG:
    """VGG-16 with BN (published ``vgg16_bn``; 14,774,436 parameters)."""
    return at_size(VGG(16, num_classes, arch="vgg16"), image_size)


def vgg19(num_classes: int = 100, image_size: int = 32) -> VGG:
    """VGG-19 with BN (published ``vgg19_bn``; 20,086,692 parameters)."""
    return at_size(VGG(19, num_classes, arch="vgg19"), image_size)
