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

import torch.nn.functional as F
from torch import Tensor

from kdlab.distill.parts import StagePairLoss, match_size


def selectivity_patterns(f: Tensor) -> Tensor:
    """Per sample and channel, the L2-normalised flattened map: [B, C, H·W]."""
    return F.normalize(f.flatten(2), dim=2)


def poly_kernel_mean(a: Tensor, b: Tensor) -> Tensor:
    """Mean of ``(a_iᵀ b_j)²`` over samples and channel pairs; a [B, Ca, N], b [B, Cb, N]."""
    return (a @ b.transpose(1, 2)).pow(2).mean()


class NST(StagePairLoss):
    """Squared MMD between the channels' normalised maps, polynomial kernel (NST).

    Args:
        stages: the paired stages: ``"body"`` (published: every intermediate feature map),
            ``"last"``, a stage name, or a list of names / ``s:t`` pairs.

    Returns ``{"loss": L_NST}`` (plus one part per stage pair when there are several).
    """

    method, needs_maps = "NST", True

    def __init__(self, stages: str | Sequence[str] = "body") -> None:
        super().__init__(stages)

    def pair_loss(self, name: str, fs: Tensor, ft: Tensor) -> Tensor:
        fs, ft = match_size(fs, ft, "NST")
        ps, pt = selectivity_patterns(fs), selectivity_patterns(ft)
        return poly_kernel_mean(pt, pt) + poly_kernel_mean(ps, ps) - 2.0 * poly_kernel_mean(ps, pt)

    def extra_repr(self) -> str:
        return f"stages={self.stages!r}"
