"""Test images and a network's predictions for the analysis commands (no training involved).

The temperature figure and the teacher-agreement table run exported networks on the test split
of the dataset they were trained on, read by that dataset's reader and normalised exactly as in
training (the data module's statistics and ``normalize``), at the network's own input size (the
models' ``InputResize``: a teacher trained on upsampled 224×224 inputs sees upsampled inputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from kdlab.data.augment import normalize
from kdlab.data.module import ImageDataModule
from kdlab.data.readers import BUILTIN, Reader, builtin
from kdlab.models.timm_adapter import InputResize

# Exports written before they recorded their dataset: the CIFAR with the net's class count.
CIFAR_BY_CLASSES = {10: "cifar10", 100: "cifar100"}


def export_reader(
    meta: dict[str, Any], net: nn.Module, path: str | Path, dataset: str | None = None
) -> Reader:
    """The reader of the dataset an export was trained on: ``dataset`` when given (a dataset
    kdlab ships), else the reader config the export records, else its dataset's name, else
    (the oldest exports) the CIFAR with the network's number of classes."""
    if dataset is not None:
        return builtin(dataset)
    if isinstance(meta.get("reader"), dict) and "_target_" in meta["reader"]:
        return instantiate(meta["reader"])
    name = meta.get("dataset") or CIFAR_BY_CLASSES.get(getattr(net, "num_classes", None))
    if name not in BUILTIN:
        raise ValueError(
            f"cannot tell which dataset {path} was trained on (dataset={meta.get('dataset')!r}, "
            f"num_classes={getattr(net, 'num_classes', None)}); pass --dataset "
            f"{'|'.join(BUILTIN)}"
        )
    return builtin(name)


def load_test(
    root: str | Path,
    reader: Reader,
    limit: int | None = None,
    normalize_as: str = "dataset",
    verify: str = "md5",
) -> tuple[np.ndarray, Tensor, Tensor]:
    """``(raw uint8 images, normalised inputs, labels)`` of the first ``limit`` test images.

    The data module normalises them, so a dataset whose statistics are measured (not
    published) is normalised with the numbers its training run measured."""
    dm = ImageDataModule(
        reader=reader,
        root=str(root),
        download=False,
        verify=verify,
        normalize=normalize_as,
        num_workers=0,
    )
    dm.setup("test")
    images, labels = dm.splits["test"]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return images, normalize(x, dm.mean, dm.std), torch.from_numpy(labels)


@torch.no_grad()
def predict(net: nn.Module, x: Tensor, batch_size: int = 250) -> Tensor:
    """Logits of ``net`` (eval mode) on ``x``, resized to the net's ``input_size`` if needed."""
    net.eval()
    resize = InputResize(getattr(net, "input_size", 32))
    device = next(net.parameters()).device
    out = [
        net(resize(x[i : i + batch_size].to(device))).float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out)
