"""Write small CIFAR-10/100 datasets in torchvision's on-disk layout.

Tests and the benchmark cannot download CIFAR (no network on CI), so they write their own files
in exactly the format torchvision and ``kdlab.data`` read: Python pickles with ``data`` as
N×3072 uint8 (R, G, B planes), the label list and a ``meta`` file with the class names.
Images are class-dependent colour blobs plus noise, so a model can learn them in a few steps
and tests can check "better than chance".
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from kdlab.data.layout import CIFAR10_CLASSES, CIFAR100_CLASSES, LAYOUTS


def _images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Noise around a per-class colour and a per-class bright square: learnable but not trivial."""
    n = len(labels)
    palette = np.random.default_rng(1234).integers(40, 215, size=(num_classes, 3))
    img = rng.normal(0, 40, size=(n, 32, 32, 3)) + palette[labels][:, None, None, :]
    pos = (labels * 7) % 24
    for i in range(n):
        img[i, pos[i] : pos[i] + 8, (pos[i] * 3) % 24 : (pos[i] * 3) % 24 + 8, :] += 60
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img.transpose(0, 3, 1, 2).reshape(n, 3072)  # CIFAR's R, G, B planes, row-major


def write_fake_cifar(
    root: str | Path,
    dataset: str = "cifar10",
    n_train: int = 500,
    n_test: int = 100,
    seed: int = 0,
) -> Path:
    """Create ``root/<base_folder>`` with ``n_train`` training and ``n_test`` test images.

    Returns the dataset folder. CIFAR-10 training images are spread over the five official
    ``data_batch_1…5`` files; CIFAR-100 has single ``train``/``test`` files.
    """
    if dataset not in LAYOUTS:
        raise ValueError(f"dataset must be one of {sorted(LAYOUTS)}, got {dataset!r}")
    layout = LAYOUTS[dataset]
    rng = np.random.default_rng(seed)
    folder = Path(root) / layout.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    ncls = layout.num_classes
    y_train = np.arange(n_train) % ncls
    rng.shuffle(y_train)
    y_test = np.arange(n_test) % ncls
    rng.shuffle(y_test)
    x_train, x_test = _images(y_train, ncls, rng), _images(y_test, ncls, rng)

    def dump(name: str, obj: dict) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    if dataset == "cifar10":
        chunks = np.array_split(np.arange(n_train), len(layout.train_files))
        for fname, idx in zip(layout.train_files, chunks, strict=True):
            dump(
                fname, {"batch_label": fname, "labels": y_train[idx].tolist(), "data": x_train[idx]}
            )
        dump(
            layout.test_files[0], {"batch_label": "test", "labels": y_test.tolist(), "data": x_test}
        )
        dump(layout.meta_file, {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": 10000})
    else:
        for fname, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            dump(fname, {"data": x, "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()})
        coarse = [f"coarse_{i}" for i in range(20)]
        dump(
            layout.meta_file,
            {"fine_label_names": list(CIFAR100_CLASSES), "coarse_label_names": coarse},
        )
    return folder
