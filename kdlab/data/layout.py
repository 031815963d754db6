"""Reading and checking CIFAR files in torchvision's on-disk layout.

torchvision's ``CIFAR10(download=False)`` refuses any copy whose md5 differs from the official
files, which rules out the real subsets researchers keep for smoke runs. kdlab reads the pickles
itself: full-size files must match torchvision's checksums (a corrupt full copy is an error),
smaller files are accepted as a *subset* after a structural check (array shapes, label range,
class names). Every failure names the file and says what to do.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100

from kdlab.data.readers.base import VERIFY, DataError, check_full_copy

log = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR100_CLASSES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
    crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
    lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
    oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
    possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
    spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor
    train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)


@dataclass(frozen=True)
class Layout:
    """Where a dataset's files live and what they must contain."""

    name: str
    base_folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    md5: dict[str, str]
    label_key: str
    names_key: str
    classes: tuple[str, ...]
    n_train: int = 50_000
    n_test: int = 10_000

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _layout(name: str, tv: type[CIFAR10], label_key: str, names_key: str, classes) -> Layout:
    return Layout(
        name=name,
        base_folder=tv.base_folder,
        train_files=tuple(f for f, _ in tv.train_list),
        test_files=tuple(f for f, _ in tv.test_list),
        meta_file=tv.meta["filename"],
        md5={f: m for f, m in tv.train_list + tv.test_list} | {tv.meta["filename"]: tv.meta["md5"]},
        label_key=label_key,
        names_key=names_key,
        classes=tuple(classes),
    )


LAYOUTS: dict[str, Layout] = {
    "cifar10": _layout("cifar10", CIFAR10, "labels", "label_names", CIFAR10_CLASSES),
    "cifar100": _layout("cifar100", CIFAR100, "fine_labels", "fine_label_names", CIFAR100_CLASSES),
}


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise DataError(f"unknown CIFAR layout {name!r}; cifar10 or cifar100")
    return LAYOUTS[name]


def missing_files(root: str | Path, layout: Layout) -> list[Path]:
    """Files of the layout that are not on disk (empty list: everything is there)."""
    folder = Path(root) / layout.base_folder
    names = layout.train_files + layout.test_files + (layout.meta_file,)
    return [folder / n for n in names if not (folder / n).is_file()]


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated or not a pickle at all
        raise DataError(
            f"cannot read CIFAR file {path}: {type(e).__name__}: {e}. The file is corrupt or "
            f"truncated; delete {path.parent} and run again with data.download=true."
        ) from e
    if not isinstance(obj, dict):
        raise DataError(
            f"CIFAR file {path} does not hold a dict (got {type(obj).__name__}); wrong layout"
        )
    return obj


def _read_batch(path: Path, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → (uint8 N×32×32×3 images, int64 labels), with the structural checks."""
    obj = _unpickle(path)
    for key in ("data", layout.label_key):
        if key not in obj:
            raise DataError(
                f"CIFAR file {path} has no '{key}' entry (keys: {sorted(obj)}); wrong layout"
            )
    data = np.asarray(obj["data"])
    labels = np.asarray(obj[layout.label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"CIFAR file {path}: 'data' must be N×3072 uint8, got {data.shape} {data.dtype}"
        )
    if labels.shape != (data.shape[0],):
        raise DataError(f"CIFAR file {path}: {len(labels)} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataError(
            f"CIFAR file {path}: labels must lie in [0, {layout.num_classes - 1}], "
            f"found [{labels.min()}, {labels.max()}]"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_split(
    root: str | Path, name: str, train: bool, verify: str = "md5"
) -> tuple[np.ndarray, np.ndarray]:
    """Load the official train or test split as ``(N×32×32×3 uint8, labels)``.

    Full-size splits are checked against torchvision's md5 sums (``verify="md5"``), or only
    structurally (``verify="structure"``: a verified re-encoding of the official data, e.g.
    rebuilt from lossless PNGs, has the right pixels but other pickle bytes); smaller ones are
    logged as a subset after the structural checks.
    """
    if verify not in VERIFY:
        raise DataError(f"data.verify={verify!r} is not one of {list(VERIFY)}")
    layout = get_layout(name)
    folder = Path(root) / layout.base_folder
    gone = missing_files(root, layout)
    if gone:
        raise DataError(
            f"{layout.name} not found: missing {', '.join(str(p) for p in gone)}. "
            f"Set data.root to the folder that holds '{layout.base_folder}/', or "
            f"run with data.download=true (needs internet)."
        )
    meta = _unpickle(folder / layout.meta_file)
    names = tuple(meta.get(layout.names_key, ()))
    if names != layout.classes:
        raise DataError(
            f"{folder / layout.meta_file}: class names {list(names)[:5]}… do not match {layout.name}; "
            f"is data.root pointing at the other CIFAR?"
        )
    files = layout.train_files if train else layout.test_files
    parts = [_read_batch(folder / f, layout) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    full = layout.n_train if train else layout.n_test
    md5s = {folder / f: layout.md5[f] for f in files}
    check_full_copy(layout.name, "train" if train else "test", len(labels), full, md5s, verify, log)
    return np.ascontiguousarray(images), labels
