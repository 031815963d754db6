"""Multi-level logit distillation, MLKD (Jin, Wang and Lin, CVPR 2023).

MLKD aligns the student's softened predictions with the teacher's at three levels and several
temperatures, on a weak and a strong view of every image (prediction augmentation). With
``P = softmax(Z/T)`` the ``[B, C]`` predictions of a batch:

- instance level, Hinton's KD: ``KD_T = T² · mean_b Σ_c p^t_bc · log(p^t_bc / p^s_bc)``;
- class level, the class Gram matrices ``G = PᵀP`` [C, C]:
  ``CC_T = Σ_ij (G^t_ij − G^s_ij)² / C``;
- batch level, the sample Gram matrices ``M = PPᵀ`` [B, B]:
  ``BC_T = Σ_ij (M^t_ij − M^s_ij)² / B``.

The loss, over the temperatures ``𝒯 = (4, 3, 5, 2, 6)``, the weak view (``w``) and the strong
view (``s``)::

    L = λ_ce·CE(z_s^s, y) + λ_kd · Σ_{T∈𝒯} [ f_b·KD_T(w) + KD_T(v_T) + f_c·CC_T(w) + f_b·BC_T(w) ]

(the CE on the weak view is the combination's ``ce`` term, see ``conf/distill/mlkd.yaml``).
``f_b`` is the fraction of the batch whose teacher confidence ``max_c p^t_bc`` (weak view,
T = 1) is at most its median, ``f_c`` the fraction of classes whose summed teacher probability
``Σ_b p^t_bc`` is at most its median (medians as ``np.percentile(·, 50)``, linear). ``v_T`` is
the strong view for T ∈ {4, 3, 5} and the weak view for T ∈ {2, 6}.

This is the behaviour of the published code, Jin-Ying/Multi-Level-Logit-Distillation
``mdistiller/distillers/KD_ours.py`` @ 6327e73 (with mdistiller's ``CFG.KD`` defaults it reads:
T 4, CE weight 0.1, KD weight 0.9), checked term by term:

- its confidence masks multiply the batch-*averaged* losses, so they act as the fractions
  ``f_b``, ``f_c`` above, not as per-sample or per-class masks;
- its strong-view instance term reads the weak logits at T = 2 and T = 6;
- it computes strong-view class and batch terms but leaves them out of the loss; so does kdlab.

kdlab keeps these as they produced the published numbers. Everything runs in float32 with
autocast disabled. The strong view comes from ``data.strong_view`` (``kdlab.data.strong``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.distill.base import (
    KDLoss,
    StrongLogits,
    cross_entropy,
    validate_loss_weight,
    validate_temperature,
)

TEMPERATURES = (4.0, 3.0, 5.0, 2.0, 6.0)
WEAK_ONLY = (2.0, 6.0)  # temperatures whose strong-view instance term reads the weak view


def instance_kd(zs: Tensor, zt: Tensor, temperature: float) -> Tensor:
    """``T² · mean_b KL(softmax(zt/T) ‖ softmax(zs/T))``."""
    log_ps = F.log_softmax(zs / temperature, dim=1)
    log_pt = F.log_softmax(zt / temperature, dim=1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(1).mean() * temperature**2


def class_gram_loss(zs: Tensor, zt: Tensor, temperature: float) -> Tensor:
    """``Σ (PtᵀPt − PsᵀPs)² / C``: class-level alignment."""
    ps, pt = F.softmax(zs / temperature, dim=1), F.softmax(zt / temperature, dim=1)
    return (pt.T @ pt - ps.T @ ps).pow(2).sum() / zs.shape[1]


def batch_gram_loss(zs: Tensor, zt: Tensor, temperature: float) -> Tensor:
    """``Σ (PtPtᵀ − PsPsᵀ)² / B``: batch-level alignment."""
    ps, pt = F.softmax(zs / temperature, dim=1), F.softmax(zt / temperature, dim=1)
    return (pt @ pt.T - ps @ ps.T).pow(2).sum() / zs.shape[0]


def below_median_fraction(values: Tensor) -> Tensor:
    """The fraction of ``values`` at most their median (linear-interpolated, as NumPy's)."""
    return (values <= torch.quantile(values, 0.5)).float().mean()


class MLKD(KDLoss):
    """MLKD's distillation terms on the weak and strong views plus CE on the strong view.

    Args:
        temperatures: the temperatures every level is summed over (published: 4, 3, 5, 2, 6).
        kd_weight: λ_kd, the weight of every distillation term (published 0.9).
        strong_ce: λ_ce, the weight of CE on the strong view (published 0.1, as the weak one).
    """

    short_names = {"kd_weight": "kd", "strong_ce": "sce"}
    needs_strong_view = True

    def __init__(
        self,
        temperatures: Sequence[float] = TEMPERATURES,
        kd_weight: float = 0.9,
        strong_ce: float = 0.1,
    ) -> None:
        super().__init__()
        temps = [validate_temperature(t) for t in temperatures]
        if not temps:
            raise ValueError(
                "temperatures must list at least one temperature, e.g. [4, 3, 5, 2, 6]"
            )
        self.temperatures = temps
        self.kd_weight = validate_loss_weight("kd_weight", kd_weight, "0.9")
        self.strong_ce = validate_loss_weight("strong_ce", strong_ce, "0.1")

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
        strong: StrongLogits | None = None,
    ) -> dict[str, Tensor]:
        if t_logits is None or strong is None:
            raise ValueError("MLKD needs the teacher's logits and a strong view of the batch")
        with torch.autocast(s_logits.device.type, enabled=False):
            sw, tw = s_logits.float(), t_logits.float()
            ss, ts = strong.student.float(), strong.teacher.float()
            pt = F.softmax(tw, dim=1)
            f_b = below_median_fraction(pt.max(dim=1).values)
            f_c = below_median_fraction(pt.sum(dim=0))
            inst = cls = bat = sw.new_zeros(())
            for t in self.temperatures:
                sv, tv = (sw, tw) if t in WEAK_ONLY else (ss, ts)
                inst = inst + f_b * instance_kd(sw, tw, t) + instance_kd(sv, tv, t)
                cls = cls + f_c * class_gram_loss(sw, tw, t)
                bat = bat + f_b * batch_gram_loss(sw, tw, t)
            ce_strong = cross_entropy(ss, targets)
            total = self.kd_weight * (inst + cls + bat) + self.strong_ce * ce_strong
        return {
            "loss": total,
            "instance": inst.detach(),
            "class": cls.detach(),
            "batch": bat.detach(),
            "ce_strong": ce_strong.detach(),
        }
