"""The one data module: fixed train/val split, ``train_size`` subsets, two pipelines, MixUp.

The dataset itself is a reader (``kdlab.data.readers``): it says where the files are, how to
download them and how to read a split into uint8 images and labels. Everything here works the
same for every reader. ``prepare_data`` only downloads (and only when files are missing);
``setup`` reads the files and draws the val split with its own fixed generator so every run
seed sees the same split. ``pipeline=dataloader`` uses per-sample torchvision transforms in
worker processes; ``pipeline=device`` keeps the split on the training device as uint8 and
augments whole batches there (``kdlab.data.device``).
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset

from kdlab.data.augment import SeededMixUp
from kdlab.data.batch import Batch, collate
from kdlab.data.readers import BUILTIN, VERIFY, DataError, Reader, builtin
from kdlab.data.transforms import UNITCUBE, build_strong_transform, build_transform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Augment:
    """Training augmentation: zero-padded random crop (``crop_padding`` pixels each side, 0 =
    none) and horizontal flip (off for digits and text, where a mirror image is another
    symbol). Both work at any image size and on both pipelines."""

    crop_padding: int = 4
    flip: bool = True

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip

    @classmethod
    def parse(cls, value: bool | Mapping | Augment) -> Augment:
        """``true`` (crop 4 + flip, kdlab's CIFAR setting), ``false`` (none) or the options."""
        if isinstance(value, Augment):
            return value
        if isinstance(value, bool):
            return cls() if value else cls(0, False)
        if isinstance(value, Mapping):
            unknown = set(value) - {"crop_padding", "flip"}
            if unknown:
                raise ValueError(
                    f"data.augment has unknown options {sorted(unknown)}; it takes crop_padding "
                    "(pixels, 0 = no crop) and flip (true/false)"
                )
            pad, flip = value.get("crop_padding", 4), value.get("flip", True)
            if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
                raise ValueError(f"data.augment.crop_padding must be an integer ≥ 0, got {pad!r}")
            if not isinstance(flip, bool):
                raise ValueError(f"data.augment.flip must be true or false, got {flip!r}")
            return cls(pad, flip)
        raise ValueError(
            f"data.augment must be true, false or {{crop_padding: N, flip: BOOL}}, got {value!r}"
        )


@dataclass(frozen=True)
class TrainSplit:
    """What a teacher cache needs from the data: the training images exactly as the pipeline
    holds them, where they sit in the dataset, their normalisation and augmentation."""

    dataset: str
    images: np.ndarray  # uint8 N×H×W×3
    labels: np.ndarray  # int64 [N]
    indices: np.ndarray  # positions in the dataset's training files
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment
    pipeline: str
    mixup_alpha: float


def quiet_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader worker start: leave job-control signals to the training process.

    Workers inherit the training process's signal handlers; under SLURM the pre-timeout
    ``SIGUSR1`` and the ``SIGTERM`` of a requeue or ``scancel`` reach every process of the job,
    and a worker that handles (or dies of) them makes the run save, requeue or fail several
    times over. Seeding is Lightning's own worker seeding, unchanged.
    """
    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    pl_worker_init_function(worker_id, rank)


class ArrayDataset(Dataset):
    """uint8 images (N×H×W×3) + labels, transformed per sample (CHW uint8 → float).

    Samples are ``(image, label, row)``; ``kdlab.data.batch.collate`` turns them into a
    ``Batch`` whose ``index`` lets a teacher cache or a memory bank find each row. With a
    ``strong`` transform each sample also carries its strong view, drawn independently.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform, strong=None) -> None:
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2)  # view, no copy
        self.labels = torch.from_numpy(labels)
        self.transform, self.strong = transform, strong

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.strong is not None:
            return self.transform(image), self.labels[i], i, self.strong(image)
        return self.transform(image), self.labels[i], i


class ImageDataModule(L.LightningDataModule):
    """A reader's dataset with a fixed train/val split (``val_size``) and its test split.

    ``reader`` is the dataset (a ``kdlab.data.readers.Reader``, built from
    ``data.reader._target_``); without one, ``name`` picks a dataset kdlab ships (configs
    written before readers existed say only ``name: cifar10``).
    """

    def __init__(
        self,
        name: str | None = None,
        root: str = "data",
        download: bool = True,
        num_classes: int | None = None,
        val_size: int = 5000,
        split_seed: int = 20240607,
        train_size: int | None = None,
        seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        num_workers: int = 4,
        normalize: str = "dataset",
        augment: bool | Mapping = True,
        pipeline: str = "dataloader",
        mixup_alpha: float = 0.0,
        strong_view: bool = False,
        verify: str = "md5",
        reader: Reader | None = None,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if reader is None:
            reader = builtin(name or "cifar10")
        self.reader = reader
        self.name = name or reader.name
        if image_size is not None and image_size != reader.image_size:
            raise ValueError(
                f"data.image_size={image_size} but {self.name} images are {reader.image_size}×"
                f"{reader.image_size}; a network that needs another size resizes its input "
                "(the timm models' input_size) instead"
            )
        self.image_size = reader.image_size
        if num_classes is not None and reader.num_classes not in (None, num_classes):
            raise ValueError(
                f"data.num_classes={num_classes} but {self.name} has {reader.num_classes} classes"
            )
        self._num_classes = num_classes if reader.num_classes is None else reader.num_classes
        self._classes_checked = reader.num_classes is not None
        if pipeline not in ("dataloader", "device"):
            raise ValueError(f"data.pipeline must be 'dataloader' or 'device', got {pipeline!r}")
        if not isinstance(val_size, int) or val_size < 1:
            raise ValueError(f"data.val_size must be a positive integer, got {val_size!r}")
        if train_size is not None and (not isinstance(train_size, int) or train_size < 1):
            raise ValueError(
                f"data.train_size must be a positive integer or null (all), got {train_size!r}"
            )
        if mixup_alpha < 0:
            raise ValueError(f"data.mixup_alpha must be ≥ 0 (0 = off), got {mixup_alpha}")
        if not isinstance(strong_view, bool):
            raise ValueError(f"data.strong_view must be true or false, got {strong_view!r}")
        self.augmentation = Augment.parse(augment)
        if strong_view and (mixup_alpha > 0 or not self.augmentation.active):
            raise ValueError(
                "data.strong_view=true adds a strong view to augmented training batches: it "
                "needs data.augment on and no MixUp (data.mixup_alpha=0)"
            )
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("data.batch_size and data.eval_batch_size must be ≥ 1")
        if verify not in VERIFY:
            raise ValueError(
                f"data.verify={verify!r} is not allowed: md5 (full copies must match "
                "torchvision's checksums) or structure (accept a verified re-encoding)"
            )
        if normalize not in ("dataset", "unitcube"):
            raise ValueError(f"data.normalize must be 'dataset' or 'unitcube', got {normalize!r}")
        self.root, self.download, self.verify = str(root), download, verify
        self.val_size, self.split_seed, self.train_size = val_size, split_seed, train_size
        self.seed = seed  # data order / augmentation of the device pipeline (the run seed)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.pipeline, self.mixup_alpha = pipeline, mixup_alpha
        self.strong_view = strong_view  # training batches also carry Batch.x_strong
        self.normalize = normalize
        self._stats = UNITCUBE if normalize == "unitcube" else reader.stats
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._mixup: SeededMixUp | None = None

    # -- what the dataset is ---------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """The reader's class count, or that of the class folders it finds (which a declared
        ``data.num_classes`` must equal: the network's output size is built from it)."""
        self._check_classes()
        return self._num_classes

    def _check_classes(self) -> None:
        if not self._classes_checked:
            found = len(self.reader.classes(self.root))
            if self._num_classes not in (None, found):
                raise ValueError(
                    f"data.num_classes={self._num_classes} but {self.name} has {found} classes "
                    f"({self.reader.location(self.root)} under {self.root}); set "
                    f"data.num_classes={found}"
                )
            self._num_classes, self._classes_checked = found, True

    @property
    def classes(self) -> tuple[str, ...]:
        return self.reader.classes(self.root)

    @property
    def augment(self) -> bool:
        """Whether training batches are augmented at all (crop or flip)."""
        return self.augmentation.active

    @property
    def padding(self) -> int:
        """Crop padding of the training views (what a view cache enumerates)."""
        return self.augmentation.crop_padding

    @property
    def flip(self) -> bool:
        return self.augmentation.flip

    @property
    def mean(self) -> tuple[float, ...]:
        return self._normalization()[0]

    @property
    def std(self) -> tuple[float, ...]:
        return self._normalization()[1]

    def _normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The reader's published statistics, else measured once on its training images."""
        if self._stats is None:
            self._measure(self._read("train")[0])
        return self._stats

    def _measure(self, x: np.ndarray) -> None:
        """Per-channel mean/std of every training image (before the val split, so every split
        setting normalises alike), rounded to 4 digits as published statistics are."""
        sums = np.zeros(3)
        squares = np.zeros(3)
        for start in range(0, len(x), 4096):  # float64 of the whole set would not fit in memory
            chunk = x[start : start + 4096].reshape(-1, 3).astype(np.float64) / 255.0
            sums += chunk.sum(0)
            squares += (chunk**2).sum(0)
        count = x.shape[0] * x.shape[1] * x.shape[2]
        mean = sums / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        self._stats = (
            tuple(round(float(v), 4) for v in mean),
            tuple(round(float(v), 4) for v in std),
        )
        log.info(
            "%s: normalisation measured on its %d training images: mean %s, std %s",
            self.name,
            len(x),
            self._stats[0],
            self._stats[1],
        )

    @property
    def train_labels(self) -> torch.Tensor:
        """The training split's labels (int64 [N]), for losses that keep per-sample state."""
        if not self.splits:
            self.setup()
        return torch.from_numpy(self.splits["train"][1]).long()

    def train_split(self) -> TrainSplit:
        """The training split as the pipeline holds it, for teacher caches."""
        if "train" not in self.splits:
            self.setup("fit")
        images, labels = self.splits["train"]
        return TrainSplit(
            self.name,
            images,
            labels,
            self.train_indices,
            self.mean,
            self.std,
            self.augmentation,
            self.pipeline,
            self.mixup_alpha,
        )

    # -- files -----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download through the reader when (and only when) files are missing."""
        gone = self.reader.missing(self.root)
        if not gone:
            return
        for other in BUILTIN:
            if other != self.name and not builtin(other).missing(self.root):
                raise DataError(
                    f"data.root={self.root} holds {other} ({builtin(other).location(self.root)}), "
                    f"but this run uses data={self.name}, which needs "
                    f"{self.reader.location(self.root)}. Use data={other}, or point data.root at "
                    f"a folder holding {self.reader.location(self.root)}"
                )
        where = self.reader.location(self.root)
        if not self.download:
            raise DataError(
                f"{self.name} not found under data.root={self.root} (missing {gone[0].name} in "
                f"{gone[0].parent}). Point data.root at a folder holding {where} "
                f"or allow the download with data.download=true."
            )
        log.info("downloading %s to %s", self.name, self.root)
        Path(self.root).mkdir(parents=True, exist_ok=True)
        try:
            self.reader.download(self.root)
        except (OSError, RuntimeError) as err:  # URLError is an OSError: no internet, no proxy
            reason = getattr(err, "reason", None) or err
            raise DataError(
                f"could not download {self.name} ({type(err).__name__}: {reason}). Without "
                f"internet, copy its files ({where}) into {self.root} from a machine that has "
                f"them, or set data.root=PATH to a folder that already holds them"
                + (
                    " (e.g. data.root=../shared/data for the CIFAR-10 subset beside this "
                    "repository)"
                    if self.name == "cifar10"
                    else ""
                )
            ) from err

    def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        gone = self.reader.missing(self.root)
        if gone:
            raise DataError(
                f"{self.name} not found: missing {', '.join(str(p) for p in gone)}. "
                f"Set data.root to the folder that holds {self.reader.location(self.root)}, or "
                f"run with data.download=true (needs internet)."
            )
        if split == "train" and "_train_files" in self.__dict__:
            return self._train_files
        x, y = self.reader.read(self.root, split, verify=self.verify)
        if split == "train":
            self._train_files = (x, y)
        return x, y

    def setup(self, stage: str | None = None) -> None:
        self._check_classes()  # before any network is trained on a wrong class count
        if stage in ("test", "predict"):  # evaluating a trained network needs no split
            if "test" not in self.splits:
                self.splits["test"] = self._read("test")
            return
        if "train" in self.splits:
            return
        x, y = self._read("train")
        if self._stats is None:
            self._measure(x)
        if self.val_size >= len(y):
            raise DataError(
                f"data.val_size={self.val_size} leaves no training images ({len(y)} in {self.root}); "
                f"use a smaller data.val_size"
            )
        perm = torch.randperm(
            len(y), generator=torch.Generator().manual_seed(self.split_seed)
        ).numpy()
        val_idx, train_idx = np.sort(perm[: self.val_size]), np.sort(perm[self.val_size :])
        available = len(train_idx)
        if self.train_size is not None:
            train_idx = self._balanced_subset(train_idx, y[train_idx])
        self.splits["train"] = (x[train_idx], y[train_idx])
        self.splits["val"] = (x[val_idx], y[val_idx])
        self.__dict__.pop("_train_files", None)  # the splits hold what is needed now
        if "test" not in self.splits:
            self.splits["test"] = self._read("test")
        # positions in the dataset's training files: for caches and for checking the split
        self.train_indices, self.val_indices = train_idx, val_idx
        subset = f" (class-balanced subset of {available})" if self.train_size else ""
        log.info(
            "%s: %d train%s / %d val (split seed %d) / %d test images",
            self.name,
            len(train_idx),
            subset,
            len(val_idx),
            self.split_seed,
            len(self.splits["test"][1]),
        )

    def _balanced_subset(self, train_idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``train_size`` of the training images, as even over the classes as their counts allow.

        Drawn with the split's own generator, so every run seed and every method of a low-data
        study trains on the same images: the classes take turns (in label order), each giving
        the next image of its own seeded shuffle, until ``train_size`` are chosen.
        """
        if self.train_size > len(train_idx):
            raise DataError(
                f"data.train_size={self.train_size} but the training split has only "
                f"{len(train_idx)} images ({self.root}, data.val_size={self.val_size})"
            )
        classes = len(np.unique(labels))
        if self.train_size < classes:
            raise DataError(
                f"data.train_size={self.train_size} is smaller than the {classes} classes of the "
                f"training split: some classes would have no training image at all. Use "
                f"data.train_size={classes} or more (null = the whole split)"
            )
        gen = torch.Generator().manual_seed(self.split_seed + 1)
        order = torch.randperm(len(train_idx), generator=gen).numpy()
        # each image's turn within its class, in the seeded order
        turn = np.empty(len(order), dtype=np.int64)
        for c in np.unique(labels):
            members = order[labels[order] == c]
            turn[members] = np.arange(len(members))
        picked = np.lexsort((labels, turn))[: self.train_size]
        return np.sort(train_idx[picked])

    # -- loaders ---------------------------------------------------------------------------
    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def loader(self, split: str, train: bool = False):
        """A loader over ``split``; ``train=True`` shuffles and augments (the training loader).

        ``loader("train")`` without ``train`` gives the un-augmented training set in order,
        used for train-set fidelity and teacher caches.
        """
        if split not in self.splits:
            self.setup("test" if split == "test" else "fit")
        images, labels = self.splits[split]
        augment = train and self.augment
        strong = train and self.strong_view
        bs = self.batch_size if train else self.eval_batch_size
        pad, flip, size = self.padding, self.flip, self.image_size
        if self.pipeline == "device":
            from kdlab.data.device import DeviceLoader

            rank, world = self._rank_world()
            return DeviceLoader(
                images,
                labels,
                bs,
                self.mean,
                self.std,
                augment=augment,
                shuffle=train,
                seed=self.seed,
                drop_last=False,
                device=self._device(),
                rank=rank,
                world_size=world,
                num_classes=self.num_classes,
                padding=pad,
                strong_view=strong,
                flip=flip,
            )
        transform = build_transform(self.mean, self.std, augment, pad, flip, size)
        strong_tf = build_strong_transform(self.mean, self.std, pad, flip, size) if strong else None
        return DataLoader(
            ArrayDataset(images, labels, transform, strong_tf),
            batch_size=bs,
            shuffle=train,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
            drop_last=False,
            collate_fn=collate,
            worker_init_fn=functools.partial(quiet_worker, rank=self._rank_world()[0]),
        )

    # Workers are not persistent: each epoch's workers are seeded afresh from the main process's
    # RNG (which checkpoints restore), so a resumed run draws the same augmentations as an
    # uninterrupted one; persistent workers would carry their RNG across epochs instead.

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int):
        return batch.to(device, non_blocking=device.type == "cuda")

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """MixUp on the device for training batches of either pipeline, seeded per epoch.

        Mixing here (after the transfer, before the system sees the batch) means the teacher and
        the student receive the identical mixed images, and the targets become soft labels that
        the CE term consumes directly.
        """
        trainer = getattr(self, "trainer", None)
        if self.mixup_alpha <= 0 or trainer is None or not trainer.training:
            return batch
        if self._mixup is None:
            rank, _ = self._rank_world()
            self._mixup = SeededMixUp(self.mixup_alpha, self.num_classes, self.seed, rank)
        if self._mixup.epoch != trainer.current_epoch:
            self._mixup.start(trainer.current_epoch)
        x, y = self._mixup(batch.x, batch.y)
        return batch.replace(x=x, y=y)

    def train_dataloader(self):
        return self.loader("train", train=True)

    def val_dataloader(self):
        return self.loader("val")

    def test_dataloader(self):
        return self.loader("test")


# Configs written before readers existed name this class; it is the same module.
CIFARDataModule = ImageDataModule
