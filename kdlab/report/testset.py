"""Test images and teacher predictions for the report's figures (no training code involved).

The temperature figure and the teacher-agreement table both run exported teachers on the
official test split, normalised exactly as in training, and at the teacher's own input size
(a teacher trained on upsampled 224×224 inputs sees upsampled inputs here too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.data.layout import load_split

try:  # the data module's constants, so the report normalises exactly as training does
    from kdlab.data.transforms import NORMALIZATION
except ImportError:  # pragma: no cover - only before kdlab.data.transforms exists
    NORMALIZATION = {
        "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    }
UNITCUBE = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
DATASET_BY_CLASSES = {10: "cifar10", 100: "cifar100"}


def infer_dataset(meta: dict[str, Any], net: nn.Module, path: str | Path) -> str:
    """The export's recorded dataset, else the CIFAR with the net's number of classes."""
    ds = meta.get("dataset") or DATASET_BY_CLASSES.get(getattr(net, "num_classes", None))
    if ds not in NORMALIZATION:
        raise ValueError(
            f"cannot tell which CIFAR {path} was trained on (dataset={meta.get('dataset')!r}, "
            f"num_classes={getattr(net, 'num_classes', None)}); pass --dataset cifar10|cifar100"
        )
    return ds


def normalize_images(images: np.ndarray, dataset: str, normalize: str = "dataset") -> Tensor:
    """uint8 N×32×32×3 → float32 N×3×32×32 normalised with the dataset (or unit-cube) stats."""
    mean, std = NORMALIZATION[dataset] if normalize == "dataset" else UNITCUBE
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def load_test(
    root: str | Path, dataset: str, limit: int | None = None, normalize: str = "dataset"
) -> tuple[np.ndarray, Tensor, Tensor]:
    """``(raw uint8 images, normalised inputs, labels)`` of the first ``limit`` test images."""
    images, labels = load_split(root, dataset, train=False)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, normalize_images(images, dataset, normalize), torch.from_numpy(labels)


@torch.no_grad()
def predict(net: nn.Module, x: Tensor, batch_size: int = 250) -> Tensor:
    """Logits of ``net`` (eval mode) on ``x``, resized to the net's ``input_size`` if needed."""
    net.eval()
    size = getattr(net, "input_size", 32)
    device = next(net.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device)
        if xb.shape[-1] != size:
            xb = F.interpolate(xb, size=(size, size), mode="bilinear", align_corners=False)
        out.append(net(xb).float().cpu())
    return torch.cat(out)
