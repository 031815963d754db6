"""Knowledge review, ReviewKD (Chen et al., CVPR 2021).

The student's features of *all* levels together predict each teacher feature: a level's
student feature is fused with what the deeper levels already produced ("reviewing"), so deep
student knowledge guides shallow teacher targets. Levels are ordered shallow → deep; the
deepest one is the pooled vector, read as a 1×1 map.

- ABF (attention-based fusion), one per level: a 1×1 conv + BN maps the student feature to
  ``mid`` channels; except at the deepest level, the residual coming from the level below is
  resized (nearest) to this level's student size, and a 1×1 conv + sigmoid on both predicts two
  per-pixel weights: ``x ← a₀·x + a₁·residual``. The result is resized (nearest) to the
  teacher's size at this level, passed on as the residual of the next shallower level, and a
  3×3 conv + BN maps it to the teacher's channels: the level's output.
- HCL (hierarchical context loss), per level: the MSE between output and teacher feature plus
  the MSEs of both average-pooled to 4×4, 2×2 and 1×1 (only pyramid sizes smaller than the
  map), weighted 1, ½, ¼, ⅛ and divided by the sum of the weights used; summed over levels.

``L_review = w(e)·Σ_levels HCL``, with the linear warm-up ``w(e) = min((e + 1)/warmup, 1)`` for
kdlab's 0-based epoch ``e``: the same factor as mdistiller's ``min(epoch/warmup, 1)`` with its
epochs counted from 1 (the original ReviewKD code counts from 0, one epoch later).

Channels and sizes come from the probed stage shapes, so any pair works whose student and
teacher have the same number of levels: ``in`` = student channels, ``out`` = teacher channels,
``mid = min(max_mid_channels, student channels of the deepest level)``, output size = teacher
size. On the benchmark pairs this gives exactly the published per-architecture settings
(ReviewKD ``build_review_kd``, mdistiller ``REVIEWKD.IN_CHANNELS/OUT_CHANNELS/SHAPES/
OUT_SHAPES``), e.g. resnet8x4 ← resnet32x4: in = out = (64, 128, 256, 256), sizes 32/16/8/1,
mid 256; shufflev1 ← resnet32x4: in (240, 480, 960, 960), out (64, 128, 256, 256), mid 512.

Features, as published: the teacher's pre-activation stage outputs (``teacher_preact``) and the
student's post-activation ones (mdistiller ``STU_PREACT = False``).
The ABFs and the loss run in float32 with autocast disabled; the pyramid pooling uses
``avg_pool2d`` for integer ratios (deterministic backward on CUDA).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.base import KDLoss, validate_warmup
from kdlab.distill.parts import ROLES, pool_to, select_stages, warmup_factor
from kdlab.models.base import stage_shapes

PYRAMID = (4, 2, 1)  # HCL's pooled sizes, weighted ½, ¼, ⅛ of the full-resolution term


class ABF(nn.Module):
    """Attention-based fusion of one level (see the module doc).

    Args:
        in_channels: student channels of this level.
        mid_channels: channels of the fused (residual) maps shared by all levels.
        out_channels: teacher channels of this level.
        fuse: whether a residual from a deeper level is fused in (False at the deepest level).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_channels),
        )
        self.expand = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.attention = (
            nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid())
            if fuse
            else None
        )
        # the published initialisation of both convs (uniform Kaiming with a = 1)
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.expand[0].weight, a=1)

    def forward(
        self, x: Tensor, residual: Tensor | None, out_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """``(output, residual for the next shallower level)`` of student feature ``x``."""
        x = self.reduce(x)
        if self.attention is not None:
            if residual is None:
                raise ValueError("a fusing ABF level needs the residual of the deeper level")
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            a = self.attention(torch.cat([x, residual], dim=1))
            x = x * a[:, 0:1] + residual * a[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.expand(x), x


def hcl(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Hierarchical context loss summed over levels (see the module doc)."""
    total = student[0].new_zeros(())
    for fs, ft in zip(student, teacher, strict=True):
        h, w = fs.shape[-2:]
        loss, weight, weights = F.mse_loss(fs, ft), 1.0, 1.0
        for size in PYRAMID:
            if size >= h:
                continue
            weight /= 2.0
            pooled = (min(size, h), min(size, w))
            loss = loss + weight * F.mse_loss(pool_to(fs, pooled), pool_to(ft, pooled))
            weights += weight
        total = total + loss / weights
    return total


def _as_map(x: Tensor) -> Tensor:
    """A stage output as a [B, C, H, W] map (a pooled vector [B, C] becomes [B, C, 1, 1])."""
    return x[:, :, None, None] if x.ndim == 2 else x


class ReviewKD(KDLoss):
    """Knowledge review: ABF fusion of all student levels + HCL against the teacher's.

    Args:
        stages: the levels, shallow → deep: roles (``"body"`` = every intermediate stage,
            ``"last"``, ``"pool"``) and/or stage names or ``"s:t"`` pairs, expanded in order.
            Default ``("body", "pool")``: the published levels (``feat[1:-1]`` + pooled vector).
        warmup: epochs of linear warm-up (published: 20; 0 = none).
        max_mid_channels: upper bound of the fused channels (published: 512).

    Trainable: ``abfs`` (one ABF per level, shallow → deep, built in ``bind``).
    Returns ``{"loss", "hcl"}``: ``hcl`` is the summed HCL before the warm-up factor.
    """

    short_names: dict[str, str] = {}
    teacher_preact = True

    def __init__(
        self,
        stages: str | Sequence[str] = ("body", "pool"),
        warmup: int = 20,
        max_mid_channels: int = 512,
    ) -> None:
        super().__init__()
        items = (stages,) if isinstance(stages, str) else tuple(str(s) for s in stages)
        if not items:
            raise ValueError(
                "stages=[] is empty: ReviewKD needs levels, e.g. stages=[body, pool] (published)"
            )
        self.stages = stages if isinstance(stages, str) else items
        self.warmup = validate_warmup(warmup)
        bad = (
            isinstance(max_mid_channels, bool)
            or not isinstance(max_mid_channels, int | float)
            or not math.isfinite(max_mid_channels)
            or not float(max_mid_channels).is_integer()
            or max_mid_channels < 1
        )
        if bad:
            raise ValueError(
                f"max_mid_channels={max_mid_channels!r} is not allowed: it caps the channels of "
                "the fused maps and must be an integer >= 1; pass e.g. max_mid_channels=512"
            )
        self.max_mid_channels = int(max_mid_channels)
        self.abfs = nn.ModuleList()

    def _levels(self, student: nn.Module, teacher: nn.Module | None):
        items = (self.stages,) if isinstance(self.stages, str) else self.stages
        pairs: list[tuple[str, str]] = []
        for item in items:
            chosen = item if item in ROLES else [item]
            pairs += select_stages(student, teacher, chosen, "ReviewKD")
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"stages={list(items)} names a level twice: {pairs}")
        return tuple(pairs)

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Resolve the levels and build one ABF per level from the probed shapes."""
        pairs = self._levels(student, teacher)
        size = int(getattr(student, "input_size", 32))
        s_shapes, t_shapes = stage_shapes(student, size), stage_shapes(teacher, size)
        shapes = []
        for s, t in pairs:
            cs, ct = s_shapes[s], t_shapes[t]
            if len(cs) not in (1, 3) or len(ct) not in (1, 3):
                raise ValueError(
                    f"ReviewKD needs feature maps (C, H, W) or pooled vectors (C,); stage pair "
                    f"{s}:{t} has shapes {cs} and {ct}"
                )
            shapes.append((cs[0], ct[0]))
        mid = min(self.max_mid_channels, shapes[-1][0])
        last = len(shapes) - 1
        self.abfs = nn.ModuleList(
            ABF(cs, mid, ct, fuse=i < last) for i, (cs, ct) in enumerate(shapes)
        )
        self.stage_pairs = pairs

    def fuse(self, s_maps: Sequence[Tensor], out_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """The ABF outputs of all levels (shallow → deep), computed deep → shallow."""
        outs: list[Tensor] = [s_maps[0]] * len(s_maps)
        residual = None
        for i in reversed(range(len(s_maps))):
            outs[i], residual = self.abfs[i](s_maps[i], residual, out_sizes[i])
        return outs

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        if not len(self.abfs):
            raise RuntimeError("ReviewKD.bind(student, teacher) must be called before use")
        if s_feats is None or t_feats is None:
            raise ValueError(f"ReviewKD needs student and teacher features for {self.stage_pairs}")
        s_maps = [_as_map(s_feats[s]).float() for s, _ in self.stage_pairs]
        t_maps = [_as_map(t_feats[t]).detach().float() for _, t in self.stage_pairs]
        with torch.autocast(s_maps[0].device.type, enabled=False):
            outs = self.fuse(s_maps, [tuple(t.shape[-2:]) for t in t_maps])
            review = hcl(outs, t_maps)
            loss = warmup_factor(self.epoch, self.warmup) * review
        return {"loss": loss, "hcl": review.detach()}

    def extra_repr(self) -> str:
        return (
            f"stages={self.stages!r}, warmup={self.warmup}, "
            f"max_mid_channels={self.max_mid_channels}"
        )
