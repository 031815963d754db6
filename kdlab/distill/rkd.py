"""Relational KD (RKD; Park et al., CVPR 2019): distance and angle terms, as in the CIFAR-100
benchmark.

RKD transfers the *geometry* of the batch's embeddings ``x_i`` (flattened features):

- distance: ``ψ_D(i, j) = ‖x_i − x_j‖₂ / μ``, with ``μ`` the mean distance over the pairs
  ``i ≠ j`` of the batch (so the scale of each network drops out);
- angle: ``ψ_A(i, j, k) = ⟨e_ij, e_ik⟩`` with ``e_ij = (x_j − x_i)/‖x_j − x_i‖₂``, the cosine of
  the angle at ``x_i`` of the triangle (i, j, k) (0 where a difference vector is 0).

Each is compared with the Huber loss ``h(x) = ½x²`` for ``|x| < 1``, ``|x| − ½`` otherwise,
averaged over all B² ordered pairs (the zero diagonal included) and all B³ ordered triples::

    L_RKD = w_d · mean_{i,j} h(ψ_D^s − ψ_D^t) + w_a · mean_{i,j,k} h(ψ_A^s − ψ_A^t)

Published settings (RepDistiller ``distiller_zoo/RKD.py`` ``w_d = 25, w_a = 50`` on the pooled
vector ``feat[-1]``, weight ``-b 1``; mdistiller ``CFG.RKD``): ``distance_weight=25,
angle_weight=50, stages="pool"``. Distances follow the published numerics: squared distances
from the Gram matrix clamped at 1e-12 before the square root. RKD has no trainable parts. A
batch of one sample has no pairs: the loss is then 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.base import KDLoss, validate_weight
from kdlab.distill.parts import paired_features, resolve_stages, stages_argument


def pairwise_distances(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances [B, B] of the rows of ``x`` [B, D], zero on the diagonal."""
    sq = x.pow(2).sum(dim=1)
    d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2.0 * x @ x.t()).clamp(min=eps)
    off_diagonal = 1.0 - torch.eye(x.shape[0], device=x.device, dtype=x.dtype)
    return d2.sqrt() * off_diagonal


def distance_potential(x: Tensor) -> Tensor:
    """``ψ_D``: pairwise distances divided by their mean over the pairs ``i ≠ j``."""
    d = pairwise_distances(x)
    b = x.shape[0]
    return d / (d.sum() / (b * (b - 1)))


def angle_potential(x: Tensor) -> Tensor:
    """``ψ_A`` [B, B, B]: ``[i, j, k] = ⟨unit(x_j − x_i), unit(x_k − x_i)⟩``."""
    e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # e[i, j] = unit(x_j − x_i)
    return e @ e.transpose(1, 2)


class RKD(KDLoss):
    """Distance- and angle-wise relational KD on the batch's embeddings.

    Args:
        distance_weight: weight ``w_d`` ≥ 0 of the distance term (published: 25).
        angle_weight: weight ``w_a`` ≥ 0 of the angle term (published: 50); not both 0.
        stages: the paired stages: ``"pool"`` (published: the pooled vector), ``"last"``, a
            stage name, or a list of names / ``s:t`` pairs (maps are flattened).

    Returns ``{"loss", "distance", "angle"}``: the unweighted terms (summed over stage pairs);
    a term whose weight is 0 is neither computed nor returned.
    """

    short_names = {"distance_weight": "wd", "angle_weight": "wa"}

    def __init__(
        self,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        stages: str | Sequence[str] = "pool",
    ) -> None:
        super().__init__()
        self.distance_weight = validate_weight("distance_weight", distance_weight)
        self.angle_weight = validate_weight("angle_weight", angle_weight)
        if self.distance_weight == 0.0 and self.angle_weight == 0.0:
            raise ValueError(
                "RKD: distance_weight=0 and angle_weight=0 switch both terms off; set at least "
                "one > 0 (published: distance_weight=25, angle_weight=50)"
            )
        self.stages, self.stage_pairs = stages_argument(stages, "RKD")

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.stage_pairs = resolve_stages(self.stages, student, teacher, "RKD")

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        feats = paired_features(s_feats, t_feats, self.stage_pairs, "RKD")
        with torch.autocast(s_logits.device.type, enabled=False):
            per_pair = [self._terms(fs.flatten(1), ft.flatten(1)) for fs, ft in feats]
            parts = {k: torch.stack([p[k] for p in per_pair]).sum() for k in per_pair[0]}
            loss = sum(self.weight(k) * v for k, v in parts.items())
        return {"loss": loss, **{k: v.detach() for k, v in parts.items()}}

    def weight(self, term: str) -> float:
        return self.distance_weight if term == "distance" else self.angle_weight

    def _terms(self, xs: Tensor, xt: Tensor) -> dict[str, Tensor]:
        """The unweighted terms whose weight is > 0, for one pair of [B, D] embeddings."""
        active = [k for k in ("distance", "angle") if self.weight(k) > 0]
        if xs.shape[0] < 2:  # a batch of one has no pairs: 0, with the graph kept
            return {k: xs.sum() * 0.0 for k in active}
        potential = {"distance": distance_potential, "angle": angle_potential}
        return {k: F.smooth_l1_loss(potential[k](xs), potential[k](xt)) for k in active}

    def extra_repr(self) -> str:
        return (
            f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}, "
            f"stages={self.stages!r}"
        )
