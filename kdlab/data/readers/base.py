"""What a dataset is to kdlab: a reader that turns files on disk into uint8 images and labels.

Everything else (splits, subsets, pipelines, MixUp, caches) is dataset-independent and lives in
``kdlab.data.module``. A reader answers five questions: which files it needs (``missing``), how
to get them (``download``), how to read a split (``read`` → uint8 ``N×H×W×3`` + int64 labels),
which classes there are and what the images' statistics are; ``write`` puts images into the
same on-disk layout, so tests and benchmarks can make small datasets that are read by the
exact code that reads the real ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

SPLITS = ("train", "test")
VERIFY = ("md5", "structure")

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]


class DataError(ValueError):
    """A dataset problem the user can fix (missing, corrupt, wrong layout)."""


class Reader(ABC):
    """One dataset's on-disk layout.

    ``name`` names the dataset in logs, records, cache keys and report tables. ``image_size``
    is the side of the images ``read`` returns. ``stats`` are the per-channel mean/std of the
    training images in [0, 1] when they are published (None: the data module measures them).
    """

    name: str
    image_size: int = 32
    stats: Stats | None = None
    download_hint: str = ""  # what to do without internet, for the error message

    @abstractmethod
    def classes(self, root: str | Path) -> tuple[str, ...]:
        """Class names in label order."""

    @abstractmethod
    def missing(self, root: str | Path) -> list[Path]:
        """The files a run needs that are not under ``root`` (empty: all there)."""

    @abstractmethod
    def location(self, root: str | Path) -> str:
        """Where under ``root`` the files go, for messages (e.g. ``'cifar-10-batches-py/'``)."""

    @abstractmethod
    def read(
        self, root: str | Path, split: str, verify: str = "md5"
    ) -> tuple[np.ndarray, np.ndarray]:
        """``split`` ("train" or "test") as ``(uint8 N×H×W×3, int64 labels)``, checked."""

    def download(self, root: str | Path) -> None:
        """Fetch the files into ``root``; readers without a download say how to get them."""
        raise DataError(
            f"{self.name} cannot be downloaded by kdlab; put its files under {root} "
            f"({self.location(root)}){self.download_hint}"
        )

    def write(self, root: str | Path, split: str, images: np.ndarray, labels: np.ndarray) -> Path:
        """Write ``images`` (uint8 N×H×W×3) and ``labels`` as ``split`` in this layout."""
        raise NotImplementedError(f"{type(self).__name__} cannot write its layout")

    @property
    def num_classes(self) -> int | None:
        """The class count when it does not depend on the files (None: read ``classes``)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")


def check_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int, where: str) -> None:
    """The structural checks every reader applies to what it read."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{where}: images must be uint8 N×H×W×3, got {images.shape} {images.dtype}")
    if labels.shape != (images.shape[0],):
        raise DataError(f"{where}: {len(labels)} labels for {images.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{where}: labels must lie in [0, {num_classes - 1}], "
            f"found [{labels.min()}, {labels.max()}]"
        )


def md5(path: Path) -> str:
    import hashlib

    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_full_copy(
    name: str, split: str, n: int, full: int, files: dict[Path, str], verify: str, log
) -> None:
    """Full-size files must match their published md5 (``verify=md5``) or are accepted after
    the structural check (``verify=structure``: a re-encoding with the same pixels); a smaller
    copy is a subset, logged as such."""
    if verify not in VERIFY:
        raise DataError(f"data.verify={verify!r} is not one of {list(VERIFY)}")
    if n >= full and verify == "structure":
        log.info(
            "%s %s: %d images accepted after a structural check (data.verify=structure: shapes, "
            "label range and class names; md5 not checked)",
            name,
            split,
            n,
        )
    elif n >= full:
        bad = [p.name for p, want in files.items() if md5(p) != want]
        if bad:
            folder = next(iter(files)).parent
            raise DataError(
                f"{name} {split} files {bad} in {folder} have the full size but fail "
                f"torchvision's md5 check. A corrupt download: delete them and run again with "
                f"data.download=true. A verified re-encoding of the official data (same pixels, "
                f"other file bytes): pass data.verify=structure."
            )
        log.info("%s %s: official files verified (md5, %d images)", name, split, n)
    else:
        log.warning(
            "%s %s: a subset of %d images (official: %d) in %s; accepted after a structural check",
            name,
            split,
            n,
            full,
            next(iter(files)).parent,
        )
