"""DIST: distillation from a stronger teacher by correlation (Huang et al., NeurIPS 2022).

Instead of matching the teacher's probabilities exactly (KL), DIST asks the student's
predictions to be *linearly related* to the teacher's, measured by the Pearson correlation
``ρ(u, v) = ⟨u − ū, v − v̄⟩ / (‖u − ū‖·‖v − v̄‖ + ε)`` (ε = 1e-8, as published). With
``Y = softmax(Z/τ)`` the [B, C] prediction matrices of a batch::

    inter = 1 − mean_i ρ(Y^S[i, :], Y^T[i, :])   (inter-class relation: each sample's row)
    intra = 1 − mean_c ρ(Y^S[:, c], Y^T[:, c])   (intra-class relation: each class's column)
    L_dist = τ²·(β·inter + γ·intra)

so the loss ignores each row's (and column's) offset and scale. Computed in float32 with
autocast disabled; the targets are not used. ``standardize=True`` z-scores both logit rows before
the temperature (logit standardisation, as for every kdlab logit loss). DIST's intra-class term
couples the rows of a batch, so it is not a per-sample ``LogitLoss`` and the modifiers (CTKD,
SDD) do not wrap it. The intra-class term needs a batch of at least two
samples to be informative (a single row has zero variance and gives ρ = 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.distill.base import KDLoss, validate_loss_weight, validate_temperature
from kdlab.distill.logit_loss import check_bool, zscore

PEARSON_EPS = 1e-8


def pearson_rows(a: Tensor, b: Tensor, eps: float = PEARSON_EPS) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` ([N, D] → [N])."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_relations(
    s_logits: Tensor, t_logits: Tensor, temperature: float, standardized: bool = False
) -> tuple[Tensor, Tensor]:
    """``(inter, intra)``: ``1 − mean ρ`` over rows and over columns (not yet scaled by τ²)."""
    t = float(temperature)
    zs, zt = s_logits.float(), t_logits.detach().float()
    if standardized:
        zs, zt = zscore(zs), zscore(zt)
    ys = F.softmax(zs / t, dim=1)
    yt = F.softmax(zt / t, dim=1)
    inter = 1.0 - pearson_rows(ys, yt).mean()
    intra = 1.0 - pearson_rows(ys.t(), yt.t()).mean()
    return inter, intra


class DIST(KDLoss):
    """DIST's relation loss ``τ²·(β·inter + γ·intra)`` on the logits (see the module doc).

    Args:
        beta: weight ≥ 0 of the inter-class (per-sample) relation.
        gamma: weight ≥ 0 of the intra-class (per-class) relation.
        temperature: softmax temperature τ > 0.
        standardize: z-score both logit rows before τ (logit standardisation).

    Returns ``{"loss", "inter", "intra"}`` with ``inter``/``intra`` the τ²-scaled relation
    losses before β and γ (``loss = β·inter + γ·intra``).
    """

    short_names = {"beta": "b", "gamma": "g", "temperature": "T"}

    def __init__(
        self,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.beta = validate_loss_weight("beta", beta, "2.0")
        self.gamma = validate_loss_weight("gamma", gamma, "2.0")
        self.temperature = validate_temperature(temperature)
        self.standardize = check_bool("standardize", standardize, "z-score the logits first")

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        if t_logits is None:
            raise ValueError("DIST needs teacher logits (t_logits is None)")
        if t_logits.shape != s_logits.shape or s_logits.ndim != 2:
            raise ValueError(
                f"DIST needs student and teacher logits of the same shape [B, C]; got "
                f"{tuple(s_logits.shape)} and {tuple(t_logits.shape)} (check the teacher "
                "checkpoint and data=)"
            )
        with torch.autocast(s_logits.device.type, enabled=False):
            inter, intra = dist_relations(s_logits, t_logits, self.temperature, self.standardize)
            scale = self.temperature**2
            inter, intra = inter * scale, intra * scale
            loss = self.beta * inter + self.gamma * intra
        return {"loss": loss, "inter": inter.detach(), "intra": intra.detach()}

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, temperature={self.temperature}"
