"""Test images and a network's predictions for the analysis commands (no training involved).

The temperature figure and the teacher-agreement table run exported networks on the official
test split, normalised exactly as in training (the data module's statistics and its
``normalize``) and at the network's own input size (the models' ``InputResize``: a teacher
trained on upsampled 224×224 inputs sees upsampled inputs here too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdlab.data.augment import normalize
from kdlab.data.layout import LAYOUTS, load_split
from kdlab.data.transforms import mean_std
from kdlab.models.timm_adapter import InputResize

DATASET_BY_CLASSES = {layout.num_classes: name for name, layout in LAYOUTS.items()}


def infer_dataset(meta: dict[str, Any], net: nn.Module, path: str | Path) -> str:
    """The export's recorded dataset, else the CIFAR with the net's number of classes."""
    ds = meta.get("dataset") or DATASET_BY_CLASSES.get(getattr(net, "num_classes", None))
    if ds not in LAYOUTS:
        raise ValueError(
            f"cannot tell which CIFAR {path} was trained on (dataset={meta.get('dataset')!r}, "
            f"num_classes={getattr(net, 'num_classes', None)}); pass --dataset cifar10|cifar100"
        )
    return ds


def normalize_images(images: np.ndarray, dataset: str, how: str = "dataset") -> Tensor:
    """uint8 N×32×32×3 → float32 N×3×32×32 normalised as the data module does (``how``:
    ``dataset`` statistics or ``unitcube``)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return normalize(x, *mean_std(dataset, how))


def load_test(
    root: str | Path, dataset: str, limit: int | None = None, normalize: str = "dataset",
    verify: str = "md5",
) -> tuple[np.ndarray, Tensor, Tensor]:  # fmt: skip
    """``(raw uint8 images, normalised inputs, labels)`` of the first ``limit`` test images."""
    images, labels = load_split(root, dataset, train=False, verify=verify)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, normalize_images(images, dataset, normalize), torch.from_numpy(labels)


@torch.no_grad()
def predict(net: nn.Module, x: Tensor, batch_size: int = 250) -> Tensor:
    """Logits of ``net`` (eval mode) on ``x``, resized to the net's ``input_size`` if needed."""
    net.eval()
    resize = InputResize(getattr(net, "input_size", 32))
    device = next(net.parameters()).device
    out = [net(resize(x[i : i + batch_size].to(device))).float().cpu()
           for i in range(0, len(x), batch_size)]  # fmt: skip
    return torch.cat(out)
