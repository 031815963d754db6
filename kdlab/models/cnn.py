"""The introductory notebook's small CNN: two conv blocks and two linear layers.

The notebook's students, exactly: conv 3×3 (padding 1) → ReLU → 2×2 max-pool, twice, then
fc → ReLU → fc, no dropout. On CIFAR-10 the widths are 16 and 32 channels with 256 hidden units;
on CIFAR-100 32 and 64 channels with 512 hidden units. ``small_cnn`` picks the variant from the
number of classes; every width, the hidden size and dropout can be set in the config.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.base import StagedModel

# number of classes → (conv widths, hidden units) of the notebook's student for that dataset
NOTEBOOK = {10: ((16, 32), 256), 100: ((32, 64), 512)}


class SmallCNN(StagedModel):
    """conv(3→c1)→ReLU→pool, conv(c1→c2)→ReLU→pool, flatten, fc(hidden)→ReLU→dropout, fc.

    Stages: ``layer1`` is the first conv block before its pool, ``layer2`` the second (the
    first pool opens it), so feature losses see full- and half-size maps (32×32 and 16×16 on
    CIFAR).
    """

    def __init__(
        self,
        num_classes: int = 10,
        channels: Sequence[int] = (16, 32),
        hidden: int = 256,
        dropout: float = 0.0,
        arch: str = "cnn",
        image_size: int = 32,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(
                f"the small CNN pools twice by 2: image_size must be a multiple of 4, got {image_size}"
            )
        if len(channels) != 2 or min(channels) < 1 or hidden < 1 or not 0 <= dropout < 1:
            raise ValueError(
                f"the small CNN needs 2 positive conv widths, hidden >= 1 and dropout in [0, 1); "
                f"got channels={list(channels)}, hidden={hidden}, dropout={dropout}"
            )
        self.arch = arch  # another name for other widths keeps them apart in the teacher store
        self.num_classes = num_classes
        self.stage_names = ("layer1", "layer2")
        self.layer1 = nn.Sequential(nn.Conv2d(3, channels[0], 3, padding=1), nn.ReLU(inplace=True))
        self.layer2 = nn.Sequential(
            nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.input_size = image_size
        self.fc1 = nn.Linear(channels[1] * (image_size // 4) ** 2, hidden)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward_stages(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        h = F.max_pool2d(f2, 2).flatten(1)
        logits = self.fc2(self.dropout(F.relu(self.fc1(h))))
        return logits, {"layer1": f1, "layer2": f2}


def small_cnn(
    num_classes: int = 10,
    channels: Sequence[int] | None = None,
    hidden: int | None = None,
    dropout: float = 0.0,
    arch: str = "cnn",
    image_size: int = 32,
) -> SmallCNN:
    """The notebook's student for ``num_classes`` (CIFAR-10: 16/32 channels, 256 hidden;
    CIFAR-100: 32/64, 512); other class counts use the CIFAR-10 widths."""
    widths, units = NOTEBOOK.get(num_classes, NOTEBOOK[10])
    return SmallCNN(
        num_classes, tuple(channels or widths), hidden or units, dropout, arch, image_size
    )
