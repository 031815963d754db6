"""How a student's weights start: a seed of their own, and initialisation proximity.

Paired comparisons (baseline vs distilled student, the introductory notebook) are only truly paired when both
students start from identical weights; ``seeded_build`` builds a network under its own seed
(``init_seed``) inside ``torch.random.fork_rng`` so that the run's ``seed`` alone drives the data
order, and building the network does not shift the global random stream.

Initialisation proximity (the "Does KD really work?" replication, "Does KD really work?"): the student starts at
``θ_s = λ·θ_teacher + (1 − λ)·θ_random`` and trains with the learning rate scaled by
``(1 − λ)``, so larger λ keeps it closer to the teacher's basin.

BatchNorm buffers (and any other floating-point buffer) are interpolated exactly like the
parameters: ``running_mean``/``running_var`` describe the activations of the layer they belong
to, and interpolating them keeps λ = 1 an exact copy of the teacher (same eval predictions)
and λ = 0 exactly the random init (mean 0, variance 1). Integer buffers — BatchNorm's
``num_batches_tracked`` — keep the random init's value (0): the counter is only read when BN
uses a cumulative average (``momentum=None``), and the teacher's large count would then freeze
the student's statistics at the interpolated values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M")


def seeded_build(build: Callable[[], M], init_seed: int) -> M:
    """Call ``build()`` with torch's CPU generator seeded to ``init_seed``, then restore it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return build()


def validate_lambda(lam: object, training: bool = True) -> float:
    """λ ∈ [0, 1]; λ = 1 is refused for training (the lr would be scaled to 0)."""
    hint = "student_init.lambda is the weight of the teacher's weights in [0, 1] (null = off)"
    if isinstance(lam, bool) or not isinstance(lam, int | float) or math.isnan(lam):
        raise ValueError(f"student_init.lambda={lam!r} is not a number: {hint}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"student_init.lambda={lam!r} is outside [0, 1]: {hint}")
    if training and lam == 1.0:
        raise ValueError(
            "student_init.lambda=1 copies the teacher and scales the learning rate by 1 − λ = 0, "
            "so nothing would train; use λ < 1 (the study's largest is 0.9), or evaluate the "
            "teacher itself"
        )
    return float(lam)


def lr_scale(lam: float | None) -> float:
    """The learning-rate factor of init proximity: ``1 − λ`` (1 when off)."""
    return 1.0 if lam is None else 1.0 - float(lam)


def _check_same_architecture(student: nn.Module, teacher: nn.Module) -> None:
    s, t = student.state_dict(), teacher.state_dict()
    s_arch, t_arch = (
        getattr(student, "arch", type(student).__name__),
        getattr(teacher, "arch", type(teacher).__name__),
    )
    diff = sorted(set(s) ^ set(t))
    shapes = [k for k in s.keys() & t.keys() if s[k].shape != t[k].shape]
    if type(student) is not type(teacher) or diff or shapes:
        raise ValueError(
            f"init proximity needs the same architecture for student and teacher, got student "
            f"'{s_arch}' ({type(student).__name__}) and teacher '{t_arch}' "
            f"({type(teacher).__name__}); differing keys {diff[:4]}, shapes {sorted(shapes)[:4]}. "
            "Use a self-distillation pair (e.g. +experiment=initprox_preresnet20_logit) or set "
            "student_init.lambda=null"
        )


@torch.no_grad()
def interpolate_init(student: nn.Module, teacher: nn.Module, lam: float) -> nn.Module:
    """Set ``student`` (holding its random init) to ``λ·teacher + (1 − λ)·student`` in place.

    Parameters and floating-point buffers are interpolated with ``torch.lerp`` (exact at
    λ = 0 and λ = 1); integer buffers keep the student's values (see the module docstring).
    Raises ``ValueError`` unless both networks have the same class and state-dict shapes.
    """
    lam = validate_lambda(lam, training=False)
    _check_same_architecture(student, teacher)
    t_state = teacher.state_dict()
    for name, value in student.state_dict().items():
        if value.is_floating_point():
            value.lerp_(t_state[name].to(value.device, value.dtype), lam)
    return student
