"""Ensemble-teacher logits: the log of the mean of the members' softmax (SPEC §1.3).

Averaging probabilities (not logits) is the ensemble the replication study distils from.
Returning log-probabilities lets every logit loss consume the ensemble unchanged: softmax is
invariant to a per-row constant, so ``softmax(ensemble_logits(z)) = mean_m softmax(z_m)``.
At a temperature T ≠ 1, ``softmax(log p̄ / T)`` is the sharpened/softened *ensemble* ``p̄``,
not the mean of the softened members; this is the replication study's convention.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ensemble_logits(member_logits: Tensor) -> Tensor:
    """``log(mean_m softmax(z_m))`` for member logits [M, B, C], as float32 [B, C].

    Computed as ``logsumexp_m(log_softmax(z_m)) − log M`` in float32, which never
    exponentiates a large logit and so stays finite where ``log(mean(softmax))`` would
    underflow to ``-inf`` for confident members.
    """
    if member_logits.dim() != 3 or member_logits.shape[0] < 1:
        raise ValueError(
            f"ensemble_logits expects member logits of shape [M, B, C] with M >= 1, "
            f"got {tuple(member_logits.shape)}; stack the members with torch.stack(logits)"
        )
    m = member_logits.shape[0]
    log_p = torch.log_softmax(member_logits.float(), dim=-1)
    return torch.logsumexp(log_p, dim=0) - math.log(m)
