"""Pieces several losses share: choosing stages by role, and embedding heads.

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

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.base import parse_stage_pairs
from kdlab.models.base import check_stages

ROLES = ("body", "last", "pool")


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
            missing = [r for r, names in (("student", s_names), ("teacher", t_names))
                       if "pool" not in names]  # fmt: skip
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
    for model, names, role in ((student, [s for s, _ in pairs], "student"),
                               (teacher, [t for _, t in pairs], "teacher")):  # fmt: skip
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
