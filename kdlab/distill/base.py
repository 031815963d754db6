"""The one interface every KD loss shares, hyper-parameter checks, and the plain-CE loss.

The distillation system never branches on a method's name: it asks the loss which stage outputs
it needs (``stage_pairs``), lets it build model-dependent parameters once (``bind``), tells it
the epoch (``set_epoch``), and logs whatever named terms it returns. A method's settings are
data (``method_params``): the system records them without knowing their names. Baselines and
teachers use ``CrossEntropy`` through the same interface, so every system trains with one code
path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TASK = "task"  # the key of the supervised part of a loss (see ``KDLoss``)


def _check_number(name: str, value: object, hint: str) -> float:
    """Reject values that only look numeric (bool, None, NaN, strings) before range checks.

    ``True`` is an ``int`` in Python, so ``alpha=True`` would silently mean α = 1; a typo in a
    Hydra override must fail loudly instead.
    """
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        raise ValueError(f"{name}={value!r} is not a number: {hint}")
    return float(value)


def validate_alpha(alpha: object) -> float:
    """α ∈ [0, 1] is the distillation weight of ``L = α·L_kd + (1 − α)·L_ce``."""
    hint = (
        "alpha is the distillation weight (0 = plain CE baseline, 1 = pure distillation); "
        "pass e.g. alpha=0.5"
    )
    a = _check_number("alpha", alpha, hint)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha={alpha!r} is outside [0, 1]: {hint}")
    return a


def validate_temperature(temperature: object) -> float:
    """T > 0 (and finite) softens both distributions; T = 1 is the plain softmax."""
    hint = (
        "the temperature must be a finite number > 0 (1 = plain softmax, larger = softer "
        "targets); pass e.g. temperature=4"
    )
    t = _check_number("temperature", temperature, hint)
    if not (t > 0.0 and math.isfinite(t)):
        raise ValueError(f"temperature={temperature!r} is not allowed: {hint}")
    return t


def validate_beta(beta: object) -> float:
    """β ≥ 0 weighs feature KD's cosine term against its MSE term."""
    hint = (
        "beta weighs the cosine term of feature KD and must be a finite number >= 0 "
        "(0 = MSE only); pass e.g. beta=0.5"
    )
    b = _check_number("beta", beta, hint)
    if not (b >= 0.0 and math.isfinite(b)):
        raise ValueError(f"beta={beta!r} is not allowed: {hint}")
    return b


def validate_label_smoothing(label_smoothing: object) -> float:
    """Label smoothing of the CE term in [0, 1) (1 would erase the labels)."""
    hint = "label smoothing must be in [0, 1) (0 = none); pass e.g. label_smoothing=0.1"
    ls = _check_number("label_smoothing", label_smoothing, hint)
    if not 0.0 <= ls < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing!r} is outside [0, 1): {hint}")
    return ls


def cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """CE in float32 (hard class indices or soft/mixed target probabilities)."""
    if targets.is_floating_point():
        targets = targets.float()
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def mix(alpha: float, kd: Tensor, ce: Tensor) -> Tensor:
    """``α·kd + (1 − α)·ce``, dropping a term whose weight is exactly zero.

    Dropping (rather than multiplying by 0) makes α = 0 *exactly* plain CE and α = 1 free of
    any CE gradient, and keeps a non-finite unused term from poisoning the total.
    """
    if alpha == 0.0:
        return ce
    if alpha == 1.0:
        return kd
    return alpha * kd + (1.0 - alpha) * ce


def validate_weight(name: str, value: object) -> float:
    """A loss weight: a finite number ≥ 0 (0 switches the term off)."""
    hint = f"{name} is a loss weight: a finite number >= 0 (0 = term off)"
    w = _check_number(name, value, hint)
    if not (w >= 0.0 and math.isfinite(w)):
        raise ValueError(f"{name}={value!r} is not allowed: {hint}")
    return w


def check_positive(name: str, value: object, hint: str) -> float:
    """A finite number > 0."""
    v = _check_number(name, value, hint)
    if not (v > 0.0 and math.isfinite(v)):
        raise ValueError(f"{name}={value!r} is not allowed: {hint}")
    return v


def check_int(name: str, value: object, minimum: int, hint: str) -> int:
    """An integer ≥ ``minimum`` (bools and non-integral numbers are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed: {hint}")
    return int(value)


def validate_loss_weight(name: str, value: object, example: str) -> float:
    """A weight inside a method's loss: a finite number ≥ 0 (0 switches that part off)."""
    hint = f"{name} must be a finite number >= 0 (0 = that part off); pass e.g. {name}={example}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}={value!r} is not a number: {hint}")
    v = float(value)
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"{name}={value!r} is not allowed: {hint}")
    return v


def validate_warmup(warmup: object) -> int:
    """Warm-up length in epochs: an integer ≥ 0 (0 = full weight from the first epoch)."""
    hint = (
        "warmup is the number of epochs over which the loss weight rises linearly to 1; it must "
        "be an integer >= 0 (0 = no warm-up); pass e.g. warmup=20"
    )
    if isinstance(warmup, bool) or not isinstance(warmup, int | float):
        raise ValueError(f"warmup={warmup!r} is not a number: {hint}")
    if not (math.isfinite(warmup) and float(warmup).is_integer() and warmup >= 0):
        raise ValueError(f"warmup={warmup!r} is not allowed: {hint}")
    return int(warmup)


def parse_stage_pairs(stages: Sequence[str] | str) -> tuple[tuple[str, str], ...]:
    """``["layer1", "layer4:blocks_11"]`` → ``(("layer1", "layer1"), ("layer4", "blocks_11"))``.

    A plain name means the same stage on both sides; ``s:t`` pairs a student stage with a
    teacher stage of another name (e.g. a ResNet student of a ViT teacher).
    """
    names = (stages,) if isinstance(stages, str) else tuple(str(s) for s in stages)
    pairs = tuple(tuple(n.split(":", 1)) if ":" in n else (n, n) for n in names)
    if not pairs or len(set(names)) != len(names) or any(not s or not t for s, t in pairs):
        raise ValueError(f"stages={list(names)} must be a non-empty list of distinct names")
    return pairs  # type: ignore[return-value]


class KDLoss(nn.Module):
    """Base class of all kdlab losses: the contract between a method and the system.

    A loss is built from its config (``_target_`` plus its settings) and then:

    - ``bind(student, teacher)`` is called once, before the optimiser exists: build what depends
      on the models (projection heads, embeddings, memory banks) as submodules, parameters and
      buffers. They are optimised, clipped and checkpointed with the student, never exported as
      the student. Unknown stages must raise a ``ValueError`` naming the available ones.
    - ``stage_pairs`` (set in ``__init__`` or ``bind``) lists the ``(student_stage,
      teacher_stage)`` outputs it reads; ``student_preact``/``teacher_preact`` ask for
      pre-activation features of that side (models with ``has_preact``).
      The system then passes ``s_feats``/``t_feats`` keyed by each side's stage names.
    - ``bind_data(labels)`` is called at set-up with the training split's labels (int64 [N]),
      before checkpoints are restored: size per-sample state there (memory banks).
    - ``set_epoch(epoch)`` is called at every training epoch start (warm-up schedules).
    - ``forward(s_logits, t_logits, targets, s_feats, t_feats, index=...)`` returns
      ``{"loss": total, **parts}``; the system back-propagates ``"loss"`` and logs every part
      ``k`` as ``train/loss_<k>``. ``targets`` are class indices [B] or soft targets [B, C]
      (MixUp); ``index`` holds the training-split rows of the batch (memory banks).
    - A loss that contains a supervised term (CE on the labels) also returns it, weighted and
      *not* detached, under ``TASK`` (``"task"``): the part of ``"loss"`` that the labels
      drive. The system takes it out before logging; an optimiser that treats the task and the
      distillation gradients apart (``kdlab.optim.dot``) steps on ``task`` and
      ``loss − task``. No ``task`` means the whole loss is distillation.
    - ``needs_strong_view``: the loss also reads a strong view of every training image; the
      system then passes ``strong=StrongLogits(student, teacher)`` (both networks' logits on
      ``Batch.x_strong``; ``data.strong_view`` follows this flag by default).
    - ``needs_networks``: the loss runs parts of the networks itself (a teacher's later stages
      on student features, the classifiers' weights); the system passes
      ``networks=Networks(student, teacher)``. The teacher stays frozen: a loss may run it
      (gradients reach its inputs), never train it.
    - ``method_params()`` returns every constructor argument as used: store each argument
      under its own name (validated), and results.json, run tags, sweep folders and the report
      all follow. ``short_names`` gives the letters used in run tags (``{"alpha": "a"}``).
    """

    short_names: ClassVar[dict[str, str]] = {}
    stage_pairs: tuple[tuple[str, str], ...] = ()
    student_preact: bool = False
    teacher_preact: bool = False
    needs_strong_view: bool = False
    needs_networks: bool = False
    epoch: int = 0

    @property
    def student_stages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for s, _ in self.stage_pairs))

    @property
    def teacher_stages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for _, t in self.stage_pairs))

    @property
    def uses_features(self) -> bool:
        return bool(self.stage_pairs)

    def extra_inputs(self) -> frozenset[str]:
        """The keyword inputs ``forward`` takes beyond the common ones (``strong``,
        ``networks``), as declared by the flags above."""
        names = {"strong": self.needs_strong_view, "networks": self.needs_networks}
        return frozenset(n for n, wanted in names.items() if wanted)

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Build parameters that depend on the models (called once, before the optimiser)."""

    def bind_data(self, labels: Tensor) -> None:
        """Size state that follows the training split (called at set-up; may run again)."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def method_params(self) -> dict[str, Any]:
        """Every constructor argument, as used: what results.json records (one reader,
        ``kdlab.utils.method_params.loss_tree``, serves this, run tags and labels)."""
        from kdlab.utils.method_params import loss_tree, params

        return params(loss_tree(self))

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class StrongLogits:
    """Both networks' logits on the strong view of the batch (``Batch.x_strong``)."""

    student: Tensor
    teacher: Tensor


@dataclass(frozen=True)
class Networks:
    """The student being trained and the frozen teacher, for losses that run parts of them
    (``forward_from``, ``classifier_head``); never stored by a loss."""

    student: nn.Module
    teacher: nn.Module


class CrossEntropy(KDLoss):
    """Plain (optionally label-smoothed) CE for teachers and baselines; ignores the teacher."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = validate_label_smoothing(label_smoothing)

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        with torch.autocast(s_logits.device.type, enabled=False):
            ce = cross_entropy(s_logits, targets, self.label_smoothing)
        return {"loss": ce, "ce": ce, TASK: ce}

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"
