"""Similarity-preserving KD (SP; Tung & Mori, ICCV 2019), as run in the CIFAR-100 benchmark.

SP transfers how similar the samples of a batch are to each other, not the features: with the
batch's features flattened to ``Q`` [B, D], the similarity matrix ``G = Q·Qᵀ`` [B, B] has each
row L2-normalised (``G̃``), and the loss is the squared Frobenius distance of the two matrices
divided by ``B²``::

    L_SP = Σ_stages ‖G̃_t − G̃_s‖_F² / B²

Student and teacher may differ in channels and spatial size: only the B×B matrices are compared.
The benchmark applies it to the last feature map (published ``feat[-2]``, kdlab's
``stages="last"``) with weight 3000 next to CE (RepDistiller ``distiller_zoo/SP.py`` and
``scripts/run_cifar_distill.sh -b 3000``; mdistiller ``CFG.SP.LOSS.FEAT_WEIGHT``). SP has no
trainable parts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdlab.distill.parts import StagePairLoss


def similarity_matrix(f: Tensor) -> Tensor:
    """Row-normalised batch similarity ``G̃`` [B, B] of features ``f`` [B, …]."""
    q = f.flatten(1)
    return F.normalize(q @ q.t(), dim=1)


class SimilarityPreserving(StagePairLoss):
    """Match the batch's row-normalised similarity matrices (SP).

    Args:
        stages: the paired stages: ``"last"`` (published: the last feature map), ``"body"``,
            ``"pool"``, a stage name, or a list of names / ``s:t`` pairs.

    Returns ``{"loss": L_SP}`` (plus one part per stage pair when there are several).
    """

    method = "SP"

    def __init__(self, stages: str | Sequence[str] = "last") -> None:
        super().__init__(stages)

    def pair_loss(self, name: str, fs: Tensor, ft: Tensor) -> Tensor:
        b = fs.shape[0]
        return (similarity_matrix(ft) - similarity_matrix(fs)).pow(2).sum() / (b * b)

    def extra_repr(self) -> str:
        return f"stages={self.stages!r}"
