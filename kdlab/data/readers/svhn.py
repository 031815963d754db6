"""SVHN (Street View House Numbers, cropped digits) in torchvision's layout: ``train_32x32.mat``
and ``test_32x32.mat`` directly under the root, images ``32×32×3×N``, labels 1–10 with 10 for
the digit 0 (mapped to 0, as torchvision does)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kdlab.data.readers.base import DataError, Reader, check_arrays, check_full_copy, check_split

log = logging.getLogger(__name__)

_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
_FULL = {"train": 73_257, "test": 26_032}


class SVHNReader(Reader):
    """The 73,257 / 26,032 labelled digits (the ``extra`` split is not read)."""

    name = "svhn"
    image_size = 32
    # stats stay None: the data module measures them on the training images it reads

    @property
    def num_classes(self) -> int:
        return 10

    def classes(self, root: str | Path = "") -> tuple[str, ...]:
        return tuple(str(d) for d in range(10))

    def missing(self, root: str | Path) -> list[Path]:
        return [Path(root) / f for f in _FILES.values() if not (Path(root) / f).is_file()]

    def location(self, root: str | Path) -> str:
        return "'train_32x32.mat' and 'test_32x32.mat'"

    def read(
        self, root: str | Path, split: str, verify: str = "md5"
    ) -> tuple[np.ndarray, np.ndarray]:
        import scipy.io
        from torchvision.datasets import SVHN

        check_split(split)
        path = Path(root) / _FILES[split]
        try:
            mat = scipy.io.loadmat(path)
        except Exception as e:  # truncated, not a .mat, or missing
            raise DataError(f"cannot read SVHN file {path}: {type(e).__name__}: {e}") from e
        if "X" not in mat or "y" not in mat:
            raise DataError(f"SVHN file {path} has no 'X'/'y' entries (keys: {sorted(mat)})")
        x, y = mat["X"], np.asarray(mat["y"], dtype=np.int64).reshape(-1)
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            raise DataError(f"SVHN file {path}: 'X' must be 32×32×3×N, got {x.shape}")
        images = np.ascontiguousarray(x.transpose(3, 0, 1, 2).astype(np.uint8, copy=False))
        labels = np.where(y == 10, 0, y)
        check_arrays(images, labels, 10, str(path))
        md5 = SVHN.split_list[split][2]
        check_full_copy(self.name, split, len(labels), _FULL[split], {path: md5}, verify, log)
        return images, labels

    def download(self, root: str | Path) -> None:
        from torchvision.datasets import SVHN

        for split in _FILES:
            SVHN(str(root), split=split, download=True)

    def write(self, root: str | Path, split: str, images: np.ndarray, labels: np.ndarray) -> Path:
        import scipy.io

        check_split(split)
        Path(root).mkdir(parents=True, exist_ok=True)
        y = np.where(np.asarray(labels) == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        path = Path(root) / _FILES[split]
        scipy.io.savemat(path, {"X": np.ascontiguousarray(images.transpose(1, 2, 3, 0)), "y": y})
        return path
