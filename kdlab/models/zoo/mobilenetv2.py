"""The CRD benchmark's half-width MobileNetV2 for CIFAR (``mobile_half``: expansion 6, width 0.5).

MobileNetV2 (Sandler et al. 2018) as used for CIFAR by the Route-Constrained-Optimization and CRD
code: a stride-2 3×3 stem (so a 32×32 input runs at 16×16 from the start), seven groups of
inverted-residual blocks (pointwise expand → ReLU → depthwise 3×3 → ReLU → linear pointwise
project, identity shortcut when the shape allows), a 1×1 conv to 1280 channels, global pooling
and one linear layer.

Parameter names follow the published benchmark code (RepDistiller ``models/mobilenetv2.py``) so
that its checkpoints load with ``strict=True``: ``conv1.0|1`` (stem conv, BN), ``blocks.<g>.<i>
.conv.<j>`` where ``j`` indexes the 8-entry sequence conv, BN, ReLU, conv, BN, ReLU, conv, BN,
``conv2.0|1`` (1×1 conv, BN) and ``classifier.0`` (the linear layer, inside a one-entry
Sequential).

Stage names and the published feature list (``is_feat=True``)::

    index  published   kdlab stage   shape (mobile_half)
    0      f0          stem          (16, 16, 16)   conv1 output (after its ReLU)
    1      f1          block1        (12, 16, 16)   output of ``blocks[1]``
    2      f2          block2        (16, 8, 8)     output of ``blocks[2]``
    3      f3          block4        (48, 4, 4)     output of ``blocks[4]``
    4      f4          block6        (160, 2, 2)    output of ``blocks[6]``
    5      f5          pool          (1280,)        pooled ``conv2`` output fed to ``classifier``

The block outputs are linear bottlenecks: no ReLU follows them, so they already are
pre-activation values and ``preact=True`` returns the same tensors (the published code ignores
``preact`` for this model as well).
"""

from __future__ import annotations

from torch import Tensor, nn

from kdlab.models.base import StagedModel, at_size, batch_norm_again

__all__ = ["MobileNetV2", "mobilenetv2"]

# (expansion t (None = the model's), output channels c, repeats n, first stride s)
SETTINGS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
FEATURE_BLOCKS = (1, 2, 4, 6)  # the groups whose outputs are the published f1–f4


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1×1) → depthwise 3×3 → project (1×1, no ReLU); identity added when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.use_residual = stride == 1 and in_ch == out_ch
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(StagedModel):
    """CIFAR MobileNetV2 with expansion ``expansion`` and width multiplier ``width``."""

    head_name = "classifier.0"

    has_preact = True

    def __init__(
        self,
        num_classes: int = 100,
        expansion: int = 6,
        width: float = 0.5,
        arch: str = "mobilenetv2",
    ) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.stage_names = ("stem", *(f"block{i}" for i in FEATURE_BLOCKS), "pool")
        in_ch = int(32 * width)
        self.conv1 = _conv_bn_relu(3, in_ch, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in SETTINGS:
            out_ch = int(c * width)
            group = []
            for i in range(n):
                group.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t or expansion))
                in_ch = out_ch
            self.blocks.append(nn.Sequential(*group))
        last = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_ch, last, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: Tensor, preact: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        # ``preact`` changes nothing: the block outputs are linear (see the module doc)
        x = self.conv1(x)
        feats = {"stem": x}
        for i, group in enumerate(self.blocks):
            x = group(x)
            if i in FEATURE_BLOCKS:
                feats[f"block{i}"] = x
        # global mean = the published AvgPool2d(2, ceil_mode=True) on the final 2×2 map
        pooled = self.conv2(x).mean(dim=(2, 3))
        feats["pool"] = pooled
        return self.classifier(pooled), feats

    def head_map(self, last: Tensor) -> Tensor:
        return self.conv2[2](batch_norm_again(self.conv2[1], self.conv2[0](last)))

    def classify(self, pooled: Tensor) -> Tensor:
        return self.classifier(pooled)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        return self.classifier(self.conv2(x).mean(dim=(2, 3)))


def mobilenetv2(num_classes: int = 100, image_size: int = 32) -> MobileNetV2:
    """Half-width MobileNetV2 (published ``mobile_half``; 812,836 parameters for 100 classes)."""
    return at_size(MobileNetV2(num_classes, expansion=6, width=0.5, arch="mobilenetv2"), image_size)
