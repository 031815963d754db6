"""Ensemble-teacher logits, and running same-architecture members as one batched call.

Averaging probabilities (not logits) is the ensemble the replication study distils from.
Returning log-probabilities lets every logit loss consume the ensemble unchanged: softmax is
invariant to a per-row constant, so ``softmax(ensemble_logits(z)) = mean_m softmax(z_m)``.
At a temperature T ≠ 1, ``softmax(log p̄ / T)`` is the sharpened/softened *ensemble* ``p̄``,
not the mean of the softened members; this is the replication study's convention.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


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


class StackedMembers(nn.Module):
    """Same-architecture networks run as one batched call: ``vmap(functional_call)``.

    The members' parameters and buffers are stacked along a new leading dim and kept as
    buffers (frozen, they follow ``.to(device)``); one member on the ``meta`` device serves as
    the stateless template. ``forward(x)`` returns ``[M, B, C]`` like the member loop.
    """

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        if len({type(n) for n in nets}) != 1:
            raise ValueError("StackedMembers needs members of one architecture")
        params, buffers = torch.func.stack_module_state(nets)
        self._names = list(params) + list(buffers)
        self._n_params = len(params)
        for i, t in enumerate([*params.values(), *buffers.values()]):
            self.register_buffer(f"s{i}", t.detach().clone(), persistent=False)
        self.template = [copy.deepcopy(nets[0]).to("meta")]  # a list: not a submodule

    def _member(self, state: tuple[Tensor, ...], x: Tensor) -> Tensor:
        p = dict(zip(self._names[: self._n_params], state[: self._n_params], strict=True))
        b = dict(zip(self._names[self._n_params :], state[self._n_params :], strict=True))
        return torch.func.functional_call(self.template[0], (p, b), (x,))

    def forward(self, x: Tensor) -> Tensor:
        state = tuple(getattr(self, f"s{i}") for i in range(len(self._names)))
        return torch.func.vmap(self._member, in_dims=(0, None))(state, x)


def stack_members(nets: list[nn.Module], x: Tensor | None = None) -> StackedMembers | None:
    """A ``StackedMembers`` when the nets can be stacked (checked on ``x`` if given), else None."""
    try:
        stacked = StackedMembers(nets)
        if x is not None:
            with torch.inference_mode():
                stacked(x)
        return stacked
    except Exception as err:  # e.g. differing shapes or an op vmap does not support
        log.info("ensemble: members cannot be batched with vmap (%s); using a loop", err)
        return None
