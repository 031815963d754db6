"""The one interface every KD loss shares, hyper-parameter checks, and the plain-CE loss.

The distillation system never branches on a method's name (STYLE rule 1): it asks the loss
which stage outputs it needs (``stages``), lets it build model-dependent parameters once
(``bind``), and logs whatever named terms it returns. Baselines and teachers use
``CrossEntropy`` through the same interface, so every system trains with one code path.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_number(name: str, value: object, hint: str) -> float:
    """Reject values that only look numeric (bool, None, NaN, strings) before range checks.

    ``True`` is an ``int`` in Python, so ``alpha=True`` would silently mean α = 1; a typo in a
    Hydra override must fail loudly instead.
    """
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        raise ValueError(f"{name}={value!r} is not a number: {hint}")
    return float(value)


def validate_alpha(alpha: object) -> float:
    """α ∈ [0, 1] is the distillation weight of ``L = α·L_kd + (1 − α)·L_ce`` (SPEC §2)."""
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


class KDLoss(nn.Module):
    """Base class of all kdlab losses; see the module docstring for the contract.

    ``forward`` returns ``{"loss": total, "ce": …, "kd": …, ...}``; the system logs each term
    ``k`` as ``train/loss_<k>`` and ``"loss"`` as ``train/loss``. Only ``"loss"`` is
    back-propagated; the other terms are for logging.
    """

    stages: tuple[str, ...] = ()

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Build parameters that depend on the models (called once, before the optimiser)."""

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        raise NotImplementedError


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
    ) -> dict[str, Tensor]:
        with torch.autocast(s_logits.device.type, enabled=False):
            ce = cross_entropy(s_logits, targets, self.label_smoothing)
        return {"loss": ce, "ce": ce}

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"
