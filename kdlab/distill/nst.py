"""Neuron selectivity transfer (NST; Huang & Wang, 2017), as in the CIFAR-100 benchmark.

Each channel's map of a sample is a "neuron selectivity pattern": flattened over the H·W
positions and L2-normalised, ``f_c = vec(A_c)/‖vec(A_c)‖₂``. NST matches the distributions of
the student's and the teacher's patterns by the squared maximum mean discrepancy with the
second-order polynomial kernel ``k(x, y) = (xᵀy)²``::

    L_NST = Σ_stages mean_b [ mean_{i,i'} k(f_t,i, f_t,i') + mean_{j,j'} k(f_s,j, f_s,j')
                              − 2·mean_{i,j} k(f_s,j, f_t,i) ]

(means over the C_t², C_s² and C_s·C_t channel pairs of each sample, then over the batch).
Channel counts may differ; the larger map is average-pooled to the other's size first. The
teacher-only term is constant (no gradient) and kept so that the value is the MMD² ≥ 0.
Published settings (RepDistiller ``distiller_zoo/NST.py`` with ``full_loss`` on every
intermediate map ``feat[1:-1]``, weight ``-b 50``; mdistiller ``CFG.NST``): ``stages="body"``.
NST has no trainable parts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.base import KDLoss
from kdlab.distill.parts import (
    match_size,
    pair_name,
    paired_features,
    probe_shapes,
    require_maps,
    resolve_stages,
    stage_parts,
    stages_argument,
)


def selectivity_patterns(f: Tensor) -> Tensor:
    """Per sample and channel, the L2-normalised flattened map: [B, C, H·W]."""
    return F.normalize(f.flatten(2), dim=2)


def poly_kernel_mean(a: Tensor, b: Tensor) -> Tensor:
    """Mean of ``(a_iᵀ b_j)²`` over samples and channel pairs; a [B, Ca, N], b [B, Cb, N]."""
    return (a @ b.transpose(1, 2)).pow(2).mean()


class NST(KDLoss):
    """Squared MMD between the channels' normalised maps, polynomial kernel (NST).

    Args:
        stages: the paired stages: ``"body"`` (published: every intermediate feature map),
            ``"last"``, a stage name, or a list of names / ``s:t`` pairs.

    Returns ``{"loss": L_NST}`` (plus one part per stage pair when there are several).
    """

    def __init__(self, stages: str | Sequence[str] = "body") -> None:
        super().__init__()
        self.stages, self.stage_pairs = stages_argument(stages, "NST")

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.stage_pairs = resolve_stages(self.stages, student, teacher, "NST")
        require_maps(probe_shapes(student, teacher, self.stage_pairs), self.stage_pairs, "NST")

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        feats = paired_features(s_feats, t_feats, self.stage_pairs, "NST")
        terms: dict[str, Tensor] = {}
        with torch.autocast(s_logits.device.type, enabled=False):
            for (s, t), (fs, ft) in zip(self.stage_pairs, feats, strict=True):
                fs, ft = match_size(fs, ft, "NST")
                ps, pt = selectivity_patterns(fs), selectivity_patterns(ft)
                terms[pair_name(s, t)] = (
                    poly_kernel_mean(pt, pt) + poly_kernel_mean(ps, ps)
                    - 2.0 * poly_kernel_mean(ps, pt)
                )  # fmt: skip
            loss = torch.stack(list(terms.values())).sum()
        return {"loss": loss, **stage_parts(terms)}

    def extra_repr(self) -> str:
        return f"stages={self.stages!r}"
