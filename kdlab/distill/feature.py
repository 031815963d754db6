"""Feature KD, exactly as kdlab fixes it.

Per aligned stage a 1×1 conv (no bias) maps student channels to teacher channels and the
larger feature map is average-pooled down to the smaller one;
``L_kd = mean_s MSE(proj(f_s), f_t) + β·mean_s (1 − cos(GAP(proj(f_s)), GAP(f_t)))``.
The projections are parameters of this loss, so the system must put ``loss.parameters()`` in
the optimiser *and* in gradient clipping (the studies' bug clipped the student only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.base import (
    TASK,
    KDLoss,
    cross_entropy,
    mix,
    parse_stage_pairs,
    validate_alpha,
    validate_beta,
    validate_label_smoothing,
)
from kdlab.distill.parts import ROLES, pool_to, select_stages
from kdlab.models.base import check_stages, stage_shapes


def _stage_shapes(model: nn.Module, role: str, stages: tuple[str, ...], size: int) -> dict:
    """Check the stage names on ``model`` and return their (C, H, W) shapes."""
    if not callable(getattr(model, "forward_stages", None)) or not hasattr(model, "stage_names"):
        hint = " (an ensemble of teachers has no single feature map)" if role == "teacher" else ""
        raise ValueError(
            f"feature KD needs a single {role} exposing forward_stages and stage_names; "
            f"got {type(model).__name__}{hint}. Use logit KD for ensembles."
        )
    try:
        check_stages(model, stages)
    except ValueError as err:
        raise ValueError(
            f"feature KD {role}: {err}; set the loss's stages to names both have"
        ) from None
    shapes = stage_shapes(model, input_size=size)
    bad = {s: shapes[s] for s in stages if len(shapes[s]) != 3}
    if bad:
        raise ValueError(
            f"feature KD needs spatial (C, H, W) stage outputs, but the {role} "
            f"'{getattr(model, 'arch', type(model).__name__)}' gives {bad}; "
            "this pairing cannot be aligned by 1×1 convs and pooling"
        )
    return shapes


class FeatureKD(KDLoss):
    """Intermediate-feature distillation with learned 1×1 projections.

    Args:
        alpha: distillation weight in [0, 1].
        beta: weight ≥ 0 of the cosine term on globally pooled features.
        stages: stage names aligned between student and teacher (both must have them), or
            ``s:t`` pairs for stages named differently on the two sides, or ``"body"`` for
            every intermediate stage of both (``layer1``–``layer4`` on the ResNets); after
            ``bind`` it holds the stages used.
        label_smoothing: smoothing of the CE term only.
    """

    short_names = {"alpha": "a", "beta": "b"}

    def __init__(
        self,
        alpha: float,
        beta: float = 0.5,
        stages: Sequence[str] = ("layer1", "layer2", "layer3", "layer4"),
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.alpha = validate_alpha(alpha)
        self.beta = validate_beta(beta)
        self._role = stages if isinstance(stages, str) and stages in ROLES else None
        if self._role is None:
            self.stage_pairs = parse_stage_pairs(stages)
            self.stages = (stages,) if isinstance(stages, str) else tuple(str(s) for s in stages)
        else:
            self.stages = stages
        self.label_smoothing = validate_label_smoothing(label_smoothing)
        self.projections = nn.ModuleDict()
        self._sizes: dict[str, tuple[int, int]] = {}

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Create one 1×1 projection per stage and record the common spatial size.

        Both models are probed with the student's input size: the system feeds the same batch
        to both, and a teacher at another resolution resizes inside its own wrapper.
        """
        if self._role is not None:
            self.stage_pairs = select_stages(student, teacher, self._role, "feature KD")
            self.stages = tuple(s if s == t else f"{s}:{t}" for s, t in self.stage_pairs)
        size = int(getattr(student, "input_size", 32))
        s_shapes = _stage_shapes(student, "student", self.student_stages, size)
        t_shapes = _stage_shapes(teacher, "teacher", self.teacher_stages, size)
        self.projections = nn.ModuleDict()
        for name, (s, t) in zip(self.stages, self.stage_pairs, strict=True):
            (cs, hs, ws), (ct, ht, wt) = s_shapes[s], t_shapes[t]
            self.projections[name] = nn.Conv2d(cs, ct, kernel_size=1, bias=False)
            self._sizes[name] = (min(hs, ht), min(ws, wt))

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Return ``{"loss", "ce", "kd", "mse", "cos"}``; ``t_logits`` is not used."""
        if not self._sizes:
            raise RuntimeError("FeatureKD.bind(student, teacher) must be called before use")
        if s_feats is None or t_feats is None:
            raise ValueError(f"FeatureKD needs student and teacher features for {self.stages}")
        mse_terms, cos_terms = [], []
        for name, (s, t) in zip(self.stages, self.stage_pairs, strict=True):
            size = self._sizes[name]
            fs = self.projections[name](pool_to(s_feats[s], size))
            ft = pool_to(t_feats[t].detach(), size)
            with torch.autocast(fs.device.type, enabled=False):
                fs, ft = fs.float(), ft.float()
                mse_terms.append(F.mse_loss(fs, ft))
                cos = F.cosine_similarity(fs.mean(dim=(2, 3)), ft.mean(dim=(2, 3)), dim=1)
                cos_terms.append((1.0 - cos).mean())
        with torch.autocast(s_logits.device.type, enabled=False):
            mse = torch.stack(mse_terms).mean()
            cos = torch.stack(cos_terms).mean()
            kd = mse + self.beta * cos
            ce = cross_entropy(s_logits, targets, self.label_smoothing)
            loss = mix(self.alpha, kd, ce)
        return {
            "loss": loss,
            "ce": ce.detach(),
            "kd": kd.detach(),
            "mse": mse.detach(),
            "cos": cos.detach(),
        } | ({TASK: (1.0 - self.alpha) * ce} if self.alpha < 1.0 else {})

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, stages={list(self.stages)}"
