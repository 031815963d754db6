"""Decoupled knowledge distillation, DKD (Zhao et al., CVPR 2022).

DKD splits Hinton's soft-target KL at temperature ``T`` into two parts around the target class
``t`` of each sample (``p = softmax(z/T)``):

- TCKD, target-class KD: the KL between the binary distributions ``b = (p_t, 1 − p_t)`` of
  teacher and student ("how sure is the model of the right class");
- NCKD, non-target-class KD: the KL between ``q = softmax(z_{c≠t}/T)``, the distributions over the
  other classes only ("how does it rank the wrong classes").

Classical KD is ``TCKD + (1 − p_t^teacher)·NCKD``: the NCKD weight shrinks exactly when the
teacher is confident. DKD gives the two parts free weights instead::

    L_dkd = w(e) · T² · (α·KL(b^T ‖ b^S) + β·KL(q^T ‖ q^S))

each KL summed over its classes and averaged over the batch. ``w(e)`` is a linear warm-up over
the first ``warmup`` epochs. mdistiller (the published code) multiplies by
``min(epoch/warmup, 1)`` with epochs counted from 1; kdlab's ``set_epoch`` counts from 0, so
kdlab's epoch ``e`` uses ``min((e + 1)/warmup, 1)``: the same factor as their epoch ``e + 1``
(1/20 in the first epoch, 1 from the 20th on, for ``warmup = 20``).

Differences from the published code, none of which changes the value beyond rounding:
the non-target distribution removes the target column instead of subtracting 1000 from its
logit, and ``log(1 − p_t)`` is computed as a log-sum-exp over the non-target logits instead of
the log of a sum of probabilities (finite even when ``p_t`` rounds to 1). Everything runs in
float32 with autocast disabled.

With ``standardize=True`` both logit rows are z-scored before the temperature (logit
standardisation, Sun et al., CVPR 2024; ``kdlab.distill.logit.standardize``), as in
sunshangquan/logit-standardization-KD's DKD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.distill.base import validate_loss_weight, validate_temperature, validate_warmup
from kdlab.distill.logit_loss import LogitLoss, Temperature, check_bool, split_temperature, zscore
from kdlab.distill.parts import hard_classes, warmup_factor


def _target_split(z: Tensor, cls: Tensor) -> tuple[Tensor, Tensor]:
    """``(log b, z_rest)``: log of the binary (target, rest) distribution of ``softmax(z)`` [B, 2]
    and the non-target logits [B, C − 1] (the target column removed)."""
    b, c = z.shape
    is_target = F.one_hot(cls, c).bool()
    rest = z[~is_target].view(b, c - 1)
    log_all = torch.logsumexp(z, dim=1, keepdim=True)
    log_target = z.gather(1, cls[:, None]) - log_all
    log_rest = torch.logsumexp(rest, dim=1, keepdim=True) - log_all
    return torch.cat([log_target, log_rest], dim=1), rest


def _kl_rows(log_q: Tensor, log_p: Tensor) -> Tensor:
    """``KL(p ‖ q)`` per row from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def dkd_rows(
    zs: Tensor, zt: Tensor, cls: Tensor, temperature: Temperature
) -> tuple[Tensor, Tensor]:
    """``(TCKD, NCKD)`` per row [N], each multiplied by T² (``temperature`` may be per row)."""
    t, t2 = split_temperature(temperature)
    log_bs, rest_s = _target_split(zs / t, cls)
    log_bt, rest_t = _target_split(zt / t, cls)
    tckd = _kl_rows(log_bs, log_bt)
    nckd = _kl_rows(F.log_softmax(rest_s, dim=1), F.log_softmax(rest_t, dim=1))
    return tckd * t2, nckd * t2


def dkd_parts(
    s_logits: Tensor, t_logits: Tensor, cls: Tensor, temperature: float, standardized: bool
) -> tuple[Tensor, Tensor]:
    """``(TCKD, NCKD)``, each already multiplied by T² (float32, batch mean)."""
    zs, zt = s_logits.float(), t_logits.detach().float()
    if standardized:
        zs, zt = zscore(zs), zscore(zt)
    tckd, nckd = dkd_rows(zs, zt, cls, temperature)
    return tckd.mean(), nckd.mean()


class DKD(LogitLoss):
    """Decoupled KD: ``w(epoch)·(α·TCKD + β·NCKD)`` (see the module doc); logits only.

    Args:
        alpha: weight ≥ 0 of the target-class part TCKD (published: 1).
        beta: weight ≥ 0 of the non-target part NCKD (published: 8, per pair 2 or 6).
        temperature: softmax temperature T > 0 of both parts (published: 4).
        warmup: epochs of linear warm-up of the whole term (published: 20; 0 = none).
        standardize: z-score both logit rows before the temperature (logit standardisation).

    ``targets`` may be soft (MixUp): the target class is then their argmax.
    Returns ``{"loss", "tckd", "nckd"}``; the parts are T²-scaled and before α, β and warm-up.
    """

    short_names = {"alpha": "a", "beta": "b", "temperature": "T"}
    method = "DKD"

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup: int = 20,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.alpha = validate_loss_weight("alpha", alpha, "1.0")
        self.beta = validate_loss_weight("beta", beta, "8.0")
        self.temperature = validate_temperature(temperature)
        self.warmup = validate_warmup(warmup)
        self.standardize = check_bool(
            "standardize", standardize, "true = z-score the logits before the temperature"
        )

    @property
    def warmup_weight(self) -> float:
        """The warm-up factor of the current epoch (see ``warmup_factor``)."""
        return warmup_factor(self.epoch, self.warmup)

    def weight(self) -> float:
        return self.warmup_weight

    def row_losses(
        self, zs: Tensor, zt: Tensor, targets: Tensor, temperature: Temperature
    ) -> dict[str, Tensor]:
        tckd, nckd = dkd_rows(zs, zt, hard_classes(targets), temperature)
        loss = self.alpha * tckd + self.beta * nckd
        return {"loss": loss, "tckd": tckd.detach(), "nckd": nckd.detach()}

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, "
            f"warmup={self.warmup}, standardize={self.standardize}"
        )
