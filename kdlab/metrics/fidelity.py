"""Train-set fidelity: how closely the student matches its teacher on the data it learned from.

The replication (the "Does KD really work?" replication) reports top-1 agreement and KL(teacher ‖ student) on the training
set as well as the test set: low *train* agreement shows that the student fails to fit the
teacher even where it was trained to, an optimisation rather than a generalisation problem.
The images are the un-augmented training split (``datamodule.loader("train")``), so the value
does not depend on random crops. Cost: one forward pass of student and teacher over the
training split (about a third of a training epoch's compute), in float32 and eval mode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.regression import KLDivergence

from kdlab.metrics.classification import PercentAccuracy


@torch.no_grad()
def evaluate_fidelity(
    student: nn.Module,
    teacher: nn.Module,
    loader,
    device: torch.device | str = "cpu",
    teacher_logits: Tensor | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Agreement (%) and KL(teacher ‖ student) (nats, mean per image) over ``loader``.

    Both models run in eval mode; their previous mode and device are restored. When
    ``teacher_logits`` (the teacher-logit cache, in the loader's order) is given, the teacher is
    not run at all. ``max_batches`` stops early (smoke runs that limit their training batches).
    """
    device = torch.device(device)
    s_state = (student.training, next(student.parameters()).device)
    t_state = (teacher.training, next(teacher.parameters()).device)
    student.eval().to(device)
    if teacher_logits is None:
        teacher.eval().to(device)
    num_classes = student.num_classes
    # one process computes this over the whole split: no sync with other DDP processes
    agreement = PercentAccuracy(num_classes, sync_on_compute=False).to(device)
    kl = KLDivergence(log_prob=True, reduction="mean", sync_on_compute=False).to(device)
    seen = 0
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x = batch.x.to(device)
            s = student(x).float()
            if teacher_logits is None:
                t = teacher(x).float()
            else:
                t = teacher_logits[seen : seen + len(x)].to(device).float()
            seen += len(x)
            agreement.update(s, t.argmax(-1))
            kl.update(t.log_softmax(-1), s.log_softmax(-1))
    finally:
        student.train(s_state[0]).to(s_state[1])
        teacher.train(t_state[0]).to(t_state[1])
    if teacher_logits is not None and max_batches is None and seen != len(teacher_logits):
        raise ValueError(f"teacher_logits has {len(teacher_logits)} rows for {seen} images")
    return {"agreement": float(agreement.compute()), "kl": float(kl.compute())}


def cka_stage_pairs(
    student: nn.Module, teacher: nn.Module, stages: list[str] | tuple[str, ...] | None = None
) -> list[tuple[str, str]]:
    """``(student_stage, teacher_stage)`` pairs compared by per-stage CKA.

    ``stages=None`` pairs the stage names both models have (``layer1``–``layer4`` for two
    ResNets); entries ``"name"`` name a stage of both, ``"s_name:t_name"`` pairs different names
    (e.g. ``layer4:blocks_11`` for a ResNet student of a ViT teacher). Unknown names and
    teachers without stage outputs (ensembles) raise ``ValueError``.
    """
    if not hasattr(teacher, "forward_stages") or not getattr(teacher, "stage_names", ()):
        raise ValueError(
            f"cka.enabled=true needs a single teacher with stage outputs; '{teacher.label}' has "
            "none (an ensemble averages logits, not features). Set cka.enabled=false"
        )
    s_names, t_names = tuple(student.stage_names), tuple(teacher.stage_names)
    if stages is None:
        pairs = [(n, n) for n in s_names if n in t_names]
        if not pairs:
            raise ValueError(
                f"student '{student.arch}' stages {list(s_names)} and teacher '{teacher.arch}' "
                f"stages {list(t_names)} share no name; list pairs as cka.stages=[s_name:t_name]"
            )
        return pairs
    pairs = [tuple(str(e).split(":", 1)) if ":" in str(e) else (str(e), str(e)) for e in stages]
    for s, t in pairs:
        if s not in s_names or t not in t_names:
            raise ValueError(
                f"unknown CKA stage pair {s}:{t}; student '{student.arch}' stages: "
                f"{list(s_names)}, teacher '{teacher.arch}' stages: {list(t_names)}"
            )
    return pairs  # type: ignore[return-value]
