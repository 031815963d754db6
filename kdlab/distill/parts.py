"""Pieces several losses share: choosing stages by role, reading paired features, embedding
heads, warm-up factors.

Published methods name features by position in their models' feature lists (``feat[1:-1]``,
``feat[-2]``, ``feat[-1]``); kdlab models name their stages instead. ``select_stages`` turns the
roles those positions play into stage names on any pair of kdlab models:

- ``"body"``: every intermediate feature map (all stages but ``stem`` and ``pool``), paired in
  order: the published ``feat[1:-1]``;
- ``"last"``: the last feature map: ``feat[-2]``;
- ``"pool"``: the pooled vector fed to the classifier: ``feat[-1]``;
- an explicit list of names, or ``s:t`` pairs when the two models name a stage differently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.base import KDLoss, parse_stage_pairs
from kdlab.models.base import check_stages, stage_shapes

ROLES = ("body", "last", "pool")
Pairs = tuple[tuple[str, str], ...]
STAGES_HINT = (
    "stages is a role ('body' = every intermediate feature map, 'last' = the last map, "
    "'pool' = the pooled vector), one stage name, or a list of names / 's:t' pairs"
)


def body_stages(model: nn.Module) -> tuple[str, ...]:
    """The intermediate feature maps of ``model`` (its stages but ``stem`` and ``pool``)."""
    return tuple(s for s in getattr(model, "stage_names", ()) if s not in ("stem", "pool"))


def _need_stages(model: nn.Module | None, role: str, method: str) -> nn.Module:
    if model is None or not callable(getattr(model, "forward_stages", None)):
        hint = " (an ensemble of teachers has no single feature map)" if role == "teacher" else ""
        raise ValueError(
            f"{method} needs a single {role} exposing forward_stages and stage_names; got "
            f"{type(model).__name__}{hint}. Use a logit method for ensembles."
        )
    return model


def select_stages(
    student: nn.Module, teacher: nn.Module | None, stages: str | Sequence[str], method: str
) -> tuple[tuple[str, str], ...]:
    """``(student_stage, teacher_stage)`` pairs for a role (``ROLES``) or an explicit list."""
    student = _need_stages(student, "student", method)
    teacher = _need_stages(teacher, "teacher", method)
    s_names, t_names = tuple(student.stage_names), tuple(teacher.stage_names)
    if isinstance(stages, str) and stages in ROLES:
        if stages == "pool":
            missing = [
                r
                for r, names in (("student", s_names), ("teacher", t_names))
                if "pool" not in names
            ]
            if missing:
                raise ValueError(
                    f"{method} needs the pooled feature vector ('pool' stage) of the "
                    f"{' and '.join(missing)}; '{student.arch}' has {list(s_names)}, "
                    f"'{teacher.arch}' has {list(t_names)}. Use a model of the CIFAR-100 "
                    "benchmark zoo, or set the loss's stages explicitly"
                )
            return (("pool", "pool"),)
        s_body, t_body = body_stages(student), body_stages(teacher)
        if not s_body or not t_body:
            raise ValueError(f"{method}: '{student.arch}' or '{teacher.arch}' has no feature maps")
        if stages == "last":
            return ((s_body[-1], t_body[-1]),)
        if len(s_body) != len(t_body):
            raise ValueError(
                f"{method} pairs every intermediate stage, but student '{student.arch}' has "
                f"{list(s_body)} and teacher '{teacher.arch}' has {list(t_body)}; list the pairs "
                "to use as stages=[s_name:t_name, …]"
            )
        return tuple(zip(s_body, t_body, strict=True))
    pairs = parse_stage_pairs(stages)
    for model, names, role in (
        (student, [s for s, _ in pairs], "student"),
        (teacher, [t for _, t in pairs], "teacher"),
    ):
        try:
            check_stages(model, names)
        except ValueError as err:
            raise ValueError(f"{method} {role}: {err}") from None
    return pairs


class Embed(nn.Module):
    """A linear projection to ``dim`` followed by L2 normalisation (CRD's and CC's heads)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def pool_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Average-pool ``x`` [B,C,H,W] down to ``size``; no-op when equal.

    Integer ratios use ``avg_pool2d`` (identical to adaptive pooling there, and its CUDA
    backward is deterministic, unlike ``adaptive_avg_pool2d``'s); other ratios fall back to
    adaptive pooling.
    """
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if h % size[0] == 0 and w % size[1] == 0:
        k = (h // size[0], w // size[1])
        return F.avg_pool2d(x, kernel_size=k, stride=k)
    return F.adaptive_avg_pool2d(x, size)


def stages_argument(stages: object, method: str) -> tuple[str | list[str], Pairs]:
    """Check a ``stages`` argument; return it as stored (role/name or list) and its pairs.

    A role (``ROLES``) has no pairs until ``bind`` sees the two models.
    """
    if isinstance(stages, str):
        if stages in ROLES:
            return stages, ()
        names: list[str] | str = stages
    elif isinstance(stages, Sequence) and all(isinstance(s, str) for s in stages):
        names = [str(s) for s in stages]
    else:
        raise ValueError(f"{method}: stages={stages!r} is not allowed: {STAGES_HINT}")
    try:
        pairs = parse_stage_pairs(names)
    except ValueError as err:
        raise ValueError(f"{method}: {err}; {STAGES_HINT}") from None
    return names, pairs


def resolve_stages(
    stages: str | list[str], student: nn.Module, teacher: nn.Module | None, method: str
) -> Pairs:
    """``select_stages`` with the role hint added when explicit names do not fit the models."""
    try:
        return select_stages(student, teacher, stages, method)
    except ValueError as err:
        if isinstance(stages, str) and stages in ROLES:
            raise
        raise ValueError(f"{err}; {STAGES_HINT}") from None


def probe_shapes(
    student: nn.Module, teacher: nn.Module, pairs: Pairs
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per pair, the ``(student, teacher)`` output shapes without the batch dimension.

    Both models are probed at the student's input size: the system feeds the same batch to both.
    """
    size = int(getattr(student, "input_size", 32))
    s_shapes = stage_shapes(student, input_size=size)
    t_shapes = stage_shapes(teacher, input_size=size)
    return [(tuple(s_shapes[s]), tuple(t_shapes[t])) for s, t in pairs]


def require_maps(shapes: list, pairs: Pairs, method: str) -> None:
    """Raise unless every paired stage output is a (C, H, W) feature map."""
    bad = {
        f"{s}:{t}": (ss, ts)
        for (s, t), (ss, ts) in zip(pairs, shapes, strict=True)
        if len(ss) != 3 or len(ts) != 3
    }
    if bad:
        raise ValueError(
            f"{method} needs (C, H, W) feature maps, but the stage pair(s) {bad} are not maps; "
            "choose map stages (e.g. stages=body or stages=last) instead of the pooled vector"
        )


def pair_name(s: str, t: str) -> str:
    """How a pair is named in logs and in the keys of per-pair modules."""
    return s if s == t else f"{s}:{t}"


def paired_features(
    s_feats: Mapping[str, Tensor] | None,
    t_feats: Mapping[str, Tensor] | None,
    pairs: Pairs,
    method: str,
) -> list[tuple[Tensor, Tensor]]:
    """Per pair, the student feature and the *detached* teacher feature, both in float32."""
    if not pairs:
        raise RuntimeError(f"{method}: call bind(student, teacher) before computing the loss")
    if s_feats is None or t_feats is None:
        raise ValueError(f"{method} needs student and teacher stage outputs for {list(pairs)}")
    missing = [s for s, _ in pairs if s not in s_feats] + [t for _, t in pairs if t not in t_feats]
    if missing:
        raise ValueError(
            f"{method}: stage outputs {missing} are missing (got student {list(s_feats)}, "
            f"teacher {list(t_feats)}); bind the loss to the models that produce them"
        )
    return [(s_feats[s].float(), t_feats[t].detach().float()) for s, t in pairs]


def match_size(fs: Tensor, ft: Tensor, method: str) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two [B, C, H, W] maps to the other's spatial size."""
    if fs.dim() != 4 or ft.dim() != 4:
        raise ValueError(
            f"{method} needs [B, C, H, W] feature maps, got {tuple(fs.shape)} and {tuple(ft.shape)}"
        )
    size = (min(fs.shape[2], ft.shape[2]), min(fs.shape[3], ft.shape[3]))
    return pool_to(fs, size), pool_to(ft, size)


def stage_parts(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-pair values as logged parts (only when there is more than one pair)."""
    if len(terms) < 2:
        return {}
    return {k.replace(":", "_"): v.detach() for k, v in terms.items()}


def warmup_factor(epoch: int, warmup: int) -> float:
    """``min((epoch + 1)/warmup, 1)`` for kdlab's 0-based ``epoch`` (1 when ``warmup`` is 0).

    This is the published ``min(epoch/warmup, 1)`` of code that counts epochs from 1.
    """
    if warmup <= 0:
        return 1.0
    return min((int(epoch) + 1) / warmup, 1.0)


def hard_classes(targets: Tensor) -> Tensor:
    """Class indices [B] from class indices or soft targets [B, C] (MixUp: the argmax)."""
    return targets.argmax(dim=-1) if targets.ndim == 2 else targets.long()


class StagePairLoss(KDLoss):
    """A loss summed over stage pairs, ``L = Σ_pairs pair_loss(pair, f_s, f_t)``: the common
    body of the feature methods (stage choice, shape probing, float32 features with the
    teacher's detached, one logged part per pair when there are several).

    Subclasses set ``method`` (its name in messages) and ``needs_maps`` (refuse the pooled
    vector), build their trainable parts in ``bind`` after ``resolve``, say in ``bound`` whether
    those exist, and implement ``pair_loss``.
    """

    method = "loss"
    needs_maps = False

    def __init__(self, stages: str | Sequence[str]) -> None:
        super().__init__()
        self.stages, self.stage_pairs = stages_argument(stages, self.method)

    def resolve(self, student: nn.Module, teacher: nn.Module | None) -> list:
        """Set ``stage_pairs`` for these models; the ``(student, teacher)`` shape per pair."""
        self.stage_pairs = resolve_stages(self.stages, student, teacher, self.method)
        shapes = probe_shapes(student, teacher, self.stage_pairs)
        if self.needs_maps:
            require_maps(shapes, self.stage_pairs, self.method)
        return shapes

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.resolve(student, teacher)

    def bound(self) -> bool:
        """Whether ``bind`` built what ``pair_loss`` needs."""
        return True

    def pair_loss(self, name: str, f_s: Tensor, f_t: Tensor) -> Tensor:
        raise NotImplementedError

    def pair_terms(self, s_feats, t_feats) -> dict[str, Tensor]:
        """``{pair name: pair_loss}`` in float32 with autocast off."""
        if not self.bound():
            raise RuntimeError(
                f"{self.method}: call bind(student, teacher) before computing the loss"
            )
        feats = paired_features(s_feats, t_feats, self.stage_pairs, self.method)
        with torch.autocast(feats[0][0].device.type, enabled=False):
            return {
                pair_name(s, t): self.pair_loss(pair_name(s, t), fs, ft)
                for (s, t), (fs, ft) in zip(self.stage_pairs, feats, strict=True)
            }

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        terms = self.pair_terms(s_feats, t_feats)
        return {"loss": torch.stack(list(terms.values())).sum(), **stage_parts(terms)}
