"""Fast steps for KD runs (issue 7): folded teacher, channels_last, compile, batched ensembles.

``apply_fast(system, ...)`` is called once by ``kdlab.train.build_system`` (top-level config
keys ``fold_teacher_bn``, ``channels_last``, ``compile``, ``ensemble_vmap``):

- **BN folding.** Each frozen teacher member is replaced (in the module tree that runs) by an
  eval-mode copy with BatchNorm merged into its convolutions (``kdlab.models.fold``); the
  unfolded networks stay in ``teacher.members`` and the checkpoint hashes in
  ``teacher.sources``, so results.json and init proximity still see the trained weights.
  Folding keeps ``forward_stages`` (feature KD, CKA).
- **channels_last** (NHWC) for student, teacher and inputs: faster convolutions with tensor
  cores on CUDA; on CPU it is often slower, so ``auto`` means on for CUDA only.
- **torch.compile** (``compile=true``, off by default) compiles the student's and the teacher's
  ``forward`` in place (``nn.Module.compile``: parameter names, hence checkpoints, unchanged).
  ``forward_stages`` (feature KD) stays eager.
- **Ensembles without a Python loop per member.** Same-architecture members are stacked
  (``torch.func.stack_module_state``) and run with ``vmap`` over ``functional_call``; a member
  set that cannot be stacked keeps the loop.

The teacher's forward runs under ``torch.inference_mode`` in the Distiller (``teacher_forward``):
no autograd bookkeeping at all. Inference tensors cannot be saved for backward, so the outputs
are cloned into normal tensors before the loss sees them (a copy of B×C logits or the stage
maps, negligible next to the forward).
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import Tensor, nn

from kdlab.models.fold import fold_batchnorm

log = logging.getLogger(__name__)


def resolve_channels_last(value: bool | str, device_type: str) -> bool:
    """``auto`` → on for CUDA only (NHWC convolutions are slower on many CPUs)."""
    if value == "auto":
        return device_type == "cuda"
    if isinstance(value, bool):
        return value
    raise ValueError(f"channels_last must be true, false or auto, got {value!r}")


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


def _fold_teacher(teacher: nn.Module) -> None:
    if hasattr(teacher, "nets"):  # EnsembleTeacher
        teacher.nets = nn.ModuleList(fold_batchnorm(n) for n in teacher.nets)
    elif hasattr(teacher, "net"):  # FrozenTeacher
        teacher.net = fold_batchnorm(teacher.net)


def _use_stacked(teacher: nn.Module) -> bool:
    stacked = stack_members(list(teacher.nets))
    if stacked is None:
        return False
    teacher.stacked = stacked  # registered: follows .to(device)
    # a plain instance attribute (not a submodule) so it wins over the class's member loop
    teacher.__dict__["forward_members"] = stacked
    return True


def apply_fast(
    system: nn.Module,
    device_type: str = "cpu",
    fold_teacher_bn: bool = True,
    channels_last: bool | str = "auto",
    compile: bool = False,
    ensemble_vmap: bool = True,
) -> dict[str, bool]:
    """Apply the fast-step settings to a Classifier/Distiller in place; returns what was done."""
    teacher = getattr(system, "teacher", None)
    done = {"fold_teacher_bn": False, "channels_last": False, "compile": False, "vmap": False}
    if teacher is not None and fold_teacher_bn:
        _fold_teacher(teacher)
        done["fold_teacher_bn"] = True
    if resolve_channels_last(channels_last, device_type):
        system.net.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)
        system.input_format = torch.channels_last  # Classifier converts each batch's images
        done["channels_last"] = True
    if teacher is not None and ensemble_vmap and hasattr(teacher, "nets"):
        done["vmap"] = _use_stacked(teacher)
    if compile:
        system.net.compile()
        if teacher is not None:
            if done["vmap"]:
                teacher.stacked.compile()
            for net in getattr(teacher, "nets", None) or [teacher.net]:
                net.compile()
        done["compile"] = True
    log.info("fast steps: %s", ", ".join(f"{k}={v}" for k, v in done.items()))
    return done


def teacher_forward(teacher: nn.Module, x: Tensor, stages: bool = False):
    """The frozen teacher's logits (and stage maps) under ``inference_mode``, as normal tensors.

    Cloning outside inference mode turns the outputs into ordinary tensors that the loss may
    save for its backward pass (the student's gradient never flows into them).
    """
    with torch.inference_mode():
        out = teacher.forward_stages(x) if stages else teacher(x)
    if stages:
        logits, feats = out
        return logits.clone(), {k: v.clone() for k, v in feats.items()}
    return out.clone()
