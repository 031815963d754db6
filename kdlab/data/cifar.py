"""The CIFAR-10/100 LightningDataModule: download, fixed train/val split, two pipelines.

``prepare_data`` only downloads (and only when files are missing); ``setup`` reads the files
(checksums for full copies, a structural check for subsets), and draws the val split with its
own fixed generator so every run seed sees the same split. ``pipeline=dataloader``
uses per-sample torchvision transforms in worker processes; ``pipeline=device`` keeps the split
on the training device as uint8 and augments whole batches there (``kdlab.data.device``).
"""

from __future__ import annotations

import functools
import logging
import signal
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR10, CIFAR100

from kdlab.data.augment import SeededMixUp
from kdlab.data.batch import Batch, collate
from kdlab.data.layout import LAYOUTS, VERIFY, DataError, get_layout, load_split, missing_files
from kdlab.data.transforms import build_strong_transform, build_transform, mean_std

log = logging.getLogger(__name__)

_TORCHVISION = {"cifar10": CIFAR10, "cifar100": CIFAR100}


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
    """uint8 images (N×32×32×3) + labels, transformed per sample (CHW uint8 → float).

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


class CIFARDataModule(L.LightningDataModule):
    """CIFAR-10/100 with a 45k/5k train/val split (``val_size``) and the official test set."""

    def __init__(
        self,
        name: str = "cifar10",
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
        augment: bool = True,
        pipeline: str = "dataloader",
        mixup_alpha: float = 0.0,
        strong_view: bool = False,
        verify: str = "md5",
    ) -> None:
        super().__init__()
        self.layout = get_layout(name)
        if num_classes is not None and num_classes != self.layout.num_classes:
            raise ValueError(
                f"data.num_classes={num_classes} but {name} has {self.layout.num_classes} classes"
            )
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
        if strong_view and (mixup_alpha > 0 or not augment):
            raise ValueError(
                "data.strong_view=true adds a strong view to augmented training batches: it "
                "needs data.augment=true and no MixUp (data.mixup_alpha=0)"
            )
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("data.batch_size and data.eval_batch_size must be ≥ 1")
        if verify not in VERIFY:
            raise ValueError(
                f"data.verify={verify!r} is not allowed: md5 (full copies must match "
                "torchvision's checksums) or structure (accept a verified re-encoding)"
            )
        self.name, self.root, self.download, self.verify = name, str(root), download, verify
        self.val_size, self.split_seed, self.train_size = val_size, split_seed, train_size
        self.seed = seed  # data order / augmentation of the device pipeline (the run seed)
        self.batch_size, self.eval_batch_size, self.num_workers = (
            batch_size,
            eval_batch_size,
            num_workers,
        )
        self.augment, self.pipeline, self.mixup_alpha = augment, pipeline, mixup_alpha
        self.strong_view = strong_view  # training batches also carry Batch.x_strong
        self.mean, self.std = mean_std(name, normalize)
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.padding = 4  # RandomCrop(32, padding=4): the crop/flip views a view cache enumerates
        self._mixup: SeededMixUp | None = None

    @property
    def num_classes(self) -> int:
        return self.layout.num_classes

    @property
    def train_labels(self) -> torch.Tensor:
        """The training split's labels (int64 [N]), for losses that keep per-sample state."""
        if not self.splits:
            self.setup()
        return torch.from_numpy(self.splits["train"][1]).long()

    def prepare_data(self) -> None:
        """Download with torchvision when (and only when) files are missing."""
        gone = missing_files(self.root, self.layout)
        if not gone:
            return
        other = [lay for lay in LAYOUTS.values() if lay.name != self.name
                 and not missing_files(self.root, lay)]  # fmt: skip
        if other:
            raise DataError(
                f"data.root={self.root} holds {other[0].name} ('{other[0].base_folder}/'), but "
                f"this run uses data={self.name}, which needs '{self.layout.base_folder}/'. Use "
                f"data={other[0].name}, or point data.root at a folder holding "
                f"'{self.layout.base_folder}/'"
            )
        if not self.download:
            raise DataError(
                f"{self.name} not found under data.root={self.root} (missing {gone[0].name} in "
                f"{gone[0].parent}). Point data.root at a folder holding '{self.layout.base_folder}/' "
                f"or allow the download with data.download=true."
            )
        log.info("downloading %s to %s", self.name, self.root)
        Path(self.root).mkdir(parents=True, exist_ok=True)
        try:
            _TORCHVISION[self.name](self.root, train=True, download=True)
            _TORCHVISION[self.name](self.root, train=False, download=True)
        except (OSError, RuntimeError) as err:  # URLError is an OSError: no internet, no proxy
            reason = getattr(err, "reason", None) or err
            raise DataError(
                f"could not download {self.name} ({type(err).__name__}: {reason}). Without "
                f"internet, copy torchvision's files into {Path(self.root) / self.layout.base_folder}"
                f"/ (from a machine that has them), or set data.root=PATH to a folder that already "
                f"holds '{self.layout.base_folder}/' (e.g. data.root=../shared/data for the "
                "CIFAR-10 subset beside this repository)"
            ) from err

    def setup(self, stage: str | None = None) -> None:
        if stage in ("test", "predict"):  # evaluating a trained network needs no split
            if "test" not in self.splits:
                self.splits["test"] = load_split(self.root, self.name, train=False,
                                                 verify=self.verify)  # fmt: skip
            return
        if "train" in self.splits:
            return
        x, y = load_split(self.root, self.name, train=True, verify=self.verify)
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
        if "test" not in self.splits:
            self.splits["test"] = load_split(self.root, self.name, train=False, verify=self.verify)
        # positions in the official training set: for caches and for checking the split
        self.train_indices, self.val_indices = train_idx, val_idx
        log.info(
            "%s: %d train%s / %d val (split seed %d) / %d test images",
            self.name, len(train_idx),
            f" (class-balanced subset of {available})" if self.train_size else "",
            len(val_idx), self.split_seed, len(self.splits["test"][1]),
        )  # fmt: skip

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
        if self.pipeline == "device":
            from kdlab.data.device import DeviceLoader

            rank, world = self._rank_world()
            return DeviceLoader(
                images, labels, bs, self.mean, self.std, augment=augment, shuffle=train,
                seed=self.seed, drop_last=False, device=self._device(), rank=rank,
                world_size=world, num_classes=self.num_classes, padding=self.padding,
                strong_view=strong,
            )  # fmt: skip
        transform = build_transform(self.mean, self.std, augment, self.padding)
        strong_tf = build_strong_transform(self.mean, self.std, self.padding) if strong else None
        return DataLoader(
            ArrayDataset(images, labels, transform, strong_tf), batch_size=bs, shuffle=train,
            num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
            persistent_workers=False, drop_last=False, collate_fn=collate,
            worker_init_fn=functools.partial(quiet_worker, rank=self._rank_world()[0]),
        )  # fmt: skip

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
