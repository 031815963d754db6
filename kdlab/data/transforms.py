"""Per-sample torchvision transforms for the DataLoader pipeline (``data.pipeline=dataloader``).

Images stay uint8 tensors until the last step, so the CPU workers do the cheap integer crop and
flip and convert once. The device pipeline (``kdlab.data.device``) reproduces the same
augmentation distribution in batched on-device ops.

The strong view (``data.strong_view=true``) is torchvision's ``RandAugment`` (two operations
at magnitude 10 of 31) after its own crop and flip, then ``RandomErasing`` of one grey square as
Cutout. The device pipeline's strong view (``kdlab.data.strong``) follows the MLKD code's
variant instead (a uniformly drawn magnitude per operation, a Cutout of random size); the two
pipelines agree in kind, not in distribution.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

UNITCUBE = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # maps [0, 1] to [-1, 1]


def build_transform(
    mean, std, augment: bool, padding: int = 4, flip: bool = True, size: int = 32
) -> v2.Compose:
    """uint8 CHW tensor → normalised float32; when ``augment``, RandomCrop(size, padding) (if
    ``padding``) and a horizontal flip (if ``flip``)."""
    ops: list = []
    if augment and padding:
        ops.append(v2.RandomCrop(size, padding=padding))
    if augment and flip:
        ops.append(v2.RandomHorizontalFlip())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


def build_strong_transform(
    mean, std, padding: int = 4, flip: bool = True, size: int = 32
) -> v2.Compose:
    """uint8 CHW tensor → normalised float32 strong view: crop + flip, RandAugment, Cutout."""
    ops: list = [v2.RandomCrop(size, padding=padding)] if padding else []
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    ops += [
        v2.RandAugment(num_ops=2, magnitude=10),
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomErasing(p=1.0, scale=(0.0, 0.0625), ratio=(1.0, 1.0), value=127 / 255),
        v2.Normalize(mean, std),
    ]
    return v2.Compose(ops)
