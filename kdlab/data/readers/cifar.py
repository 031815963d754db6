"""CIFAR-10 and CIFAR-100 in torchvision's on-disk layout (the pickles of ``kdlab.data.layout``)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100

from kdlab.data.layout import LAYOUTS, load_split, missing_files
from kdlab.data.readers.base import DataError, Reader, check_split

log = logging.getLogger(__name__)

_TORCHVISION = {"cifar10": CIFAR10, "cifar100": CIFAR100}
# Per-channel statistics of the official training sets (RGB, pixel values scaled to [0, 1]).
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class CIFARReader(Reader):
    """``cifar10`` (``cifar-10-batches-py/``) or ``cifar100`` (``cifar-100-python/``)."""

    image_size = 32
    download_hint = (
        ". Without internet, copy torchvision's files from a machine that has them, or set "
        "data.root=PATH to a folder that already holds them (e.g. data.root=../shared/data for "
        "the CIFAR-10 subset beside this repository)"
    )

    def __init__(self, dataset: str = "cifar10") -> None:
        if dataset not in LAYOUTS:
            raise DataError(f"CIFARReader takes cifar10 or cifar100, got {dataset!r}")
        self.name = dataset
        self.layout = LAYOUTS[dataset]
        self.stats = _STATS[dataset]

    @property
    def num_classes(self) -> int:
        return self.layout.num_classes

    def classes(self, root: str | Path = "") -> tuple[str, ...]:
        return self.layout.classes

    def missing(self, root: str | Path) -> list[Path]:
        return missing_files(root, self.layout)

    def location(self, root: str | Path) -> str:
        return f"'{self.layout.base_folder}/'"

    def read(
        self, root: str | Path, split: str, verify: str = "md5"
    ) -> tuple[np.ndarray, np.ndarray]:
        check_split(split)
        return load_split(root, self.name, train=split == "train", verify=verify)

    def download(self, root: str | Path) -> None:
        tv = _TORCHVISION[self.name]
        tv(str(root), train=True, download=True)
        tv(str(root), train=False, download=True)

    def write(self, root: str | Path, split: str, images: np.ndarray, labels: np.ndarray) -> Path:
        """torchvision's pickles (protocol 2, ``data`` as N×3072 R, G, B planes) and ``meta``;
        CIFAR-10's training images are spread over its five ``data_batch_*`` files."""
        check_split(split)
        lay = self.layout
        folder = Path(root) / lay.base_folder
        folder.mkdir(parents=True, exist_ok=True)
        n = len(labels)
        flat = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(n, -1))
        labels = np.asarray(labels, dtype=np.int64)

        def dump(name: str, obj: dict) -> None:
            with open(folder / name, "wb") as f:
                pickle.dump(obj, f, protocol=2)

        files = lay.train_files if split == "train" else lay.test_files
        for fname, idx in zip(files, np.array_split(np.arange(n), len(files)), strict=True):
            batch = {"batch_label": fname, "data": flat[idx], lay.label_key: labels[idx].tolist()}
            if self.name == "cifar100":
                batch["coarse_labels"] = (labels[idx] // 5).tolist()
            dump(fname, batch)
        if self.name == "cifar10":
            dump(lay.meta_file, {lay.names_key: list(lay.classes), "num_cases_per_batch": 10000})
        else:
            coarse = [f"coarse_{i}" for i in range(20)]
            dump(lay.meta_file, {lay.names_key: list(lay.classes), "coarse_label_names": coarse})
        return folder
