"""Logit KD (Hinton et al. 2015), exactly as kdlab fixes it.

``L = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α)·CE(z_s, y)``; the KL is summed over
classes and averaged over the batch. Everything is computed in float32 log-space with
autocast disabled: under bf16 autocast a softmax over 100 classes at T = 4 loses most of its
mantissa, and ``log(softmax)`` of a rounded-to-zero probability is ``-inf``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.distill.base import (
    TASK,
    cross_entropy,
    mix,
    validate_alpha,
    validate_label_smoothing,
    validate_temperature,
)
from kdlab.distill.logit_loss import LogitLoss, Temperature, check_bool, split_temperature
from kdlab.distill.logit_loss import zscore as standardize


def kd_kl(
    s_logits: Tensor, t_logits: Tensor, temperature: float, standardized: bool = False
) -> Tensor:
    """``T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))``, summed over classes, mean over the batch.

    Gradient w.r.t. the student logits: with ``p = softmax(z/T)``,
    ``∂/∂z_s [Σ_c p_t (log p_t − log p_s)] = (p_s − p_t)/T`` per sample, so the loss above
    (×T², ÷B) has gradient ``T·(p_s − p_t)/B``. The T² factor keeps the soft-target gradient
    on the same scale as the CE gradient when T changes (Hinton et al. §2).
    ``t_logits`` may carry log-probabilities (e.g. ``ensemble_logits``): softmax is invariant
    to adding a constant per row, so they act exactly as logits at T = 1.
    """
    t = float(temperature)
    zs, zt = s_logits.float(), t_logits.detach().float()
    if standardized:
        zs, zt = standardize(zs), standardize(zt)
    log_p_s = F.log_softmax(zs / t, dim=-1)
    log_p_t = F.log_softmax(zt / t, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * (t * t)


def kd_rows(zs: Tensor, zt: Tensor, temperature: Temperature) -> Tensor:
    """``T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))`` per row [N] (``kd_kl`` is its batch mean);
    ``temperature`` may be one per row ([N, 1])."""
    t, t2 = split_temperature(temperature)
    log_p_s = F.log_softmax(zs / t, dim=-1)
    log_p_t = F.log_softmax(zt / t, dim=-1)
    return t2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)


class LogitKD(LogitLoss):
    """Soft-target distillation from the teacher's logits.

    Args:
        alpha: distillation weight in [0, 1] (0 = CE baseline, 1 = pure soft labels).
        temperature: softmax temperature T > 0 applied to both student and teacher logits.
        label_smoothing: smoothing of the CE term only (the studies use 0).
        standardize: z-score student and teacher logits before the temperature (logit
            standardisation, Sun et al. 2024); off by default (Hinton's KD).
    """

    short_names = {"alpha": "a", "temperature": "T"}
    method = "LogitKD"

    def __init__(
        self,
        alpha: float,
        temperature: float,
        label_smoothing: float = 0.0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.alpha = validate_alpha(alpha)
        self.temperature = validate_temperature(temperature)
        self.label_smoothing = validate_label_smoothing(label_smoothing)
        self.standardize = check_bool("standardize", standardize, "z-score the logits first")

    def sample_rows(
        self,
        s_logits: Tensor,
        t_logits: Tensor,
        targets: Tensor,
        temperature: Temperature | None = None,
    ) -> dict[str, Tensor]:
        """Per row ``α·kd + (1 − α)·ce`` (CE on the raw student logits, as in ``forward``)."""
        with torch.autocast(s_logits.device.type, enabled=False):
            zs, zt = self.prepare(s_logits, t_logits)
            t = self.temperature if temperature is None else temperature
            kd = kd_rows(zs, zt, t)
            if targets.is_floating_point():
                targets = targets.float()
            ce = F.cross_entropy(
                s_logits.float(),
                targets.to(s_logits.device),
                reduction="none",
                label_smoothing=self.label_smoothing,
            )
            return {"loss": mix(self.alpha, kd, ce), "ce": ce.detach(), "kd": kd.detach()}

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Return ``{"loss", "ce", "kd"}``; terms with zero weight are logged but not trained."""
        if t_logits is None:
            raise ValueError("LogitKD needs teacher logits (t_logits is None)")
        if t_logits.shape != s_logits.shape:
            raise ValueError(
                f"student logits {tuple(s_logits.shape)} and teacher logits "
                f"{tuple(t_logits.shape)} differ: teacher and student must have the same "
                "number of classes (check the teacher checkpoint and data=)"
            )
        with torch.autocast(s_logits.device.type, enabled=False):
            kd = kd_kl(s_logits, t_logits, self.temperature, self.standardize)
            ce = cross_entropy(s_logits, targets, self.label_smoothing)
            loss = mix(self.alpha, kd, ce)
        task = ce * (1.0 - self.alpha) if self.alpha < 1.0 else None
        out = {"loss": loss, "ce": ce.detach(), "kd": kd.detach()}
        return out | ({TASK: task} if task is not None else {})

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temperature={self.temperature}, standardize={self.standardize}"
