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
    training: Mapping[str, Any] | None = None,
    student_init: Mapping[str, Any] | None = None,
    cka: Mapping[str, Any] | None = None,
    caches: Mapping[str, bool] | None = None,
) -> L.LightningModule:
    """A ``Distiller`` when ``loss`` is given (it then needs ``teacher``), else a ``Classifier``.

    ``training`` holds how the student is trained beyond its optimiser (``label_smoothing``,
    ``grad_clip``, ``clip_scope``, ``lr_scale_factor``); ``student_init.lambda`` starts the
    student at ``λ·θ_teacher + (1 − λ)·θ_random`` and scales the learning rate by ``1 − λ``
    (init proximity); ``caches`` asks for teacher-logit tables (``logits``: un-augmented,
    ``views``: every crop/flip view). ``scheduler`` may be an empty mapping (``scheduler=none``:
    constant learning rate).
    """
    training = dict(training or {})
    unknown = set(training) - {"label_smoothing", "grad_clip", "clip_scope", "lr_scale_factor"}
    if unknown:
        raise ValueError(f"system.training has unknown settings {sorted(unknown)}")
    init = dict(student_init or {})
    lam = None if init.get("lambda") is None else validate_lambda(init["lambda"])
    caches = {"logits": False, "views": False} | dict(caches or {})
    common = dict(
        optimizer=optimizer,
        scheduler=scheduler if callable(scheduler) else None,
        grad_clip=training.get("grad_clip"),
        lr_scale=training.get("lr_scale_factor", 1.0) * lr_scale(lam),
    )
    if loss is None:
        if lam is not None:
            raise ValueError("student_init.lambda needs a teacher: use a distillation experiment")
        if caches["logits"] or caches["views"]:
            raise ValueError("teacher_cache/view_cache need a distillation run (a teacher)")
        smoothing = training.get("label_smoothing", 0.0)
        return Classifier(net, criterion=CrossEntropy(smoothing), **common)
    if teacher is None:
        raise ValueError("distill is set but no teacher: add teacher=<arch> (e.g. teacher=r50)")
    if lam is not None:
        if len(teacher.members) != 1:
            raise ValueError("student_init.lambda needs a single teacher, not an ensemble")
        interpolate_init(net, teacher.members[0], lam)
    cka = dict(cka or {})
    stages: Sequence[str] | None = cka.get("stages")
    return Distiller(
        net,
        teacher,
        loss,
        clip_scope=training.get("clip_scope", "all"),
        cka=bool(cka.get("enabled")),
        cka_stages=list(stages) if stages is not None else None,
        cka_reduce=cka.get("reduce", "gap"),
        logit_cache=bool(caches["logits"]),
        view_cache=bool(caches["views"]),
        **common,
    )
