"""Write small datasets in a reader's on-disk layout (CIFAR pickles, SVHN .mat, STL-10 binaries,
class folders of PNGs).

Tests and the benchmark cannot download datasets (no network on CI), so they write their own
files in exactly the format the readers read, through the reader's own ``write``. Images are
class-dependent colour blobs plus noise, so a model can learn them in a few steps and tests can
check "better than chance".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdlab.data.readers import Reader, builtin


def fake_images(labels: np.ndarray, num_classes: int, rng: np.random.Generator, size: int = 32):
    """uint8 N×size×size×3: noise around a per-class colour and a per-class bright square."""
    n = len(labels)
    palette = np.random.default_rng(1234).integers(40, 215, size=(num_classes, 3))
    img = rng.normal(0, 40, size=(n, size, size, 3)) + palette[labels][:, None, None, :]
    box, span = size // 4, size - size // 4
    pos = (labels * 7) % span
    for i in range(n):
        img[i, pos[i] : pos[i] + box, (pos[i] * 3) % span : (pos[i] * 3) % span + box, :] += 60
    return np.clip(img, 0, 255).astype(np.uint8)


def write_fake(
    root: str | Path,
    reader: Reader | str = "cifar10",
    n_train: int = 500,
    n_test: int = 100,
    seed: int = 0,
    num_classes: int | None = None,
) -> Path:
    """``n_train`` training and ``n_test`` test images in ``reader``'s layout under ``root``
    (a dataset name kdlab ships, or any reader). Returns what the reader's ``write`` returns
    for the training split."""
    if isinstance(reader, str):
        reader = builtin(reader)
    ncls = reader.num_classes or num_classes
    if ncls is None:
        raise ValueError(f"{reader!r} takes its classes from the files: pass num_classes")
    rng = np.random.default_rng(seed)
    y_train = np.arange(n_train) % ncls
    rng.shuffle(y_train)
    y_test = np.arange(n_test) % ncls
    rng.shuffle(y_test)
    x_train = fake_images(y_train, ncls, rng, reader.image_size)
    x_test = fake_images(y_test, ncls, rng, reader.image_size)
    out = reader.write(root, "train", x_train, y_train)
    reader.write(root, "test", x_test, y_test)
    return out


def write_fake_cifar(
    root: str | Path, dataset: str = "cifar10", n_train: int = 500, n_test: int = 100, seed: int = 0
) -> Path:
    """``root/<base_folder>`` with a small synthetic CIFAR-10 or CIFAR-100 (the dataset folder)."""
    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"dataset must be one of ['cifar10', 'cifar100'], got {dataset!r}")
    return write_fake(root, dataset, n_train, n_test, seed)
