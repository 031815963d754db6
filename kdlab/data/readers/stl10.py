"""STL-10's labelled split in torchvision's layout (``stl10_binary/``): 5,000 training and
8,000 test images of 96×96, stored as uint8 ``N×3×96×96`` in column-major order, labels 1–10
(mapped to 0–9). The 100,000 unlabelled images are not read."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kdlab.data.readers.base import DataError, Reader, check_arrays, check_full_copy, check_split

log = logging.getLogger(__name__)

FOLDER = "stl10_binary"
CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
_FULL = {"train": 5_000, "test": 8_000}


class STL10Reader(Reader):
    name = "stl10"
    image_size = 96
    # stats stay None: the data module measures them on the training images it reads

    @property
    def num_classes(self) -> int:
        return 10

    def classes(self, root: str | Path = "") -> tuple[str, ...]:
        return CLASSES

    def _files(self, root: str | Path, split: str) -> tuple[Path, Path]:
        folder = Path(root) / FOLDER
        return folder / f"{split}_X.bin", folder / f"{split}_y.bin"

    def missing(self, root: str | Path) -> list[Path]:
        return [p for s in ("train", "test") for p in self._files(root, s) if not p.is_file()]

    def location(self, root: str | Path) -> str:
        return f"'{FOLDER}/' with train_X.bin, train_y.bin, test_X.bin, test_y.bin"

    def read(
        self, root: str | Path, split: str, verify: str = "md5"
    ) -> tuple[np.ndarray, np.ndarray]:
        from torchvision.datasets import STL10

        check_split(split)
        xf, yf = self._files(root, split)
        raw = np.fromfile(xf, dtype=np.uint8)
        side = self.image_size
        if raw.size % (3 * side * side):
            raise DataError(f"STL-10 file {xf}: {raw.size} bytes is not a whole number of images")
        # column-major on disk: N×C×W×H → N×H×W×C
        images = np.ascontiguousarray(raw.reshape(-1, 3, side, side).transpose(0, 3, 2, 1))
        labels = np.fromfile(yf, dtype=np.uint8).astype(np.int64) - 1
        check_arrays(images, labels, 10, str(xf))
        md5s = dict(STL10.train_list[:2] if split == "train" else STL10.test_list)
        files = {xf: md5s[xf.name], yf: md5s[yf.name]}
        check_full_copy(self.name, split, len(labels), _FULL[split], files, verify, log)
        return images, labels

    def download(self, root: str | Path) -> None:
        from torchvision.datasets import STL10

        STL10(str(root), split="train", download=True)  # one archive holds every split

    def write(self, root: str | Path, split: str, images: np.ndarray, labels: np.ndarray) -> Path:
        check_split(split)
        xf, yf = self._files(root, split)
        xf.parent.mkdir(parents=True, exist_ok=True)
        np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tofile(xf)
        (np.asarray(labels) + 1).astype(np.uint8).tofile(yf)
        (xf.parent / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
        return xf.parent
