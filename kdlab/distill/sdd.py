"""Scale-decoupled distillation, SDD (Wei et al., "Scale Decoupled Distillation", CVPR 2024), as a
modifier of any logit loss (SD-KD, SD-DKD, SD-NKD, …).

The global logits of an image mix the evidence of all its regions. SDD also distils the logits of
each region: the last feature map ``F`` (the map the classifier pools) is average-pooled to
``s × s`` cells for every scale ``s`` in ``scales`` (published ``[1, 2, 4]``: 1 + 4 + 16 = 21
regions), and the model's own classifier is applied to every cell's feature vector. Region
``n`` of sample ``b`` gives student and teacher logits ``z^{n,b}``; the base logit loss compares
each pair, and the losses are averaged with weights::

    L_sdd = 1/(N·B) · Σ_{n,b} w_{n,b} · ℓ_base(z_s^{n,b}, z_t^{n,b}, y_b)

``w = 1`` for the global region (scale 1) and for *consistent* local regions, whose teacher
prediction is right exactly when the teacher's global prediction is; ``w = complementary``
(published 2) for *complementary* ones (global right and local wrong, or global wrong and local
right): they carry what the global logits hide. With ``scales=[1]`` SDD is the base loss.

The regions are scored with the models' public head (``head_map``: the map the classifier pools,
from the last stage's output; ``classify``: the classifier on pooled vectors), so nothing is
patched; models without it get a clear error. The base loss's settings apply per region,
including its warm-up (DKD) and ``standardize`` (logit standardisation of every region's rows).

Public code read to check the behaviour: shicaiwei123/SDD-CVPR2024 (commit
e412036c6b7b67d8ed25418d2dedad223ab49a71): ``mdistiller/models/cifar/utils.py`` (``SPP``: adaptive
average pooling to 4×4, then 2×2 and 1×1 from it, regions ordered 1×1, 2×2, 4×4),
``mdistiller/distillers/SDD_DKD.py`` (``multi_dkd``: per-row DKD summed with weights 1/2 and divided
by the number of rows N·B; the masks compare the teacher's region predictions with the labels),
``SDD_nkd.py``. Deviations: the base loss is kdlab's (e.g. NKD drops the target column, which
SDD-CVPR2024's NKD copy does not); the published code replaces a non-finite total by 0 and prints
"inf", kdlab does not hide it; with ``M=[1]`` the published code calls the plain base loss, which
is what the formula gives here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdlab.distill.base import KDLoss, validate_weight
from kdlab.distill.logit_loss import LogitLoss, check_pair
from kdlab.distill.parts import hard_classes, paired_features, pool_to, resolve_stages


def _head(model: nn.Module, role: str) -> tuple:
    """``(head_map, classify)`` of ``model`` (public model API), or a clear error."""
    head_map, classify = getattr(model, "head_map", None), getattr(model, "classify", None)
    if not callable(head_map) or not callable(classify):
        raise ValueError(
            f"SDD applies the {role}'s classifier to pooled regions and needs its head_map() and "
            f"classify(); '{getattr(model, 'arch', type(model).__name__)}' has none. Use a model "
            "of the CIFAR-100 benchmark zoo or a kdlab ResNet"
        )
    return head_map, classify


def region_logits(fmap: Tensor, scales: Sequence[int], classify) -> Tensor:
    """Logits of every region ``[N·B, K]``, ordered scale by scale, cell by cell (row-major),
    each block of B rows one region of every sample."""
    b, c = fmap.shape[:2]
    cells = [pool_to(fmap, (s, s)).flatten(2) for s in scales]  # [B, C, s·s] each
    regions = torch.cat(cells, dim=2).permute(2, 0, 1)  # [N, B, C]
    return classify(regions.reshape(-1, c)).float()


def region_weights(t_rows: Tensor, labels: Tensor, n: int, complementary: float) -> Tensor:
    """``[N·B]``: 1 for the global region and consistent ones, ``complementary`` otherwise."""
    right = (t_rows.argmax(dim=1) == labels.repeat(n)).view(n, -1)
    global_right = right[0]
    weights = torch.where(right == global_right, 1.0, complementary)
    weights[0] = 1.0
    return weights.reshape(-1)


class SDD(KDLoss):
    """The base logit loss over multi-scale pooled regions (see the module doc).

    Args:
        base: the wrapped logit loss (a ``LogitLoss``).
        scales: pooling grid sizes, the first must be 1 (the global region; published [1, 2, 4]).
        complementary: weight of complementary regions (published 2; consistent ones weigh 1).
        stages: the student and teacher stage whose output feeds the classifier (``last``).

    Returns ``{"loss", "global", "complementary_frac", **the base's parts}``.
    """

    short_names = {"scales": "M"}

    def __init__(
        self,
        base: LogitLoss,
        scales: Sequence[int] = (1, 2, 4),
        complementary: float = 2.0,
        stages: str | Sequence[str] = "last",
    ) -> None:
        super().__init__()
        if not isinstance(base, LogitLoss):
            raise ValueError(
                f"SDD wraps a logit loss (KD, DKD, NKD, WTTM, …); got {type(base).__name__}: "
                "set distill_base=kd|dkd|nkd|wttm"
            )
        scales = [scales] if isinstance(scales, int) else list(scales)
        if (
            not scales
            or scales[0] != 1
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in scales)
            or len(set(scales)) != len(scales)
        ):
            raise ValueError(
                f"scales={scales!r} must be distinct integers >= 1 starting with 1 (the global "
                "region), e.g. [1, 2, 4]"
            )
        self.base, self.scales = base, scales
        self.complementary = validate_weight("complementary", complementary)
        self.stages = stages
        self._heads: dict[str, tuple] = {}

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.base.bind(student, teacher)
        self.stage_pairs = resolve_stages(self.stages, student, teacher, "SDD")
        if len(self.stage_pairs) != 1:
            raise ValueError(f"SDD reads one stage per model, got {list(self.stage_pairs)}")
        # plain attributes (bound methods): the models stay owned by the system
        self._heads = {"student": _head(student, "student"), "teacher": _head(teacher, "teacher")}

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.base.set_epoch(epoch)

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        t_logits = check_pair("SDD", s_logits, t_logits)
        if not self._heads:
            raise RuntimeError("SDD: call bind(student, teacher) before computing the loss")
        ((fs, ft),) = paired_features(s_feats, t_feats, self.stage_pairs, "SDD")
        s_map, s_classify = self._heads["student"]
        t_map, t_classify = self._heads["teacher"]
        n = sum(s * s for s in self.scales)
        with torch.autocast(s_logits.device.type, enabled=False):
            zs = region_logits(s_map(fs), self.scales, s_classify)
            with torch.no_grad():
                zt = region_logits(t_map(ft), self.scales, t_classify)
            rows_targets = targets.repeat(n, *([1] * (targets.ndim - 1)))
            rows = self.base.sample_rows(zs, zt, rows_targets)
            labels = hard_classes(targets).to(zt.device)
            w = region_weights(zt, labels, n, self.complementary)
            loss = (w * rows["loss"]).sum() / w.numel()
        parts = {k: v.mean().detach() for k, v in rows.items() if k != "loss"}
        b = s_logits.shape[0]
        return {
            "loss": loss,
            "global": rows["loss"][:b].mean().detach(),
            "complementary_frac": (w != 1.0).float().mean(),
            **parts,
        }

    def extra_repr(self) -> str:
        return f"scales={self.scales}, complementary={self.complementary}"
