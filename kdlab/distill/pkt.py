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
from torch import Tensor

from kdlab.distill.parts import StagePairLoss

EPS = 1e-7  # the authors' constant, in the norm and in the log ratio


def neighbour_probabilities(f: Tensor) -> Tensor:
    """``P_{j|i}`` [B, B] from the cosine kernel of the rows of ``f`` [B, …]."""
    x = f.flatten(1)
    x = x / (x.norm(dim=1, keepdim=True) + EPS)
    kernel = (x @ x.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


class PKT(StagePairLoss):
    """KL divergence between the batch's cosine-kernel neighbour distributions (PKT).

    Args:
        stages: the paired stages: ``"pool"`` (published: the pooled vector), ``"last"``, a
            stage name, or a list of names / ``s:t`` pairs (maps are flattened).

    Returns ``{"loss": L_PKT}`` (plus one part per stage pair when there are several).
    """

    method = "PKT"

    def __init__(self, stages: str | Sequence[str] = "pool") -> None:
        super().__init__(stages)

    def pair_loss(self, name: str, fs: Tensor, ft: Tensor) -> Tensor:
        p_s, p_t = neighbour_probabilities(fs), neighbour_probabilities(ft)
        return (p_t * torch.log((p_t + EPS) / (p_s + EPS))).mean()

    def extra_repr(self) -> str:
        return f"stages={self.stages!r}"
