"""The system's side of optimisers that step on the task and distillation gradients apart.

An optimiser declares ``takes_distill_gradient = True`` (``kdlab.optim.dot.DOT``); the system
then hands it the gradient of the distillation part of the loss (``loss − task``, see
``kdlab.distill.base.TASK``) and back-propagates the task part as usual, so that ``p.grad`` is
the task gradient when the optimiser steps. Nothing here knows a method's or optimiser's name.
Also here: the record of the optimiser and its settings that results.json keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def takes_distill_gradient(optimizer: object) -> bool:
    return bool(getattr(optimizer, "takes_distill_gradient", False))


def hand_over_distill_gradient(
    loss: Tensor, task: Tensor | None, params: Sequence[Tensor], optimizer
) -> Tensor:
    """Give ``optimizer`` the gradient of ``loss − task`` w.r.t. ``params``; return the tensor to
    back-propagate for ``p.grad`` (``task``, or a zero when the loss reports no task part)."""
    distill = loss - task if task is not None else loss
    grads = torch.autograd.grad(distill, params, retain_graph=True, allow_unused=True)
    optimizer.set_distill_gradient(params, grads)
    return task if task is not None else loss * 0.0


def check_split_gradients(
    name: str, grad_clip: float | None, world_size: int = 1, accumulate: int = 1
) -> None:
    """What such an optimiser cannot share with the rest of the loop: clipping (it sees
    ``p.grad``, the task gradient only), DDP (its all-reduce hooks fire on ``backward``, not on
    ``autograd.grad``) and gradient accumulation (Lightning scales only what it
    back-propagates)."""
    if grad_clip is not None:
        raise ValueError(
            f"grad_clip={grad_clip} with {name}, which steps on the task and the distillation "
            "gradients separately: clipping would cover the task gradient only. Set "
            "grad_clip=null (the CIFAR-100 benchmark recipe does not clip)"
        )
    if world_size > 1:
        raise ValueError(
            f"{name} takes the distillation gradient apart, which DDP does not synchronise "
            "across processes: run it on one device (trainer.devices=1)"
        )
    if accumulate > 1:
        raise ValueError(
            f"{name} takes the distillation gradient apart, which Lightning's gradient "
            f"accumulation does not scale: set trainer.accumulate_grad_batches=1 (got {accumulate})"
        )


def optimizer_record(factory: object) -> dict:
    """The optimiser and its settings as results.json records them (a Hydra ``_partial_``
    factory: its target and keyword arguments)."""
    func = getattr(factory, "func", factory)
    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}"
    settings = dict(getattr(factory, "keywords", {}) or {})
    return {"name": name, **{k: _plain(v) for k, v in settings.items() if k != "params"}}


def _plain(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "__iter__") and not hasattr(value, "keys"):
        return [_plain(v) for v in value]
    return str(value)
