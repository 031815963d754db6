"""Curriculum temperature, CTKD (Li et al., "Curriculum Temperature for Knowledge Distillation",
AAAI 2023), as a modifier of any logit loss.

CTKD replaces the fixed temperature of a logit loss by a learned one, trained *adversarially*:
the student minimises the distillation loss, the temperature maximises it, through a gradient
reversal layer (identity forward, gradient × −λ backward). The curriculum raises λ from
``lambda_min`` to ``lambda_max`` over the first ``ramp`` epochs with a cosine, so the task gets
harder as the student gets better::

    λ(e) = λ_min + (λ_max − λ_min)·(1 − cos(π·min(e + 1, ramp)/ramp))/2     (kdlab's 0-based e)
    τ    = t_start + t_range·sigmoid(GRL_λ(θ))
    L    = mean_i base.sample_losses(z_s, z_t, y; τ)_i

``θ`` is one learnable scalar (``mode=global``) or the output of a two-layer MLP on the
concatenated (detached) teacher and student logits of each sample (``mode=instance``, one τ per
sample). ``base`` is any ``LogitLoss`` (KD, DKD, NKD, WTTM, …) with its own settings, including
``standardize`` (logit standardisation happens before τ). θ lives in this module, so the
Distiller optimises it with the student (same optimiser, learning rate and weight decay, as
published).

Public code read to check the behaviour: zhengli97/CTKD (commit
7d5252241259ae70d38a832371fed9697d15fc14): ``models/temp_global.py`` (``Global_T``: θ initialised
to 1; the reversal multiplies the gradient by the schedule's value), ``train_student.py``
(``CosineDecay(max=0, min=−1, loops=10)``, so the multiplier goes 0 → −1 over 10 epochs, counted
from 1; ``t_start`` 1, ``t_end`` 20: τ = 1 + 20·sigmoid(θ); θ in the SGD optimiser with the
student), ``helper/loops.py`` (the learned τ replaces ``kd_T`` in KD and DKD). kdlab's λ is the
magnitude of that multiplier (λ(e) here equals −value at their epoch e + 1). Deviations: the
instance-wise module is not in that repository; kdlab's follows the paper's description (MLP on
both logit rows, hidden width ``hidden``) and detaches its inputs so that its reversed gradient
reaches only its own parameters.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.distill.base import KDLoss, check_int, check_positive
from kdlab.distill.logit_loss import LogitLoss, check_pair

MODES = ("global", "instance")


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``−scale``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: Tensor, scale: float) -> Tensor:
    """``x`` whose gradient is multiplied by ``−scale`` on the way back (gradient reversal)."""
    return _ReverseGradient.apply(x, float(scale))


def cosine_ramp(epoch: int, ramp: int, low: float, high: float) -> float:
    """``low → high`` over epochs ``0 … ramp − 1`` (kdlab's 0-based epochs) by a half cosine."""
    step = min(int(epoch) + 1, ramp)
    return low + (high - low) * (1.0 - math.cos(math.pi * step / ramp)) / 2.0


class CTKD(KDLoss):
    """A logit loss at a learned, adversarial, curriculum-scheduled temperature.

    Args:
        base: the wrapped logit loss (a ``LogitLoss``); its own temperature is unused.
        mode: ``global`` (one learned τ) or ``instance`` (one τ per sample from an MLP).
        t_start: the lowest temperature (published 1).
        t_range: τ ∈ (t_start, t_start + t_range) (published ``t_end`` 20).
        init: initial θ of the global temperature (published 1: τ ≈ 15.6).
        lambda_min, lambda_max: the reversal strength at the start and end of the curriculum
            (published 0 and 1).
        ramp: epochs of the cosine curriculum (published 10).
        hidden: hidden width of the instance-wise MLP.

    Returns ``{"loss", "temperature", "lambda", **the base's parts}`` (mean τ of the batch).
    """

    short_names = {"mode": "m"}

    def __init__(
        self,
        base: LogitLoss,
        mode: str = "global",
        t_start: float = 1.0,
        t_range: float = 20.0,
        init: float = 1.0,
        lambda_min: float = 0.0,
        lambda_max: float = 1.0,
        ramp: int = 10,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        if not isinstance(base, LogitLoss):
            raise ValueError(
                f"CTKD wraps a logit loss (KD, DKD, NKD, WTTM, …); got {type(base).__name__}: "
                "set distill_base=kd|dkd|nkd|wttm"
            )
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {list(MODES)}")
        self.base, self.mode = base, mode
        self.t_start = check_positive("t_start", t_start, "the lowest temperature, e.g. 1")
        self.t_range = check_positive("t_range", t_range, "the temperature range, e.g. 20")
        if isinstance(init, bool) or not isinstance(init, int | float) or not math.isfinite(init):
            raise ValueError(f"init={init!r} must be a finite number (θ of τ = t_start + …)")
        self.init = float(init)
        for name, v in (("lambda_min", lambda_min), ("lambda_max", lambda_max)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
                raise ValueError(f"{name}={v!r} must be in [0, 1] (gradient reversal strength)")
        self.lambda_min, self.lambda_max = float(lambda_min), float(lambda_max)
        self.ramp = check_int("ramp", ramp, 1, "epochs of the curriculum, an integer >= 1")
        self.hidden = check_int("hidden", hidden, 1, "the MLP's hidden width, e.g. 256")
        self.theta = nn.Parameter(torch.full((1,), self.init)) if mode == "global" else None
        self.mlp: nn.Module | None = None

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.base.bind(student, teacher)
        if self.mode == "instance" and self.mlp is None:
            classes = int(student.num_classes)
            self.mlp = nn.Sequential(
                nn.Linear(2 * classes, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1)
            )

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.base.set_epoch(epoch)

    @property
    def lam(self) -> float:
        """The reversal strength λ of the current epoch."""
        return cosine_ramp(self.epoch, self.ramp, self.lambda_min, self.lambda_max)

    def temperatures(self, s_logits: Tensor, t_logits: Tensor) -> Tensor:
        """τ: a 0-d tensor (global) or ``[B, 1]`` (instance), gradient-reversed into θ."""
        if self.mode == "global":
            raw = self.theta.reshape(())
        else:
            if self.mlp is None:
                raise RuntimeError("CTKD(mode=instance): call bind(student, teacher) first")
            pair = torch.cat([t_logits.detach().float(), s_logits.detach().float()], dim=1)
            raw = self.mlp(pair)
        return self.t_start + self.t_range * torch.sigmoid(reverse_gradient(raw.float(), self.lam))

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        t_logits = check_pair("CTKD", s_logits, t_logits)
        with torch.autocast(s_logits.device.type, enabled=False):
            tau = self.temperatures(s_logits, t_logits)
            rows = self.base.sample_rows(s_logits, t_logits, targets, tau)
        parts = {k: v.mean().detach() for k, v in rows.items() if k != "loss"}
        lam = torch.tensor(self.lam, device=s_logits.device)
        return {
            "loss": rows["loss"].mean(),
            "temperature": tau.detach().mean(),
            "lambda": lam,
            **parts,
        }

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode}, t=({self.t_start}, {self.t_start + self.t_range}), ramp={self.ramp}"
        )
