"""Build a run's LightningModule from its parts (``conf/system/default.yaml``, ``_partial_``).

Hydra instantiates the pieces (optimiser and scheduler factories, the KD loss, the frozen
teacher) in config order, so a bad α/T/β is reported before a teacher checkpoint is even
opened; ``kdlab.train`` then calls the partial with the network it built under ``init_seed``.
No KD loss means plain cross-entropy training (teachers, baselines): a ``Classifier``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
from torch import nn

from kdlab.distill.base import CrossEntropy, KDLoss
from kdlab.models.init import interpolate_init, lr_scale, validate_lambda
from kdlab.systems.classifier import Classifier
from kdlab.systems.distiller import Distiller


def build_system(
    net: nn.Module,
    optimizer: Callable,
    scheduler: Callable | Mapping | None = None,
    loss: KDLoss | None = None,
    teacher: nn.Module | None = None,
    label_smoothing: float = 0.0,
    grad_clip: float | None = None,
    clip_scope: str = "all",
    lr_scale_factor: float = 1.0,
    init_lambda: float | None = None,
    cka: Mapping[str, Any] | None = None,
    logit_cache: bool = False,
    view_cache: bool = False,
    channels_last: bool | str = "auto",
    compile: bool = False,
) -> L.LightningModule:
    """A ``Distiller`` when ``loss`` is given (it then needs ``teacher``), else a ``Classifier``.

    ``init_lambda`` starts the student at ``λ·θ_teacher + (1 − λ)·θ_random`` and scales the
    learning rate by ``1 − λ`` (init proximity); ``scheduler`` may be an empty mapping
    (``scheduler=none``: constant learning rate).
    """
    lam = None if init_lambda is None else validate_lambda(init_lambda)
    common = dict(
        optimizer=optimizer,
        scheduler=scheduler if callable(scheduler) else None,
        grad_clip=grad_clip,
        lr_scale=lr_scale_factor * lr_scale(lam),
        channels_last=channels_last,
        compile=compile,
    )
    if loss is None:
        if lam is not None:
            raise ValueError("student_init.lambda needs a teacher: use a distillation experiment")
        if logit_cache or view_cache:
            raise ValueError("teacher_cache/view_cache need a distillation run (a teacher)")
        return Classifier(net, criterion=CrossEntropy(label_smoothing), **common)
    if teacher is None:
        raise ValueError("distill is set but no teacher: add teacher=<arch> (e.g. teacher=r50)")
    if lam is not None:
        if len(teacher.members) != 1:
            raise ValueError("student_init.lambda needs a single teacher, not an ensemble")
        interpolate_init(net, teacher.members[0], lam)
    cka = dict(cka or {})
    stages: Sequence[str] | None = cka.get("stages")
    return Distiller(
        net, teacher, loss, clip_scope=clip_scope, cka=bool(cka.get("enabled")),
        cka_stages=list(stages) if stages is not None else None,
        cka_reduce=cka.get("reduce", "gap"), logit_cache=logit_cache, view_cache=view_cache,
        **common,
    )  # fmt: skip
