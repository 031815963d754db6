"""The distillation-oriented trainer, DOT (Zhao et al., "DOT: A Distillation-Oriented Trainer",
ICCV 2023): SGD with one momentum for the task gradient and another for the distillation one.

DOT argues that the task loss (CE) and the distillation loss pull against each other and that
the distillation gradient should dominate: it keeps *two* momentum buffers per parameter and
gives the distillation one the larger momentum, ``μ_kd = μ + Δ`` against ``μ_task = μ − Δ``
(published ``μ`` 0.9, ``Δ`` 0.075). Per step, with ``g_task`` (plus weight decay) and ``g_kd``::

    b_task ← μ_task·b_task + g_task + wd·θ          b_kd ← μ_kd·b_kd + g_kd
    θ      ← θ − lr·(b_task + b_kd)

A buffer starts as its first gradient. A parameter that only one loss reaches (e.g. a
projection head only the distillation term sees) uses the plain ``μ`` for that buffer and takes
the weight decay there; one with neither gradient is skipped. With ``Δ = 0`` the two buffers add
up to SGD's single buffer: DOT is then exactly SGD with momentum ``μ`` (no dampening, no
Nesterov).

How it gets two gradients (a general capability, not a method name): the optimiser says
``takes_distill_gradient = True``. The system then computes the distillation part's gradient
itself (``torch.autograd.grad`` of ``loss − task``, see ``kdlab.distill.base.TASK``), hands it
over with ``set_distill_gradient``, and back-propagates the task part as usual, so ``p.grad``
is the task gradient when ``step`` runs.

Public code read to check the behaviour: megvii-research/mdistiller (commit
a08d46f10d6102bd6e3f258ca5ac880b020ea259): ``mdistiller/engine/dot.py``
(``DistillationOrientedTrainer``: ``step_kd`` keeps the KD gradients, ``step`` updates both
buffers, the shared-parameter and one-sided cases as above), ``mdistiller/engine/trainer.py``
(``DOT``: ``momentum = MOMENTUM − DELTA``, ``momentum_kd = MOMENTUM + DELTA``; backward of the KD
loss, then of the CE loss), ``configs/cifar100/dot/*.yaml`` (``DELTA`` 0.075, SGD lr 0.05, wd 5e-4).
Differences: one ``step`` instead of ``step_kd`` + ``step`` (the system provides the distillation
gradient), any number of parameter groups (the published code asserts one), no dampening
argument (published 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer


class DOT(Optimizer):
    """SGD with separate momenta for the task and the distillation gradient (module doc).

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        momentum: the base momentum μ (published 0.9).
        delta: Δ: task momentum μ − Δ, distillation momentum μ + Δ (published 0.075).
        weight_decay: L2 weight decay, added to the task gradient.
    """

    takes_distill_gradient = True  # the system hands over the distillation gradient apart

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        delta: float = 0.075,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr={lr} must be >= 0")
        if not (0.0 <= momentum - delta and momentum + delta < 1.0):
            raise ValueError(
                f"momentum={momentum}, delta={delta}: both momenta μ − Δ and μ + Δ must lie in "
                "[0, 1) (published μ 0.9, Δ 0.075)"
            )
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay={weight_decay} must be >= 0")
        defaults = dict(lr=lr, momentum=momentum, delta=delta, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def set_distill_gradient(
        self, params: Sequence[Tensor], grads: Sequence[Tensor | None]
    ) -> None:
        """The distillation gradient of ``params`` for the next ``step`` (None: not reached)."""
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                self.state[p]["distill_grad"] = g.detach().clone()

    @staticmethod
    def _accumulate(state: dict, key: str, grad: Tensor, momentum: float) -> Tensor:
        buf = state.get(key)
        if buf is None:
            buf = state[key] = grad.clone()
        else:
            buf.mul_(momentum).add_(grad)
        return buf

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            mu, delta, wd, lr = (
                group["momentum"],
                group["delta"],
                group["weight_decay"],
                group["lr"],
            )
            for p in group["params"]:
                state = self.state[p]
                g_kd = state.pop("distill_grad", None)
                g_task = p.grad
                if g_task is None and g_kd is None:
                    continue
                both = g_task is not None and g_kd is not None
                update = torch.zeros_like(p)
                if g_task is not None:
                    g = g_task.add(p, alpha=wd) if wd else g_task
                    update += self._accumulate(state, "task_buffer", g, mu - delta if both else mu)
                if g_kd is not None:
                    g = g_kd.add(p, alpha=wd) if wd and g_task is None else g_kd
                    update += self._accumulate(
                        state, "distill_buffer", g, mu + delta if both else mu
                    )
                p.add_(update, alpha=-lr)
        return loss
