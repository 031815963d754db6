"""The distillation system: a student trained against a frozen teacher with a KD loss.

The system never branches on the method: the loss module says which stage outputs it needs
(``criterion.stages``) and returns its named terms. The teacher is a ``FrozenTeacher``: eval
mode for the whole run, outside the optimiser, outside saved hyper-parameters, and outside the
checkpoint (its weights live in the teacher store; the checkpoint records its hash instead).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

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
    ) -> None:
        if clip_scope not in ("all", "student"):
            raise ValueError(
                f"clip_scope must be 'all' (student + projection layers, the correct setting) or "
                f"'student' (the published bug ablation), got {clip_scope!r}"
            )
        super().__init__(net, optimizer, scheduler, criterion, grad_clip, lr_scale)
        self.teacher = teacher
        self.clip_scope = clip_scope
        self.criterion.bind(net, teacher)  # builds projections before the optimiser exists

    def compute_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        stages = self.criterion.stages
        if stages:
            logits, s_feats = self.net.forward_stages(x)
            with torch.no_grad():
                t_logits, t_feats = self.teacher.forward_stages(x)
            return logits, self.criterion(logits, t_logits, y, s_feats, t_feats)
        logits = self.net(x)
        with torch.no_grad():
            t_logits = self.teacher(x)
        return logits, self.criterion(logits, t_logits, y)

    @torch.no_grad()
    def eval_teacher_logits(self, x: Tensor) -> Tensor:
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
