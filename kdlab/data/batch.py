"""The one batch type every kdlab pipeline yields: named fields instead of positional tuples.

A batch always says which training-split rows it holds (``index``), so a teacher-logit cache or
a contrastive memory bank can look rows up without the data module being switched into a
special mode; the device pipeline also says which crop/flip ``view`` of each image it rendered,
which is what makes the augmentation view cache exact. Both are a few bytes per image.
With ``data.strong_view`` a training batch also carries a second, strongly augmented view of
the same images (``x_strong``) for the losses that read one (prediction augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, slots=True)
class Batch:
    """``x`` images [B, 3, H, W] float; ``y`` int64 labels [B] or float soft targets [B, C]
    (MixUp); ``index`` int64 rows of the split [B]; ``view`` int64 view ids [B] (device
    pipeline with augmentation only, else None); ``x_strong`` the strong view of the same
    images [B, 3, H, W] (training batches with ``data.strong_view=true``, else None)."""

    x: Tensor
    y: Tensor
    index: Tensor | None = None
    view: Tensor | None = None
    x_strong: Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move every field with one call each (cheaper than a generic collection walk)."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(
            move(self.x), move(self.y), move(self.index), move(self.view), move(self.x_strong)
        )

    def replace(self, **fields: Tensor | None) -> Batch:
        """A copy with some fields changed (e.g. MixUp's images and soft targets)."""
        values = {
            "x": self.x,
            "y": self.y,
            "index": self.index,
            "view": self.view,
            "x_strong": self.x_strong,
            **fields,
        }
        return Batch(**values)

    def __len__(self) -> int:
        return self.x.shape[0]


def collate(samples: list[tuple]) -> Batch:
    """DataLoader collate for ``(image, label, row)`` or ``(image, label, row, strong)``
    samples."""
    fields = list(zip(*samples, strict=True))
    xs, ys, rows = fields[:3]
    strong = torch.stack(fields[3]) if len(fields) > 3 else None
    return Batch(
        torch.stack(xs), torch.stack(ys), torch.as_tensor(rows, dtype=torch.int64), x_strong=strong
    )
