"""The distillation system: a student trained against a frozen teacher with a KD loss.

The system never branches on the method: the loss module says which stage outputs it needs
(``criterion.stages``) and returns its named terms. The teacher is a ``FrozenTeacher``: eval
mode for the whole run, outside the optimiser, outside saved hyper-parameters, and outside the
checkpoint (its weights live in the teacher store; the checkpoint records its hash instead).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from kdlab.distill.ensemble import ensemble_logits
from kdlab.distill.fast import teacher_forward
from kdlab.metrics.cka import LinearCKA
from kdlab.metrics.classification import PercentAccuracy
from kdlab.metrics.fidelity import cka_stage_pairs
from kdlab.systems.classifier import Classifier


class Distiller(Classifier):
    """Student ``net`` + frozen ``teacher`` + ``criterion`` (a ``KDLoss``)."""

    has_teacher = True

    def __init__(
        self,
        net: nn.Module,
        teacher: nn.Module,
        criterion: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., object] | None = None,
        grad_clip: float | None = None,
        clip_scope: str = "all",
        lr_scale: float = 1.0,
        cka: bool = False,
        cka_stages: Sequence[str] | None = None,
        cka_reduce: str = "gap",
    ) -> None:
        if clip_scope not in ("all", "student"):
            raise ValueError(
                f"clip_scope must be 'all' (student + projection layers, the correct setting) or "
                f"'student' (the published bug ablation), got {clip_scope!r}"
            )
        super().__init__(net, optimizer, scheduler, criterion, grad_clip, lr_scale)
        self.teacher = teacher
        self.clip_scope = clip_scope
        # an ensemble's members are also scored on test, so results show what was averaged
        members = len(getattr(teacher, "members", ()))
        self.member_acc = nn.ModuleList(
            PercentAccuracy(net.num_classes) for _ in range(members if members > 1 else 0)
        )
        self.criterion.bind(net, teacher)  # builds projections before the optimiser exists
        # optional per-stage linear CKA on test (an extra forward of both nets per test batch)
        self.cka_pairs = cka_stage_pairs(net, teacher, cka_stages) if cka else []
        self.cka_metrics = nn.ModuleDict(
            {_cka_name(s, t): LinearCKA(cka_reduce) for s, t in self.cka_pairs}
        )
        self.teacher_cache: nn.Module | None = None  # kdlab.distill.logit_cache (use_teacher_cache)

    def use_teacher_cache(self, cache: nn.Module) -> None:
        """Take training-batch teacher logits from ``cache.lookup(idx)`` instead of the teacher."""
        if self.criterion.stages:
            raise ValueError(
                "teacher_cache holds logits only; this loss needs teacher features "
                f"{list(self.criterion.stages)}: set teacher_cache=false"
            )
        self.teacher_cache = cache

    def compute_losses(
        self, x: Tensor, y: Tensor, idx: Tensor | None = None, view: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        # the teacher runs under inference_mode (kdlab.distill.fast.teacher_forward)
        stages = self.criterion.stages
        if stages:
            logits, s_feats = self.net.forward_stages(x)
            t_logits, t_feats = teacher_forward(self.teacher, x, stages=True)
            return logits, self.criterion(logits, t_logits, y, s_feats, t_feats)
        logits = self.net(x)
        if self.teacher_cache is not None:
            if idx is None:
                raise ValueError("teacher_cache is set but training batches carry no indices")
            # a view cache (kdlab.distill.view_cache) also needs each image's view id
            t_logits = self.teacher_cache.lookup(idx) if view is None else (
                self.teacher_cache.lookup(idx, view)
            )  # fmt: skip
        else:
            t_logits = teacher_forward(self.teacher, x)
        return logits, self.criterion(logits, t_logits, y)

    def test_step(self, batch, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        if not self.cka_pairs:
            return
        _, s_feats = self.net.forward_stages(batch[0])
        _, t_feats = self.teacher.forward_stages(batch[0])
        for (s, t), (name, metric) in zip(self.cka_pairs, self.cka_metrics.items(), strict=True):
            metric.update(s_feats[s], t_feats[t])
            self.log(f"{self.test_prefix}/{name}", metric, on_step=False, on_epoch=True)

    @torch.no_grad()
    def eval_teacher_logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if len(self.member_acc) and y is not None and self.trainer.testing:
            member_logits = self.teacher.forward_members(x)
            for i, (metric, logits) in enumerate(zip(self.member_acc, member_logits, strict=True)):
                metric.update(logits, y)
                self.log(
                    f"{self.test_prefix}/teacher_acc_m{i}", metric, on_step=False, on_epoch=True
                )
            return ensemble_logits(member_logits)
        return self.teacher(x)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [
            p
            for n, p in self.named_parameters()
            if p.requires_grad and not n.startswith("teacher.")
        ]

    def clip_parameters(self) -> list[nn.Parameter]:
        if self.clip_scope == "student":  # reproduces the bug: projections escape clipping
            return [p for p in self.net.parameters() if p.requires_grad]
        return self.trainable_parameters()

    # -- the teacher stays out of checkpoints ---------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for k, v in self.teacher.state_dict().items():
            state.setdefault(f"teacher.{k}", v)


def _cka_name(s: str, t: str) -> str:
    """``cka_<stage>`` (logged as ``test/cka_<stage>``), ``cka_<s>_<t>`` for differing names."""
    return f"cka_{s}" if s == t else f"cka_{s}_{t}"
