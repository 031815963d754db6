"""The introductory notebook's small CNN (SPEC §1.2): two conv blocks and two linear layers."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.base import StagedModel


class SmallCNN(StagedModel):
    """conv(3→c1)→ReLU→pool, conv(c1→c2)→ReLU→pool, flatten, fc(hidden)→ReLU→dropout, fc."""

    def __init__(
        self,
        num_classes: int = 10,
        channels: tuple[int, int] | list[int] = (32, 64),
        hidden: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.arch = "cnn"
        self.num_classes = num_classes
        self.stage_names = ("layer1", "layer2")
        self.layer1 = nn.Sequential(nn.Conv2d(3, channels[0], 3, padding=1), nn.ReLU(inplace=True))
        self.layer2 = nn.Sequential(
            nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.fc1 = nn.Linear(channels[1] * 8 * 8, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward_stages(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        h = F.max_pool2d(f2, 2).flatten(1)
        logits = self.fc2(self.dropout(F.relu(self.fc1(h))))
        return logits, {"layer1": f1, "layer2": f2}


def small_cnn(num_classes: int = 10, hidden: int = 256) -> SmallCNN:
    """The notebook's student: 2 conv layers (32, 64 channels) + 2 linear layers."""
    return SmallCNN(num_classes=num_classes, hidden=hidden)
