"""Exact teacher cache under augmentation: logits of every crop/flip view, computed once.

With the standard augmentation (zero-padded crop with ``padding`` = 4 and a horizontal flip)
an image has only ``(2p+1)² · 2`` = 162 distinct views. Their teacher (or ensemble) logits are
computed once and stored in fp16 ([N, 162, C]: 146 MB for CIFAR-10's 45k split, 1.46 GB for
CIFAR-100); a logit-KD student then looks up the logits of the exact view it trains on,
so every (α, T, seed) run of a sweep shares one teacher pass instead of running the teacher
every epoch. The device pipeline knows each batch's views (``DeviceLoader(return_views=True)``
yields ``(x, y, idx, view_id)``), and views are rendered with the same ``crop_flip_views``
the pipeline uses, so a cached run equals an online run up to fp16 rounding of the logits.

The file is ``<first teacher ckpt dir>/viewcache-<key>.pt``; ``key`` hashes every member's
sha256, the dataset, the padding, the normalisation and the training split (indices, images,
labels): a retrained teacher or another split gets a new file, never stale logits.

Only what the cache can answer exactly is served by it: MixUp, ``augment=false``, feature KD
and the DataLoader pipeline (its per-sample transforms do not report their views) fall back to
the online teacher with a log line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdlab.data.augment import crop_flip_views, normalize
from kdlab.distill import logit_cache
from kdlab.distill.logit_cache import load_or_compute

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


def cache_key(sha256s: list[str], datamodule, padding: int = 4) -> str:
    """The teacher-logit cache's key (``logit_cache.cache_key``) with the padding added."""
    return logit_cache.cache_key(sha256s, datamodule, padding)


def cache_path(teacher, datamodule, padding: int = 4) -> Path:
    """``<dir of the first teacher checkpoint>/viewcache-<key>.pt``."""
    if not getattr(teacher, "sources", None):
        raise ValueError("view_cache needs a teacher loaded from a checkpoint (no sources)")
    key = cache_key([s["sha256"] for s in teacher.sources], datamodule, padding)
    return Path(teacher.sources[0]["path"]).parent / f"viewcache-{key}.pt"


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
) -> Tensor:
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


class ViewLogitCache(nn.Module):
    """``lookup(idx, view)`` → float32 teacher logits of image ``idx`` seen as ``view``.

    ``views`` holds ``[N, V, C]`` fp16; ``logits`` is the un-augmented image's row ``[N, C]``
    (the centre crop without flip *is* the plain image), the interface of the un-augmented
    ``TeacherLogitCache`` that train-set fidelity reads.
    """

    def __init__(self, views: Tensor, path: Path | None = None, padding: int = 4) -> None:
        super().__init__()
        self.register_buffer("views", views.half(), persistent=False)
        self.path, self.padding = path, padding

    @property
    def logits(self) -> Tensor:
        p = self.padding
        centre = view_id(torch.tensor(p), torch.tensor(p), torch.tensor(False), p)
        return self.views[:, int(centre)].float()

    def lookup(self, idx: Tensor, view: Tensor | None = None) -> Tensor:
        if view is None:
            raise ValueError("the view cache needs each image's view id: use data.pipeline=device")
        if self.views.device != idx.device:
            self.views = self.views.to(idx.device)
        return self.views[idx, view].float()

    def __len__(self) -> int:
        return self.views.shape[0]


def build_view_cache(
    teacher, datamodule, device: torch.device | str = "cpu", padding: int = 4, progress=True
) -> ViewLogitCache:
    """Load ``viewcache-<key>.pt`` for (teacher, data) or compute and store it."""
    if not datamodule.splits:
        datamodule.setup()
    path = cache_path(teacher, datamodule, padding)
    images, labels = datamodule.splits["train"]

    def compute() -> Tensor:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        return compute_view_logits(
            teacher, x, datamodule.mean, datamodule.std, padding, device=device, progress=progress
        )

    shape = (len(labels), num_views(padding), teacher.num_classes)  # [N, V, C] views
    meta = {
        "dataset": datamodule.name,
        "padding": padding,
        "teacher": [s["sha256"] for s in teacher.sources],
    }
    logits = load_or_compute(path, shape, compute, meta, "view cache")
    return ViewLogitCache(logits, path, padding)


def fallback_reason(system, datamodule) -> str | None:
    """Why the view cache cannot serve this run exactly (None: it can)."""
    if not getattr(system, "has_teacher", False):
        return "no teacher (not a distillation run)"
    if system.criterion.stages:
        return f"the loss needs teacher features {list(system.criterion.stages)}"
    if datamodule.pipeline != "device":
        return "data.pipeline=dataloader does not report each image's view (use device)"
    if not datamodule.augment:
        return "data.augment=false (no views; teacher_cache=true caches un-augmented logits)"
    if datamodule.mixup_alpha > 0:
        return f"MixUp (data.mixup_alpha={datamodule.mixup_alpha}) mixes views"
    return None


def attach_view_cache(system, datamodule, device: torch.device | str = "cpu") -> bool:
    """Use the view cache for ``system`` when exact; else log why the teacher runs online."""
    reason = fallback_reason(system, datamodule)
    if reason is not None:
        log.warning("view_cache=true: using the online teacher instead, because %s", reason)
        return False
    system.use_teacher_cache(build_view_cache(system.teacher, datamodule, device))
    datamodule.return_views = True
    return True
