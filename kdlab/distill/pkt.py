"""Probabilistic knowledge transfer (PKT; Passalis & Tefas, ECCV 2018), as in the CIFAR-100
benchmark.

PKT matches the conditional probability that a sample picks each other sample of the batch as
its neighbour, estimated from the cosine-similarity kernel of the flattened features:

    K_ij = (1 + cos(x_i, x_j)) / 2,    P_{j|i} = K_ij / Σ_k K_ik

and the loss is the KL divergence of the student's rows from the teacher's, averaged over the
B² entries (the self-similarity entries included, as in the authors' code)::

    L_PKT = (1/B²) Σ_{i,j} P^t_{j|i} · log((P^t_{j|i} + ε) / (P^s_{j|i} + ε)),   ε = 1e-7

Vectors are normalised as ``x / (‖x‖ + ε)`` (a zero vector stays zero). Published settings
(RepDistiller ``distiller_zoo/PKT.py``, code from the authors, on the pooled vector ``feat[-1]``
with weight ``-b 30000``; mdistiller ``distillers/PKT.py``): ``stages="pool"``. PKT has no
trainable parts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdlab.distill.base import KDLoss
from kdlab.distill.parts import (
    pair_name,
    paired_features,
    resolve_stages,
    stage_parts,
    stages_argument,
)

EPS = 1e-7  # the authors' constant, in the norm and in the log ratio


def neighbour_probabilities(f: Tensor) -> Tensor:
    """``P_{j|i}`` [B, B] from the cosine kernel of the rows of ``f`` [B, …]."""
    x = f.flatten(1)
    x = x / (x.norm(dim=1, keepdim=True) + EPS)
    kernel = (x @ x.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


class PKT(KDLoss):
    """KL divergence between the batch's cosine-kernel neighbour distributions (PKT).

    Args:
        stages: the paired stages: ``"pool"`` (published: the pooled vector), ``"last"``, a
            stage name, or a list of names / ``s:t`` pairs (maps are flattened).

    Returns ``{"loss": L_PKT}`` (plus one part per stage pair when there are several).
    """

    def __init__(self, stages: str | Sequence[str] = "pool") -> None:
        super().__init__()
        self.stages, self.stage_pairs = stages_argument(stages, "PKT")

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.stage_pairs = resolve_stages(self.stages, student, teacher, "PKT")

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        feats = paired_features(s_feats, t_feats, self.stage_pairs, "PKT")
        terms: dict[str, Tensor] = {}
        with torch.autocast(s_logits.device.type, enabled=False):
            for (s, t), (fs, ft) in zip(self.stage_pairs, feats, strict=True):
                p_s, p_t = neighbour_probabilities(fs), neighbour_probabilities(ft)
                kl = p_t * torch.log((p_t + EPS) / (p_s + EPS))
                terms[pair_name(s, t)] = kl.mean()
            loss = torch.stack(list(terms.values())).sum()
        return {"loss": loss, **stage_parts(terms)}

    def extra_repr(self) -> str:
        return f"stages={self.stages!r}"
