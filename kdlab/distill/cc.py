"""Correlation congruence (CC; Peng et al., ICCV 2019), in the form of the CIFAR-100 benchmark.

Two trainable linear embeddings map the student's and the teacher's pooled features to a common
``dim``-dimensional space (``e_s = W_s·f_s + b_s``, ``e_t = W_t·f_t + b_t``; no normalisation).
With ``δ_i = |e_s,i − e_t,i|`` (element-wise) for the i-th sample of the batch, the loss pairs
each sample with the next one in the batch::

    L_CC = 1/(B − 1) · Σ_{i=1}^{B−1} Σ_d δ_i[d] · δ_{i+1}[d]

Deviation from the paper (documented, deliberate): the paper builds a B×B correlation matrix
of the embeddings with a Taylor-expanded Gaussian kernel and matches it in squared Frobenius
norm. The benchmark instead uses the code the CC authors gave to the CRD authors, the form above
(RepDistiller ``distiller_zoo/CC.py`` and ``train_student.py --distill correlation``: two
``LinearEmbed`` heads to ``feat_dim = 128`` on ``feat[-1]``, both trained, weight ``-b 0.02``).
The benchmark's CC numbers come from this form, so kdlab implements it. Both embeddings are
parameters of this loss, built in ``bind``; the teacher's *features* are detached, its
embedding is trained. A batch of one sample has no neighbour pair: the loss is then 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdlab.distill.base import KDLoss, check_int
from kdlab.distill.parts import (
    pair_name,
    paired_features,
    probe_shapes,
    resolve_stages,
    stage_parts,
    stages_argument,
)


def neighbour_congruence(e_s: Tensor, e_t: Tensor) -> Tensor:
    """``mean_i Σ_d |e_s − e_t|_i[d]·|e_s − e_t|_{i+1}[d]`` over consecutive samples."""
    delta = (e_s - e_t).abs()
    if delta.shape[0] < 2:
        return delta.sum() * 0.0  # no neighbour pair; keeps the graph (and DDP) intact
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


class CorrelationCongruence(KDLoss):
    """The benchmark's CC: a product of neighbouring samples' embedding gaps.

    Args:
        dim: size of the common embedding (published ``feat_dim``: 128).
        stages: the paired stages: ``"pool"`` (published: the pooled vector), ``"last"``, a
            stage name, or a list of names / ``s:t`` pairs (maps are flattened).

    Returns ``{"loss": L_CC}`` (plus one part per stage pair when there are several).
    """

    short_names = {"dim": "d"}

    def __init__(self, dim: int = 128, stages: str | Sequence[str] = "pool") -> None:
        super().__init__()
        self.dim = check_int(
            "dim", dim, 1, "the embedding size of CC must be an integer >= 1; pass e.g. dim=128"
        )
        self.stages, self.stage_pairs = stages_argument(stages, "CC")
        self.embed_s = nn.ModuleDict()
        self.embed_t = nn.ModuleDict()

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.stage_pairs = resolve_stages(self.stages, student, teacher, "CC")
        shapes = probe_shapes(student, teacher, self.stage_pairs)
        self.embed_s, self.embed_t = nn.ModuleDict(), nn.ModuleDict()
        for (s, t), (ss, ts) in zip(self.stage_pairs, shapes, strict=True):
            self.embed_s[pair_name(s, t)] = nn.Linear(math.prod(ss), self.dim)
            self.embed_t[pair_name(s, t)] = nn.Linear(math.prod(ts), self.dim)

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        if not self.embed_s:
            raise RuntimeError("CC: call bind(student, teacher) before computing the loss")
        feats = paired_features(s_feats, t_feats, self.stage_pairs, "CC")
        terms: dict[str, Tensor] = {}
        with torch.autocast(s_logits.device.type, enabled=False):
            for (s, t), (fs, ft) in zip(self.stage_pairs, feats, strict=True):
                name = pair_name(s, t)
                e_s = self.embed_s[name](fs.flatten(1))
                e_t = self.embed_t[name](ft.flatten(1))
                terms[name] = neighbour_congruence(e_s, e_t)
            loss = torch.stack(list(terms.values())).sum()
        return {"loss": loss, **stage_parts(terms)}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, stages={self.stages!r}"
