"""Teacher-logit cache for un-augmented training: the teacher runs once, not every epoch.

The notebook (SPEC §1.2) pre-computes the teacher's logits into a lookup table. That is only
correct when the student sees exactly the images the teacher was run on, i.e. with
``data.augment=false`` and no MixUp: a cached logit of the plain image is the wrong target for
a cropped, flipped or mixed one, so those settings are refused with a ``ValueError``.
(An augmentation-exact cache of every crop/flip view is a separate feature.)

The cache is a file beside the (first) teacher checkpoint,
``<ckpt>.logits-<dataset>-<key>.pt``, where ``key`` hashes the teacher checkpoints' sha256, the
dataset, the training-split indices, the images, labels and the normalisation: any change
gives a new file instead of stale logits. Rows are in the datamodule's training-split order,
and the training loader delivers each sample's row index (``return_index``). Logits are
computed in float32; under bf16/fp16 autocast the uncached teacher's logits are rounded to that
precision, so there the cached run differs by that rounding only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from kdlab.models.export import save_atomic

log = logging.getLogger(__name__)


def check_cacheable(datamodule) -> None:
    """Refuse settings under which cached un-augmented logits would be wrong targets."""
    problems = []
    if datamodule.augment:
        problems.append("data.augment=true (random crops/flips)")
    if datamodule.mixup_alpha > 0:
        problems.append(f"data.mixup_alpha={datamodule.mixup_alpha} (MixUp)")
    if problems:
        raise ValueError(
            f"teacher_cache=true is refused with {' and '.join(problems)}: cached logits of the "
            "un-augmented images are wrong targets for augmented ones. Set data.augment=false "
            "data.mixup_alpha=0, or teacher_cache=false"
        )
    if datamodule.pipeline != "dataloader":
        raise ValueError(
            "teacher_cache=true needs data.pipeline=dataloader (its batches carry sample indices)"
        )


def cache_key(teacher_sha256: list[str], datamodule, *extra: object) -> str:
    """16 hex digits identifying (teacher weights, dataset, ``extra``, normalisation, split).

    Shared by every teacher cache (``extra`` is e.g. the view cache's padding), so all caches
    go stale under exactly the same changes.
    """
    images, labels = datamodule.splits["train"]
    h = hashlib.sha256()
    parts = (*teacher_sha256, datamodule.name, *extra, repr(datamodule.mean), repr(datamodule.std))
    for part in parts:
        h.update(str(part).encode() + b"\0")
    for arr in (datamodule.train_indices, images, labels):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def cache_path(teacher, datamodule) -> Path:
    """``<first teacher ckpt>.logits-<dataset>-<key>.pt``."""
    if not teacher.sources:
        raise ValueError("teacher_cache needs a teacher loaded from a checkpoint (no sources)")
    key = cache_key([s["sha256"] for s in teacher.sources], datamodule)
    first = Path(teacher.sources[0]["path"])
    return first.with_name(f"{first.name}.logits-{datamodule.name}-{key}.pt")


@torch.no_grad()
def compute_logits(teacher: nn.Module, loader, device: torch.device | str) -> Tensor:
    """The teacher's float32 logits over ``loader`` (in order), on the CPU."""
    teacher.eval().to(device)
    out = [teacher(batch[0].to(device)).float().cpu() for batch in loader]
    return torch.cat(out)


def load_or_compute(
    path: Path, shape: tuple[int, ...], compute: Callable[[], Tensor], meta: dict, what: str
) -> Tensor:
    """The ``logits`` tensor stored at ``path`` when its shape is ``shape``, else ``compute()``
    stored there (atomically, with ``meta``) for the next run."""
    if path.is_file():
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if tuple(obj["logits"].shape) == tuple(shape):
            log.info("%s: reusing %s", what, path)
            return obj["logits"]
        log.warning("%s %s has the wrong shape; recomputing", what, path)
    log.info("%s: computing %s logits → %s", what, "×".join(map(str, shape[:-1])), path)
    logits = compute()
    save_atomic({"logits": logits, **meta}, path)
    return logits


class TeacherLogitCache(nn.Module):
    """Row ``i`` = teacher logits of training-split image ``i``; ``lookup(idx)`` per batch."""

    def __init__(self, logits: Tensor, path: Path | None = None) -> None:
        super().__init__()
        self.register_buffer("logits", logits.float(), persistent=False)
        self.path = path

    def lookup(self, idx: Tensor) -> Tensor:
        if self.logits.device != idx.device:
            self.logits = self.logits.to(idx.device)
        return self.logits[idx]

    def __len__(self) -> int:
        return self.logits.shape[0]


def build_logit_cache(teacher, datamodule, device: torch.device | str = "cpu") -> TeacherLogitCache:
    """Load the cache file for (teacher, data) or compute and store it; checks settings first."""
    check_cacheable(datamodule)
    if not datamodule.splits:
        datamodule.setup()
    path = cache_path(teacher, datamodule)

    def compute() -> Tensor:
        with torch.random.fork_rng(devices=[]):  # iterating a DataLoader draws from the global
            return compute_logits(teacher, datamodule.loader("train"), device)  # RNG: keep order

    shape = (len(datamodule.splits["train"][1]), teacher.num_classes)
    meta = {"dataset": datamodule.name, "teacher": [s["sha256"] for s in teacher.sources]}
    logits = load_or_compute(path, shape, compute, meta, "teacher-logit cache")
    return TeacherLogitCache(logits, path)


def attach_logit_cache(system, datamodule, device: torch.device | str = "cpu") -> None:
    """Serve ``system``'s training-batch teacher logits from the cache (batches carry indices)."""
    if not getattr(system, "has_teacher", False):
        raise ValueError("teacher_cache=true needs a distillation run (a teacher)")
    system.use_teacher_cache(build_logit_cache(system.teacher, datamodule, device))
    datamodule.return_index = True
