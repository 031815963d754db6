"""What every logit loss shares, so that modifiers and logit standardisation compose with all.

A *logit loss* compares the student's and the teacher's logit rows sample by sample at a
temperature. ``LogitLoss`` makes that explicit with one method, ``sample_losses``: the loss of
each row (``[N]``, whose mean is the loss the method trains on) at the loss's own temperature or
at one given by the caller. That is all a modifier needs:

- CTKD (``kdlab.distill.ctkd``) calls it with a learned temperature (a scalar, or one per row);
- SDD (``kdlab.distill.sdd``) calls it on the logits of many pooled regions of each image.

Logit standardisation (Sun et al., CVPR 2024) is part of the same path: with
``standardize=True`` both rows are z-scored *before* the temperature, whoever supplies the
temperature and whichever rows are compared. So "X + LS" is the one setting ``standardize`` of
the logit loss X, and a modifier around X inherits it unchanged.

Temperatures may be a float, a 0-d tensor or a ``[N, 1]`` column: ``split_temperature`` gives the
divisor of the logits and the per-row ``T²`` factor for any of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdlab.distill.base import KDLoss
from kdlab.distill.parts import hard_classes

Temperature = float | Tensor


def zscore(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score each row: ``(z − mean(z)) / (std(z) + eps)`` over the classes (unbiased std).

    Logit standardisation (Sun et al., CVPR 2024) lets a student match the teacher's logit
    *shape* without matching its scale, which a shared temperature otherwise forces.
    """
    z = logits.float()
    return (z - z.mean(dim=-1, keepdim=True)) / (z.std(dim=-1, keepdim=True) + eps)


def split_temperature(temperature: Temperature) -> tuple[Temperature, Temperature]:
    """``(divisor, square)``: divide ``[N, C]`` logits by the first; the second is ``T²`` as a
    scalar or per row ``[N]``."""
    if isinstance(temperature, Tensor) and temperature.ndim == 2:
        return temperature, temperature.squeeze(1) ** 2
    if isinstance(temperature, Tensor):
        t = temperature.reshape(())
        return t, t * t
    t = float(temperature)
    return t, t * t


def check_bool(name: str, value: object, meaning: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be true or false ({meaning})")
    return value


def check_pair(method: str, s_logits: Tensor, t_logits: Tensor | None) -> Tensor:
    """The teacher logits, after checking both are ``[B, C]`` with the same shape."""
    if t_logits is None:
        raise ValueError(f"{method} needs teacher logits (t_logits is None)")
    if t_logits.shape != s_logits.shape or s_logits.ndim != 2 or s_logits.shape[1] < 2:
        raise ValueError(
            f"{method} needs student and teacher logits of the same shape [B, C] with C >= 2 "
            f"classes; got {tuple(s_logits.shape)} and {tuple(t_logits.shape)} (check the "
            "teacher checkpoint and data=)"
        )
    return t_logits


class LogitLoss(KDLoss):
    """A KD loss on logit rows: ``loss = mean_i sample_losses(z_s, z_t, y)_i``.

    Subclasses set ``temperature`` and ``standardize`` and implement ``row_losses`` on the
    prepared (float32, detached teacher, z-scored when asked) logits. ``weight`` scales the
    whole term (DKD's warm-up). The targets may be class indices or soft targets (MixUp):
    the methods that need a target class take its argmax (``hard_classes``).
    """

    method = "logit loss"
    temperature: float = 1.0
    standardize: bool = False

    def weight(self) -> float:
        """A factor on the whole term for the current epoch (1 unless a schedule says so)."""
        return 1.0

    def prepare(self, s_logits: Tensor, t_logits: Tensor) -> tuple[Tensor, Tensor]:
        """float32 rows, the teacher's detached, both z-scored under logit standardisation."""
        zs, zt = s_logits.float(), t_logits.detach().float()
        if self.standardize:
            zs, zt = zscore(zs), zscore(zt)
        return zs, zt

    def row_losses(
        self, zs: Tensor, zt: Tensor, targets: Tensor, temperature: Temperature
    ) -> dict[str, Tensor]:
        """Per-row ``{"loss": [N], **parts}`` on prepared logits (before ``weight``)."""
        raise NotImplementedError

    def sample_rows(
        self,
        s_logits: Tensor,
        t_logits: Tensor,
        targets: Tensor,
        temperature: Temperature | None = None,
    ) -> dict[str, Tensor]:
        """``row_losses`` of the raw rows, ``loss`` scaled by ``weight()`` (float32, no autocast)."""
        with torch.autocast(s_logits.device.type, enabled=False):
            zs, zt = self.prepare(s_logits, t_logits)
            t = self.temperature if temperature is None else temperature
            rows = self.row_losses(zs, zt, targets.to(s_logits.device), t)
            rows["loss"] = self.weight() * rows["loss"]
        return rows

    def sample_losses(
        self,
        s_logits: Tensor,
        t_logits: Tensor,
        targets: Tensor,
        temperature: Temperature | None = None,
    ) -> Tensor:
        """The loss of each row ``[N]`` at ``temperature`` (default: the loss's own)."""
        return self.sample_rows(s_logits, t_logits, targets, temperature)["loss"]

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``{"loss": batch mean, **parts}`` (parts: batch means, detached)."""
        t_logits = check_pair(self.method, s_logits, t_logits)
        rows = self.sample_rows(s_logits, t_logits, targets)
        out = {k: v.mean() for k, v in rows.items()}
        return {"loss": out.pop("loss"), **{k: v.detach() for k, v in out.items()}}


__all__ = ["LogitLoss", "check_bool", "check_pair", "hard_classes", "split_temperature", "zscore"]
