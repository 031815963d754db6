"""Transformed teacher matching, TTM and WTTM (Zheng & Yang, ICLR 2024).

TTM drops the temperature on the *student* side: the student's plain softmax ``p^s = softmax(z_s)``
matches the teacher's distribution under the power transform ``γ = 1/T``::

    p̃^t = (p^t)^γ / Σ_c (p^t_c)^γ = softmax(z_t / T)          (p^t = softmax(z_t))
    L_ttm = KL(p̃^t ‖ p^s)

which is KD with an extra Rényi-entropy regulariser on the student (the paper's §3). WTTM weighs
each sample by the power sum of its teacher distribution, ``U_γ(p^t) = Σ_c (p^t_c)^γ``: large for
a smooth teacher row, small for a confident one, so the student matches the informative rows
harder::

    L_wttm = U_γ(p^t) · KL(p̃^t ‖ p^s)

both averaged over the batch (no T² factor). ``U`` is computed as ``exp(logsumexp(γ·log p^t))``
in float32. ``weighted=False`` is plain TTM. The temperature of this loss is ``T = 1/γ``, so a
modifier that supplies a temperature (CTKD) supplies ``γ = 1/T``; ``standardize=True`` z-scores
both rows first (logit standardisation).

Public code read to check the formula: zkxufo/TTM (commit fe457b33a71ba27536ec04fe3d32c5b04963522f,
``distiller_zoo/ttm.py``, ``distiller_zoo/wttm.py``: ``p_t = softmax(y_t)**l / Σ``, ``KL`` summed
over classes, ``mean(norm·KL)`` for WTTM, ``mean(KL)`` for TTM; ``train_student.py``:
``loss = r·CE + b·L``). Differences: the power transform is taken in log-space
(``softmax(γ·log p^t)``), which equals the published ratio without underflow of ``p^γ``. The
published per-pair γ and β are in the paper's appendix A.4, not in the repository; kdlab's config
takes the repository README's examples (see ``conf/distill/wttm.yaml``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.distill.base import check_positive
from kdlab.distill.logit_loss import LogitLoss, Temperature, check_bool, split_temperature


def ttm_rows(zs: Tensor, zt: Tensor, temperature: Temperature) -> tuple[Tensor, Tensor]:
    """``(KL(p̃^t ‖ p^s), U_γ(p^t))`` per row [N] with ``γ = 1/T`` (T may be per row)."""
    t, _ = split_temperature(temperature)
    log_pt = F.log_softmax(zt, dim=1)
    log_tilde = F.log_softmax(log_pt / t, dim=1)  # softmax(γ·log p^t) = (p^t)^γ / Σ (p^t)^γ
    log_ps = F.log_softmax(zs, dim=1)
    kl = (log_tilde.exp() * (log_tilde - log_ps)).sum(dim=1)
    power_sum = torch.logsumexp(log_pt / t, dim=1).exp()
    return kl, power_sum


class WTTM(LogitLoss):
    """``U_γ(p^t)·KL(p̃^t ‖ softmax(z_s))`` (WTTM) or ``KL(p̃^t ‖ softmax(z_s))`` (TTM).

    Args:
        gamma: power-transform exponent γ > 0 (= 1/T; published ``--ttm_l``, e.g. 0.1).
        weighted: multiply each sample by ``U_γ(p^t)`` (WTTM); false = plain TTM.
        standardize: z-score both logit rows first (logit standardisation).

    Returns ``{"loss", "kl", "weight"}``: the per-sample KL and ``U`` averaged over the batch.
    """

    short_names = {"gamma": "g"}
    method = "WTTM"

    def __init__(
        self, gamma: float = 0.2, weighted: bool = True, standardize: bool = False
    ) -> None:
        super().__init__()
        hint = "gamma is the teacher's power-transform exponent (1/T) and must be > 0, e.g. 0.2"
        self.gamma = check_positive("gamma", gamma, hint)
        self.weighted = check_bool("weighted", weighted, "true = WTTM, false = plain TTM")
        self.standardize = check_bool("standardize", standardize, "z-score the logits first")

    @property
    def temperature(self) -> float:  # the teacher-side temperature T = 1/γ
        return 1.0 / self.gamma

    def row_losses(
        self, zs: Tensor, zt: Tensor, targets: Tensor, temperature: Temperature
    ) -> dict[str, Tensor]:
        kl, power_sum = ttm_rows(zs, zt, temperature)
        loss = power_sum * kl if self.weighted else kl
        return {"loss": loss, "kl": kl.detach(), "weight": power_sum.detach()}

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, weighted={self.weighted}, standardize={self.standardize}"
