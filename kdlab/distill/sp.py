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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.base import KDLoss
from kdlab.distill.parts import (
    pair_name,
    paired_features,
    resolve_stages,
    stage_parts,
    stages_argument,
)


def similarity_matrix(f: Tensor) -> Tensor:
    """Row-normalised batch similarity ``G̃`` [B, B] of features ``f`` [B, …]."""
    q = f.flatten(1)
    return F.normalize(q @ q.t(), dim=1)


class SimilarityPreserving(KDLoss):
    """Match the batch's row-normalised similarity matrices (SP).

    Args:
        stages: the paired stages: ``"last"`` (published: the last feature map), ``"body"``,
            ``"pool"``, a stage name, or a list of names / ``s:t`` pairs.

    Returns ``{"loss": L_SP}`` (plus one part per stage pair when there are several).
    """

    def __init__(self, stages: str | Sequence[str] = "last") -> None:
        super().__init__()
        self.stages, self.stage_pairs = stages_argument(stages, "SP")

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.stage_pairs = resolve_stages(self.stages, student, teacher, "SP")

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        feats = paired_features(s_feats, t_feats, self.stage_pairs, "SP")
        terms: dict[str, Tensor] = {}
        with torch.autocast(s_logits.device.type, enabled=False):
            for (s, t), (fs, ft) in zip(self.stage_pairs, feats, strict=True):
                b = fs.shape[0]
                diff = similarity_matrix(ft) - similarity_matrix(fs)
                terms[pair_name(s, t)] = diff.pow(2).sum() / (b * b)
            loss = torch.stack(list(terms.values())).sum()
        return {"loss": loss, **stage_parts(terms)}

    def extra_repr(self) -> str:
        return f"stages={self.stages!r}"
