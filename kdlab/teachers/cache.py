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
from kdlab.data.module import TrainSplit
from kdlab.models.export import save_atomic
from kdlab.utils.safe_load import UnreadableFile, load_weights

log = logging.getLogger(__name__)


def num_views(padding: int = 4, flip: bool = True) -> int:
    """``(2p+1)²`` crop offsets, × 2 with flips."""
    return (2 * padding + 1) ** 2 * (2 if flip else 1)


def view_ids(padding: int = 4, flip: bool = True) -> Tensor:
    """The view ids a pipeline can yield, in table order (without flips: the even ids)."""
    ids = torch.arange(num_views(padding, True))
    return ids if flip else ids[0::2]


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

    def __init__(
        self, table: Tensor, path: Path | None = None, padding: int = 4, flip: bool = True
    ) -> None:
        super().__init__()
        if table.dim() not in (2, 3):
            raise ValueError(f"a teacher cache table is [N, C] or [N, V, C], got {table.shape}")
        dtype = torch.float16 if table.dim() == 3 else torch.float32
        self.register_buffer("table", table.to(dtype), persistent=False)
        self.path, self.padding, self.flip = path, padding, flip

    def _slot(self, view: Tensor) -> Tensor:
        """Table column of a view id (without flips only the even ids occur)."""
        return view if self.flip else view // 2

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
        return self.table[:, int(self._slot(centre))].float()

    def lookup(self, index: Tensor, view: Tensor | None = None) -> Tensor:
        if index is None:
            raise ValueError("teacher_cache is set but training batches carry no indices")
        if self.table.device != index.device:
            self.table = self.table.to(index.device)
        if not self.has_views:
            return self.table[index]
        if view is None:
            raise ValueError("the view cache needs each image's view id: use data.pipeline=device")
        return self.table[index, self._slot(view)].float()

    def __len__(self) -> int:
        return self.table.shape[0]


def cache_key(teacher_sha256: list[str], split: TrainSplit, *extra: object) -> str:
    """16 hex digits identifying (teacher weights, dataset, ``extra``, normalisation, split).

    Shared by both tables (``extra`` is the view table's padding, and ``noflip`` when the run
    does not flip), so both go stale under exactly the same changes.
    """
    h = hashlib.sha256()
    parts = (*teacher_sha256, split.dataset, *extra, repr(split.mean), repr(split.std))
    for part in parts:
        h.update(str(part).encode() + b"\0")
    for arr in (split.indices, split.images, split.labels):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def _sha256s(teacher, what: str) -> list[str]:
    if not getattr(teacher, "sources", None):
        raise ValueError(f"{what} needs a teacher loaded from a checkpoint (no sources)")
    return [s["sha256"] for s in teacher.sources]


def cache_path(teacher, split: TrainSplit) -> Path:
    """``<first teacher ckpt>.logits-<dataset>-<key>.pt``."""
    key = cache_key(_sha256s(teacher, "teacher_cache"), split)
    first = Path(teacher.sources[0]["path"])
    return first.with_name(f"{first.name}.logits-{split.dataset}-{key}.pt")


def view_cache_path(teacher, split: TrainSplit) -> Path:
    """``<dir of the first teacher checkpoint>/viewcache-<key>.pt``."""
    extra = (split.augment.crop_padding,) + (() if split.augment.flip else ("noflip",))
    key = cache_key(_sha256s(teacher, "view_cache"), split, *extra)
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
        log.warning(
            "%s %s cannot be used (%s): moved to %s, recomputing", what, path, problem, aside
        )
    log.info("%s: computing %s logits → %s", what, "×".join(map(str, shape[:-1])), path)
    logits = compute()
    save_atomic({"logits": logits, **meta}, path)
    return logits


def check_cacheable(split: TrainSplit) -> None:
    """Refuse settings under which cached un-augmented logits would be wrong targets."""
    problems = []
    if split.augment.active:
        problems.append("data.augment on (random crops/flips)")
    if split.mixup_alpha > 0:
        problems.append(f"data.mixup_alpha={split.mixup_alpha} (MixUp)")
    if problems:
        raise ValueError(
            f"teacher_cache=true is refused with {' and '.join(problems)}: cached logits of the "
            "un-augmented images are wrong targets for augmented ones. Set data.augment=false "
            "data.mixup_alpha=0, or teacher_cache=false (view_cache=true caches every crop/flip "
            "view exactly on data.pipeline=device)"
        )


@torch.inference_mode()
def compute_logits(
    teacher: nn.Module, split: TrainSplit, device: torch.device | str, batch_size: int = 512
) -> Tensor:
    """The teacher's float32 logits of the un-augmented training images (in order), on the CPU."""
    teacher.eval().to(device)
    x = torch.from_numpy(split.images).permute(0, 3, 1, 2)
    out = []
    for start in range(0, len(x), batch_size):
        batch = normalize(x[start : start + batch_size].to(device), split.mean, split.std)
        out.append(teacher(batch).float().cpu())
    return torch.cat(out)


def build_logit_cache(
    teacher, split: TrainSplit, device: torch.device | str = "cpu"
) -> TeacherCache:
    """Load the un-augmented cache file for (teacher, data) or compute and store it."""
    check_cacheable(split)
    path = cache_path(teacher, split)
    shape = (len(split.labels), teacher.num_classes)
    meta = {"dataset": split.dataset, "teacher": _sha256s(teacher, "teacher_cache")}
    table = load_or_compute(
        path, shape, lambda: compute_logits(teacher, split, device), meta, "teacher-logit cache"
    )
    return TeacherCache(table, path)


@torch.inference_mode()
def compute_view_logits(
    teacher: nn.Module,
    images: Tensor,
    mean,
    std,
    padding: int = 4,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    progress: bool = True,
    flip: bool = True,
) -> Tensor:
    """fp16 logits ``[N, V, C]`` of every view of every image (uint8 ``N×3×H×W``), on the CPU."""
    device = torch.device(device)
    teacher.eval().to(device)
    n, nv = images.shape[0], num_views(padding, flip)
    dy, dx, flips = view_params(view_ids(padding, flip).to(device), padding)
    per = max(1, batch_size // nv)  # images per forward (all their views together)
    out = None
    bar = tqdm(total=n * nv, desc="view cache", unit="view", disable=not progress)
    for start in range(0, n, per):
        x = images[start : start + per].to(device)
        b = x.shape[0]
        rep = x.repeat_interleave(nv, dim=0)
        v = crop_flip_views(rep, dy.repeat(b), dx.repeat(b), flips.repeat(b), padding)
        logits = teacher(normalize(v, mean, std)).float().reshape(b, nv, -1)
        if out is None:
            out = torch.empty(n, nv, logits.shape[-1], dtype=torch.float16)
        out[start : start + b] = logits.half().cpu()
        bar.update(b * nv)
    bar.close()
    return out


def build_view_cache(
    teacher, split: TrainSplit, device: torch.device | str = "cpu", progress: bool = True
) -> TeacherCache:
    """Load ``viewcache-<key>.pt`` for (teacher, data) or compute and store it."""
    padding, flip = split.augment.crop_padding, split.augment.flip
    path = view_cache_path(teacher, split)

    def compute() -> Tensor:
        x = torch.from_numpy(split.images).permute(0, 3, 1, 2).contiguous()
        return compute_view_logits(
            teacher, x, split.mean, split.std, padding, device=device, progress=progress, flip=flip
        )

    shape = (len(split.labels), num_views(padding, flip), teacher.num_classes)
    meta = {
        "dataset": split.dataset,
        "padding": padding,
        "flip": flip,
        "teacher": _sha256s(teacher, "view_cache"),
    }
    table = load_or_compute(path, shape, compute, meta, "view cache")
    return TeacherCache(table, path, padding, flip)


def view_cache_fallback(loss, split: TrainSplit) -> str | None:
    """Why the view cache cannot serve this run exactly (None: it can)."""
    if getattr(loss, "uses_features", False):
        return f"the loss needs teacher features {list(loss.teacher_stages)}"
    if split.pipeline != "device":
        return "data.pipeline=dataloader does not report each image's view (use device)"
    if not split.augment.active:
        return "data.augment is off (no views; teacher_cache=true caches un-augmented logits)"
    if split.mixup_alpha > 0:
        return f"MixUp (data.mixup_alpha={split.mixup_alpha}) mixes views"
    return None


def attach(teacher, loss, datamodule, logits: bool, views: bool, device) -> None:
    """Put the requested cache behind ``teacher`` (its ``predict`` then looks training rows up),
    or say why the online teacher runs instead. Either way the log names the path that runs."""
    if not (logits or views):
        return
    if loss.uses_features:
        what = "teacher_cache" if logits else "view_cache"
        reason = f"the loss needs teacher features {list(loss.teacher_stages)}"
        if logits:
            raise ValueError(f"teacher_cache holds logits only; {reason}: set teacher_cache=false")
        log.warning("%s=true: teacher logits from the online teacher, because %s", what, reason)
        return
    split = datamodule.train_split()
    if logits:
        table = build_logit_cache(teacher, split, device)
        log.info("teacher logits: from the teacher-logit cache %s", table.path)
    else:
        reason = view_cache_fallback(loss, split)
        if reason is not None:
            log.warning(
                "view_cache=true: teacher logits from the online teacher, because %s", reason
            )
            return
        table = build_view_cache(teacher, split, device)
        log.info(
            "teacher logits: from the view cache %s (%d views per image; the loss reads logits only)",
            table.path,
            table.table.shape[1],
        )
    teacher.use_cache(table)
