"""Normalized KD, NKD (Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation:
A Unified Approach with Normalized Loss and Customized Soft Labels", ICCV 2023).

NKD splits the soft-target loss around the target class ``t`` like DKD, but keeps the
target part at temperature 1 as a soft cross-entropy and *normalises* the non-target part so
that its scale no longer depends on how much probability the teacher leaves for it. With
``p = softmax(z)`` and ``q^T = softmax(z_{c≠t}/T)`` (the non-target classes only, which is the
normalised ``N(p_c^T) = p_c^T / Σ_{c≠t} p_c^T``)::

    L_nkd = −p^t_t · log p^s_t  −  γ·T² · Σ_{c≠t} q^{T,t}_c · log q^{T,s}_c

per sample, averaged over the batch. The first term is the student's log-likelihood of the
target weighted by the teacher's confidence in it; the second a cross-entropy (not a KL: the
teacher's entropy is a constant, so the gradients are the same) between the normalised
non-target distributions. CE on the labels is added outside (``conf/distill/nkd.yaml``).

Public code read to check the formula: yzd-v/cls_KD (commit 1e5d48f36957ee460d39d7ebc592c6cc7f8f3d66,
``mmcls/models/dis_losses/nkd.py``; defaults γ 1.5, T 1, loss weight 1) and the SD-NKD of
shicaiwei123/SDD-CVPR2024 (commit e412036c6b7b67d8ed25418d2dedad223ab49a71,
``mdistiller/distillers/SDD_nkd.py``). Differences:

- the non-target rows drop the target column (as cls_KD does); SDD-CVPR2024's copy builds its
  mask with ``scatter_(1, label, 1)``, which keeps the target class in the "non-target" softmax,
  and kdlab does not reproduce that;
- under a per-row temperature (CTKD) the target part stays at T = 1, as in the formula;
- ``standardize=True`` z-scores both rows first (logit standardisation), for both parts.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.distill.base import validate_loss_weight, validate_temperature
from kdlab.distill.logit_loss import LogitLoss, Temperature, check_bool, split_temperature
from kdlab.distill.parts import hard_classes


def nkd_rows(
    zs: Tensor, zt: Tensor, cls: Tensor, temperature: Temperature
) -> tuple[Tensor, Tensor]:
    """``(target, non_target)`` per row [N]: ``−p^t_t·log p^s_t`` and
    ``−T²·Σ_{c≠t} q^t_c log q^s_c`` (γ not applied)."""
    n, c = zs.shape
    log_ps = F.log_softmax(zs, dim=1)
    p_t = F.softmax(zt, dim=1)
    target = -(p_t.gather(1, cls[:, None]) * log_ps.gather(1, cls[:, None])).squeeze(1)
    rest = ~F.one_hot(cls, c).bool()
    t, t2 = split_temperature(temperature)
    log_qs = F.log_softmax(zs[rest].view(n, c - 1) / t, dim=1)
    q_t = F.softmax(zt[rest].view(n, c - 1) / t, dim=1)
    return target, -t2 * (q_t * log_qs).sum(dim=1)


class NKD(LogitLoss):
    """Normalized KD ``−p^t_t·log p^s_t − γ·T²·Σ_{c≠t} q^t_c log q^s_c`` (see the module doc).

    Args:
        gamma: weight ≥ 0 of the normalised non-target part (published: 1.5).
        temperature: temperature T > 0 of the non-target part (published: 1).
        standardize: z-score both logit rows first (logit standardisation).

    Returns ``{"loss", "target", "non_target"}`` (the parts before γ).
    """

    short_names = {"gamma": "g", "temperature": "T"}
    method = "NKD"

    def __init__(
        self, gamma: float = 1.5, temperature: float = 1.0, standardize: bool = False
    ) -> None:
        super().__init__()
        self.gamma = validate_loss_weight("gamma", gamma, "1.5")
        self.temperature = validate_temperature(temperature)
        self.standardize = check_bool("standardize", standardize, "z-score the logits first")

    def row_losses(
        self, zs: Tensor, zt: Tensor, targets: Tensor, temperature: Temperature
    ) -> dict[str, Tensor]:
        target, non_target = nkd_rows(zs, zt, hard_classes(targets), temperature)
        loss = target + self.gamma * non_target
        return {"loss": loss, "target": target.detach(), "non_target": non_target.detach()}

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, temperature={self.temperature}, standardize={self.standardize}"
