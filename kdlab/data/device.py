"""A device-resident loader: the whole split lives on the training device as uint8.

CIFAR-10's 50k training images are 150 MB as uint8, small enough to keep on the GPU. Each batch
is then one index gather plus the batched ops of ``kdlab.data.augment`` on the device, with no
worker processes and no host-to-device copies, which is what makes a KD run compute-bound
. ``DeviceLoader`` is a plain iterable with ``__len__``, so Lightning accepts it
directly as a train/val/test dataloader.

Randomness and epochs
    Every epoch's order is ``torch.randperm`` from a CPU generator seeded from ``(seed, epoch)``
    (so the order is the same on CPU and GPU and a resumed run replays it exactly); the views
    (crop offsets, flips) come from a generator on the device seeded from
    ``(seed, epoch, rank)``; MixUp draws from a CPU generator seeded the same way; the strong
    views (``strong_view=True``: their own crop/flip, RandAugment, Cutout, ``kdlab.data.strong``)
    from a device generator seeded from ``(seed, epoch, rank)`` on a stream of their own.
    Each ``__iter__`` uses the *next* epoch: the one given to ``set_epoch`` if it was called
    since the last pass, otherwise the previous pass's epoch + 1 (starting at 0). So plain
    ``for`` loops get a fresh shuffle every pass, and an explicit ``set_epoch`` always wins.
    Lightning calls ``set_epoch`` by itself at every epoch start (also after a resume) through
    the ``sampler`` attribute, exactly as it does for a ``DistributedSampler``.

Distributed (DDP)
    Like ``DistributedSampler``: the epoch permutation (identical on every rank) is padded to a
    multiple of ``world_size`` by repeating its first indices, and rank ``r`` takes positions
    ``r, r + world_size, …``. Shards are disjoint up to those few repeated images, and every
    rank has the same number of batches (DDP needs that to avoid a hang). The same padding
    applies to unshuffled (val/test) loaders, so under DDP a handful of evaluation images are
    counted twice, as with Lightning's own distributed sampler.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kdlab.data.augment import SeededMixUp, crop_flip_views, derive_seed, normalize, sample_views
from kdlab.data.batch import Batch
from kdlab.data.strong import StrongViews, render_strong, sample_strong

# stream ids keep the shuffle and view generators independent for the same (seed, epoch);
# 2 is MixUp's (kdlab.data.augment.MIXUP_STREAM)
_SHUFFLE, _VIEWS, _STRONG = 0, 1, 3


@dataclass(frozen=True)
class EpochPlan:
    """What one rank sees in one epoch: dataset indices and, when augmenting, their views."""

    indices: Tensor  # int64 [n] dataset indices, in batch order
    dy: Tensor | None = None  # int64 [n] crop row offsets in [0, 2·padding]
    dx: Tensor | None = None  # int64 [n] crop column offsets
    flip: Tensor | None = None  # bool [n]
    strong: StrongViews | None = None  # the strong view of each position (strong_view=True)


class _EpochHook:
    """Lightning looks for ``loader.sampler.set_epoch``; this forwards it to the loader."""

    def __init__(self, loader: DeviceLoader) -> None:
        self._loader = loader

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch)


def _to_nchw_uint8(images: np.ndarray | Tensor) -> Tensor:
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"images must be uint8 N×H×W×3, got {x.dtype} {tuple(x.shape)}")
    if x.shape[-1] == 3:  # HWC as stored in the CIFAR pickles / load_split
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] != 3:
        raise ValueError(f"images must have 3 channels (N×H×W×3), got {tuple(x.shape)}")
    return x.contiguous()


class DeviceLoader:
    """Yields ``Batch``es built on ``device`` from a uint8 split held there.

    ``x`` is float32 ``B×3×H×W``, normalised with ``mean``/``std`` (after crop+flip when
    ``augment``); ``y`` is int64 ``[B]``, or float ``[B, num_classes]`` soft targets when
    ``mixup_alpha > 0``; ``index`` holds the dataset rows (int64 ``[B]``) and, when augmenting,
    ``view`` each image's view id ``(dy·(2p+1) + dx)·2 + flip``. See the module docstring for
    epochs, seeding and DDP sharding.
    """

    def __init__(
        self,
        images: np.ndarray | Tensor,
        labels: np.ndarray | Tensor | Sequence[int],
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        mixup_alpha: float = 0.0,
        num_classes: int | None = None,
        padding: int = 4,
        strong_view: bool = False,
        flip: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be ≥ 0 (0 = off), got {mixup_alpha}")
        if mixup_alpha > 0 and num_classes is None:
            raise ValueError("mixup_alpha > 0 needs num_classes to build soft targets")
        if strong_view and not augment:
            raise ValueError("strong_view=True needs augment=True (a training loader)")
        if strong_view and mixup_alpha > 0:
            raise ValueError("strong_view=True and MixUp do not combine (which view is mixed?)")
        self.device = torch.device(device)
        self.images = _to_nchw_uint8(images).to(self.device)
        labels = labels if isinstance(labels, Tensor) else torch.as_tensor(np.asarray(labels))
        self.labels = labels.to(device=self.device, dtype=torch.int64)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if len(self.images) == 0:
            raise ValueError("DeviceLoader needs at least one image")
        self.batch_size = batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        # kept on the device so normalising a batch copies nothing from the host
        self._mean_t = torch.tensor(self.mean, dtype=torch.float32, device=self.device)
        self._std_t = torch.tensor(self.std, dtype=torch.float32, device=self.device)
        self.augment, self.shuffle, self.drop_last = augment, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.mixup_alpha, self.num_classes, self.padding = mixup_alpha, num_classes, padding
        self.strong_view = bool(strong_view)
        self.flip = bool(flip)
        self._mixup = SeededMixUp(mixup_alpha, num_classes, seed, rank) if mixup_alpha > 0 else None
        self._next_epoch = 0
        self.epoch = 0  # the epoch of the pass in progress (or last started)
        self.sampler = _EpochHook(self)  # lets Lightning's _set_sampler_epoch reach set_epoch
        self.batch_sampler = None  # Lightning reads it next to ``sampler``

    @property
    def num_samples(self) -> int:
        """Images per epoch for this rank (after DistributedSampler-style padding)."""
        return -(-len(self.images) // self.world_size)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use ``epoch`` (its order and views depend on it)."""
        self._next_epoch = int(epoch)

    def _generator(self, device: torch.device, *keys: int) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(self.seed, *keys))
        return g

    def plan(self, epoch: int) -> EpochPlan:
        """This rank's indices (and views when augmenting) for ``epoch``, without iterating.

        Deterministic in ``(seed, epoch, rank, world_size)``; a teacher-logit cache can read the
        exact views a pass will train on from here.
        """
        n = len(self.images)
        if self.shuffle:
            order = torch.randperm(
                n, generator=self._generator(torch.device("cpu"), _SHUFFLE, epoch)
            )
        else:
            order = torch.arange(n)
        total = self.num_samples * self.world_size
        if total > n:  # repeat the head so every rank gets the same count
            order = torch.cat([order, order.repeat(-(-total // n))[: total - n]])
        indices = order[self.rank : total : self.world_size].to(self.device)
        if not self.augment:
            return EpochPlan(indices)
        g = self._generator(self.device, _VIEWS, epoch, self.rank)
        dy, dx, flip = sample_views(len(indices), self.padding, g, self.device, self.flip)
        strong = None
        if self.strong_view:
            gs = self._generator(self.device, _STRONG, epoch, self.rank)
            strong = sample_strong(len(indices), self.padding, gs, self.device, self.flip)
        return EpochPlan(indices, dy, dx, flip, strong)

    def __iter__(self) -> Iterator[Batch]:
        self.epoch = self._next_epoch
        self._next_epoch = self.epoch + 1
        plan = self.plan(self.epoch)
        if self._mixup is not None:
            self._mixup.start(self.epoch)
        b, side = self.batch_size, 2 * self.padding + 1
        for i in range(len(self)):
            sl = slice(i * b, (i + 1) * b)
            idx = plan.indices[sl]
            x = self.images[idx]
            view = strong = None
            if plan.strong is not None:
                strong = render_strong(x, plan.strong.select(sl), self.padding)
                strong = normalize(strong, self._mean_t, self._std_t)
            if plan.dy is not None:
                x = crop_flip_views(x, plan.dy[sl], plan.dx[sl], plan.flip[sl], self.padding)
                view = (plan.dy[sl] * side + plan.dx[sl]) * 2 + plan.flip[sl].long()
            x = normalize(x, self._mean_t, self._std_t)
            y = self.labels[idx]
            if self._mixup is not None:
                x, y = self._mixup(x, y)
            yield Batch(x, y, idx, view, strong)
