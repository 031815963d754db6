"""Teacher-logit caches: the teacher runs once over the training split, students look rows up.

One component, two tables, both keyed by the batch's ``index`` (every kdlab batch carries it):

- **logits** ``[N, C]``: the un-augmented images (the notebook's lookup table). Only correct
  when the student sees exactly those images: ``data.augment=false`` and no MixUp, else refused.
- **views** ``[N, V, C]`` fp16: all ``V = (2p+1)²·2`` = 162 crop/flip views of every image
  (146 MB for CIFAR-10's 45k split, 1.46 GB for CIFAR-100). The device pipeline reports each
  image's view id and renders views with the same ``crop_flip_views``, so a cached run equals
  an online run up to fp16 rounding. MixUp, ``augment=false``, feature losses and the
  DataLoader pipeline cannot be served exactly: the run falls back to the online teacher and
  says why.

Files lie beside the (first) teacher checkpoint, ``<ckpt>.logits-<dataset>-<key>.pt`` and
``viewcache-<key>.pt``; ``key`` hashes every member's sha256, the dataset, the normalisation
and the training split (indices, images, labels), so a retrained teacher or another split gets
a new file, never stale logits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdlab.data.augment import crop_flip_views, normalize
from kdlab.models.export import save_atomic
from kdlab.utils.safe_load import UnreadableFile, load_weights

log = logging.getLogger(__name__)


def num_views(padding: int = 4) -> int:
    """``(2p+1)² · 2`` crop offsets × flips."""
    return (2 * padding + 1) ** 2 * 2


def view_id(dy: Tensor, dx: Tensor, flip: Tensor, padding: int = 4) -> Tensor:
    """Index of view ``(dy, dx, flip)``: ``(dy·(2p+1) + dx)·2 + flip`` (as DeviceLoader yields)."""
    return (dy.long() * (2 * padding + 1) + dx.long()) * 2 + flip.long()


def view_params(view: Tensor, padding: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of ``view_id``: ``(dy, dx, flip)``."""
    side = 2 * padding + 1
    flip = (view % 2).bool()
    pos = view // 2
    return pos // side, pos % side, flip


class TeacherCache(nn.Module):
    """``lookup(index[, view])`` → float32 teacher logits of those training-split rows.

    ``table`` is ``[N, C]`` (un-augmented) or ``[N, V, C]`` (views). ``logits`` is always the
    un-augmented ``[N, C]`` table (for views: the centre crop without flip, which *is* the plain
    image), what train-set fidelity reads.
    """

    def __init__(self, table: Tensor, path: Path | None = None, padding: int = 4) -> None:
        super().__init__()
        if table.dim() not in (2, 3):
            raise ValueError(f"a teacher cache table is [N, C] or [N, V, C], got {table.shape}")
        dtype = torch.float16 if table.dim() == 3 else torch.float32
        self.register_buffer("table", table.to(dtype), persistent=False)
        self.path, self.padding = path, padding

    @property
    def has_views(self) -> bool:
        return self.table.dim() == 3

    @property
    def views(self) -> Tensor:
        if not self.has_views:
            raise AttributeError("this cache holds un-augmented logits only (no views)")
        return self.table

    @property
    def logits(self) -> Tensor:
        if not self.has_views:
            return self.table
        p = self.padding
        centre = view_id(torch.tensor(p), torch.tensor(p), torch.tensor(False), p)
        return self.table[:, int(centre)].float()

    def lookup(self, index: Tensor, view: Tensor | None = None) -> Tensor:
        if index is None:
            raise ValueError("teacher_cache is set but training batches carry no indices")
        if self.table.device != index.device:
            self.table = self.table.to(index.device)
        if not self.has_views:
            return self.table[index]
        if view is None:
            raise ValueError("the view cache needs each image's view id: use data.pipeline=device")
        return self.table[index, view].float()

    def __len__(self) -> int:
        return self.table.shape[0]


def cache_key(teacher_sha256: list[str], datamodule, *extra: object) -> str:
    """16 hex digits identifying (teacher weights, dataset, ``extra``, normalisation, split).

    Shared by both tables (``extra`` is the view table's padding), so both go stale under
    exactly the same changes.
    """
    if not datamodule.splits:
        datamodule.setup()
    images, labels = datamodule.splits["train"]
    h = hashlib.sha256()
    parts = (*teacher_sha256, datamodule.name, *extra, repr(datamodule.mean), repr(datamodule.std))
    for part in parts:
        h.update(str(part).encode() + b"\0")
    for arr in (datamodule.train_indices, images, labels):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def _sha256s(teacher, what: str) -> list[str]:
    if not getattr(teacher, "sources", None):
        raise ValueError(f"{what} needs a teacher loaded from a checkpoint (no sources)")
    return [s["sha256"] for s in teacher.sources]


def cache_path(teacher, datamodule) -> Path:
    """``<first teacher ckpt>.logits-<dataset>-<key>.pt``."""
    key = cache_key(_sha256s(teacher, "teacher_cache"), datamodule)
    first = Path(teacher.sources[0]["path"])
    return first.with_name(f"{first.name}.logits-{datamodule.name}-{key}.pt")


def view_cache_path(teacher, datamodule, padding: int = 4) -> Path:
    """``<dir of the first teacher checkpoint>/viewcache-<key>.pt``."""
    key = cache_key(_sha256s(teacher, "view_cache"), datamodule, padding)
    return Path(teacher.sources[0]["path"]).parent / f"viewcache-{key}.pt"


def load_or_compute(
    path: Path, shape: tuple[int, ...], compute: Callable[[], Tensor], meta: dict, what: str
) -> Tensor:
    """The ``logits`` tensor stored at ``path`` when its shape is ``shape``, else ``compute()``
    stored there (atomically, with ``meta``) for the next run."""
    if path.is_file():
        problem = None
        try:
            obj = load_weights(path, what)
            logits = obj["logits"] if isinstance(obj, dict) else None
            if not isinstance(logits, Tensor):
                problem = "holds no logits tensor"
            elif tuple(logits.shape) != tuple(shape):
                problem = f"has shape {tuple(logits.shape)}, not {tuple(shape)}"
        except UnreadableFile as e:
            problem = str(e)
        if problem is None:
            log.info("%s: reusing %s", what, path)
            return logits
        # a derived file: never a reason to fail the run, and kept for a look
        aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        log.warning("%s %s cannot be used (%s): moved to %s, recomputing", what, path,
                    problem, aside)  # fmt: skip
    log.info("%s: computing %s logits → %s", what, "×".join(map(str, shape[:-1])), path)
    logits = compute()
    save_atomic({"logits": logits, **meta}, path)
    return logits


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
            "data.mixup_alpha=0, or teacher_cache=false (view_cache=true caches every crop/flip "
            "view exactly on data.pipeline=device)"
        )


@torch.no_grad()
def compute_logits(teacher: nn.Module, loader, device: torch.device | str) -> Tensor:
    """The teacher's float32 logits over ``loader`` (in order), on the CPU."""
    teacher.eval().to(device)
    return torch.cat([teacher(batch.x.to(device)).float().cpu() for batch in loader])


def build_logit_cache(teacher, datamodule, device: torch.device | str = "cpu") -> TeacherCache:
    """Load the un-augmented cache file for (teacher, data) or compute and store it."""
    check_cacheable(datamodule)
    path = cache_path(teacher, datamodule)

    def compute() -> Tensor:
        with torch.random.fork_rng(devices=[]):  # iterating a DataLoader draws from the global
            return compute_logits(teacher, datamodule.loader("train"), device)  # RNG: keep order

    shape = (len(datamodule.splits["train"][1]), teacher.num_classes)
    meta = {"dataset": datamodule.name, "teacher": _sha256s(teacher, "teacher_cache")}
    return TeacherCache(load_or_compute(path, shape, compute, meta, "teacher-logit cache"), path)


@torch.inference_mode()
def compute_view_logits(
    teacher: nn.Module, images: Tensor, mean, std, padding: int = 4, batch_size: int = 1024,
    device: torch.device | str = "cpu", progress: bool = True,
) -> Tensor:  # fmt: skip
    """fp16 logits ``[N, V, C]`` of every view of every image (uint8 ``N×3×H×W``), on the CPU."""
    device = torch.device(device)
    teacher.eval().to(device)
    n, nv = images.shape[0], num_views(padding)
    dy, dx, flip = view_params(torch.arange(nv, device=device), padding)
    per = max(1, batch_size // nv)  # images per forward (all their views together)
    out = None
    bar = tqdm(total=n * nv, desc="view cache", unit="view", disable=not progress)
    for start in range(0, n, per):
        x = images[start : start + per].to(device)
        b = x.shape[0]
        rep = x.repeat_interleave(nv, dim=0)
        v = crop_flip_views(rep, dy.repeat(b), dx.repeat(b), flip.repeat(b), padding)
        logits = teacher(normalize(v, mean, std)).float().reshape(b, nv, -1)
        if out is None:
            out = torch.empty(n, nv, logits.shape[-1], dtype=torch.float16)
        out[start : start + b] = logits.half().cpu()
        bar.update(b * nv)
    bar.close()
    return out


def build_view_cache(
    teacher, datamodule, device: torch.device | str = "cpu", progress: bool = True
) -> TeacherCache:
    """Load ``viewcache-<key>.pt`` for (teacher, data) or compute and store it."""
    padding = datamodule.padding
    path = view_cache_path(teacher, datamodule, padding)
    images, labels = datamodule.splits["train"]

    def compute() -> Tensor:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        return compute_view_logits(
            teacher, x, datamodule.mean, datamodule.std, padding, device=device, progress=progress
        )

    shape = (len(labels), num_views(padding), teacher.num_classes)
    meta = {"dataset": datamodule.name, "padding": padding,
            "teacher": _sha256s(teacher, "view_cache")}  # fmt: skip
    return TeacherCache(load_or_compute(path, shape, compute, meta, "view cache"), path, padding)


def view_cache_fallback(loss, datamodule) -> str | None:
    """Why the view cache cannot serve this run exactly (None: it can)."""
    if getattr(loss, "uses_features", False):
        return f"the loss needs teacher features {list(loss.teacher_stages)}"
    if datamodule.pipeline != "device":
        return "data.pipeline=dataloader does not report each image's view (use device)"
    if not datamodule.augment:
        return "data.augment=false (no views; teacher_cache=true caches un-augmented logits)"
    if datamodule.mixup_alpha > 0:
        return f"MixUp (data.mixup_alpha={datamodule.mixup_alpha}) mixes views"
    return None
