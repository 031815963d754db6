"""Attention transfer (AT; Zagoruyko & Komodakis, ICLR 2017), as run in the CIFAR-100 benchmark.

The *attention map* of a feature map ``A`` [C, H, W] is the channel mean of ``|A|^p``, flattened
to a vector over the H·W positions and L2-normalised: ``Q(A) = v / ‖v‖₂`` with
``v = (1/C)·Σ_c |A_c|^p``. Per stage pair the loss is the mean squared difference of the two
normalised maps over the batch and the positions, and the stage losses are summed::

    L_AT = Σ_stages mean_{b, hw} (Q(A_s)[b, hw] − Q(A_t)[b, hw])²

This is the form of the authors' code and of the benchmark (RepDistiller
``distiller_zoo/AT.py``, mdistiller ``distillers/AT.py``); the paper writes an un-squared
p-norm of the difference summed over pairs, which the benchmark does not use. Where the two maps
differ in size the larger is average-pooled to the smaller. The benchmark pairs every
intermediate feature map (published ``feat[1:-1]``, kdlab's ``stages="body"``) with ``p = 2``
and weighs the term 1000 next to CE (``conf/distill/at.yaml``). AT has no trainable parts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdlab.distill.base import check_positive
from kdlab.distill.parts import StagePairLoss, match_size


# -- attention transfer ----------------------------------------------------------------------
def attention_map(f: Tensor, p: float) -> Tensor:
    """``Q(A)``: the L2-normalised channel mean of ``|A|^p`` per sample, [B, H·W]."""
    return F.normalize(f.abs().pow(p).mean(dim=1).flatten(1), dim=1)


class AttentionTransfer(StagePairLoss):
    """Match the student's spatial attention maps to the teacher's (AT).

    Args:
        p: exponent of ``|A|^p`` in the attention map, a finite number > 0 (published: 2).
        stages: the paired stages: ``"body"`` (published: every intermediate feature map),
            ``"last"``, a stage name, or a list of names / ``s:t`` pairs. Channel counts may
            differ; spatial sizes are matched by average pooling.

    Returns ``{"loss": Σ_stages L_stage}`` plus one part per stage pair when there are several.
    """

    short_names = {"p": "p"}

    method, needs_maps = "AT", True

    def __init__(self, p: float = 2.0, stages: str | Sequence[str] = "body") -> None:
        super().__init__(stages)
        self.p = check_positive(
            "p", p, "AT's attention exponent must be a finite number > 0; pass e.g. p=2"
        )

    def pair_loss(self, name: str, fs: Tensor, ft: Tensor) -> Tensor:
        fs, ft = match_size(fs, ft, "AT")
        return (attention_map(fs, self.p) - attention_map(ft, self.p)).pow(2).mean()

    def extra_repr(self) -> str:
        return f"p={self.p}, stages={self.stages!r}"
