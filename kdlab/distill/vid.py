"""Variational information distillation (VID; Ahn et al., CVPR 2019), as in the CIFAR-100 benchmark.

VID maximises a variational lower bound on the mutual information between teacher and student
features by fitting a Gaussian ``q(t | s) = N(t; μ(s), σ²)`` to the teacher's map: the mean
``μ`` is a small trainable network on the student's map (1×1 conv → ReLU → 1×1 conv → ReLU →
1×1 conv, no biases, hidden width = the teacher's channels), and the variance is one trainable
value per teacher channel, ``σ²_c = softplus(α_c) + ε``. The loss is the Gaussian negative
log-likelihood (without the constant ½·log 2π), averaged over batch, channels and positions,
and summed over stage pairs::

    L_VID = Σ_stages mean_{b, c, h, w} ½·[(t − μ(s))² / σ²_c + log σ²_c]

The larger of the two maps is average-pooled to the other's size first. ``α_c`` starts at
``softplus⁻¹(init_pred_var − ε)`` so that every ``σ²_c`` starts at ``init_pred_var``. All of
this follows the authors' code as the benchmark runs it (RepDistiller ``distiller_zoo/VID.py``
with ``VIDLoss(s_C, t_C, t_C)`` on every intermediate map ``feat[1:-1]``, ``init_pred_var = 5``,
``eps = 1e-5``, weight ``-b 1``; mdistiller ``distillers/VID.py``): kdlab's ``stages="body"``.
The regressors and variances are parameters of this loss, built in ``bind``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.base import check_positive
from kdlab.distill.parts import StagePairLoss, match_size, pair_name


def inverse_softplus(y: float) -> float:
    """``x`` with ``softplus(x) = log(1 + eˣ) = y`` for ``y > 0``, computed stably."""
    return y + math.log(-math.expm1(-y))


def mean_regressor(c_in: int, c_out: int) -> nn.Sequential:
    """The VID mean network: three 1×1 convs without bias, ReLU between them."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, kernel_size=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, kernel_size=1, bias=False),
    )


class VID(StagePairLoss):
    """Gaussian negative log-likelihood of the teacher's maps given the student's (VID).

    Args:
        init_pred_var: initial predicted variance σ² of every teacher channel, > eps
            (published: 5.0).
        eps: floor ε > 0 added to the softplus variance (published: 1e-5).
        stages: the paired stages: ``"body"`` (published: every intermediate feature map),
            ``"last"``, a stage name, or a list of names / ``s:t`` pairs.

    Returns ``{"loss": L_VID}`` (plus one part per stage pair when there are several).
    """

    short_names = {"init_pred_var": "v"}
    method, needs_maps = "VID", True

    def __init__(
        self,
        init_pred_var: float = 5.0,
        eps: float = 1e-5,
        stages: str | Sequence[str] = "body",
    ) -> None:
        super().__init__(stages)
        self.eps = check_positive(
            "eps", eps, "VID's variance floor must be a finite number > 0; pass e.g. eps=1e-5"
        )
        self.init_pred_var = check_positive(
            "init_pred_var",
            init_pred_var,
            "VID's initial variance must be a finite number > 0; pass e.g. init_pred_var=5",
        )
        if self.init_pred_var <= self.eps:
            raise ValueError(
                f"init_pred_var={init_pred_var!r} must be larger than eps={eps!r} (the variance "
                "is softplus(α) + eps > eps); pass e.g. init_pred_var=5, eps=1e-5"
            )
        self.regressors = nn.ModuleDict()
        self.log_scales = nn.ParameterDict()

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        shapes = self.resolve(student, teacher)
        start = inverse_softplus(self.init_pred_var - self.eps)
        self.regressors, self.log_scales = nn.ModuleDict(), nn.ParameterDict()
        for (s, t), (ss, ts) in zip(self.stage_pairs, shapes, strict=True):
            self.regressors[pair_name(s, t)] = mean_regressor(ss[0], ts[0])
            self.log_scales[pair_name(s, t)] = nn.Parameter(torch.full((ts[0],), start))

    def variance(self, name: str) -> Tensor:
        """σ² per teacher channel of a pair, [C_t]."""
        return F.softplus(self.log_scales[name].float()) + self.eps

    def bound(self) -> bool:
        return bool(self.regressors)

    def pair_loss(self, name: str, fs: Tensor, ft: Tensor) -> Tensor:
        fs, ft = match_size(fs, ft, "VID")
        var = self.variance(name).view(1, -1, 1, 1)
        return (0.5 * ((self.regressors[name](fs) - ft).pow(2) / var + var.log())).mean()

    def extra_repr(self) -> str:
        return f"init_pred_var={self.init_pred_var}, eps={self.eps}, stages={self.stages!r}"
