"""Any image dataset laid out as class folders: ``root/train/<class>/*`` and
``root/test/<class>/*`` (Tiny-ImageNet rearranged, a custom set). Classes are the sorted
folder names of ``train/`` (torchvision's ``ImageFolder`` convention); every image is read as
RGB and resized to ``image_size`` × ``image_size``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kdlab.data.readers.base import DataError, Reader, check_arrays, check_split

log = logging.getLogger(__name__)


class ImageFolderReader(Reader):
    """``name`` labels the dataset in records and reports (default: ``image_folder``)."""

    def __init__(self, image_size: int = 64, name: str = "image_folder") -> None:
        if not isinstance(image_size, int) or image_size < 8:
            raise DataError(f"data.image_size must be an integer ≥ 8, got {image_size!r}")
        self.image_size, self.name = image_size, name

    def classes(self, root: str | Path) -> tuple[str, ...]:
        folder = Path(root) / "train"
        if not folder.is_dir():
            raise DataError(f"{self.name}: no folder {folder} (expected train/<class>/*)")
        return tuple(sorted(d.name for d in folder.iterdir() if d.is_dir()))

    def missing(self, root: str | Path) -> list[Path]:
        return [Path(root) / s for s in ("train", "test") if not (Path(root) / s).is_dir()]

    def location(self, root: str | Path) -> str:
        return "'train/<class>/*' and 'test/<class>/*' image folders"

    def read(
        self, root: str | Path, split: str, verify: str = "md5"
    ) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image
        from torchvision.datasets import ImageFolder

        check_split(split)
        classes = self.classes(root)
        folder = Path(root) / split
        try:
            found = ImageFolder(str(folder))
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"{self.name} {split}: {e}") from e
        extra = sorted(set(found.classes) - set(classes))
        if extra:
            raise DataError(
                f"{self.name}: {folder} has class folders {extra[:5]} that train/ does not have"
            )
        index = {c: i for i, c in enumerate(classes)}
        side = self.image_size
        images = np.empty((len(found.samples), side, side, 3), dtype=np.uint8)
        labels = np.empty(len(found.samples), dtype=np.int64)
        for i, (path, label) in enumerate(found.samples):
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (side, side):
                    im = im.resize((side, side), Image.BILINEAR)
                images[i] = np.asarray(im)
            labels[i] = index[found.classes[label]]
        check_arrays(images, labels, len(classes), str(folder))
        log.info(
            "%s %s: %d images in %d classes from %s (%d×%d)",
            self.name,
            split,
            len(labels),
            len(found.classes),
            folder,
            side,
            side,
        )
        return images, labels

    def write(self, root: str | Path, split: str, images: np.ndarray, labels: np.ndarray) -> Path:
        """PNG files ``split/class_<k>/<i>.png`` (class names sort in label order up to 1000)."""
        from PIL import Image

        check_split(split)
        folder = Path(root) / split
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            d = folder / f"class_{int(label):03d}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(d / f"{i:06d}.png")
        return folder
