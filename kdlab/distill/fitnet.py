"""FitNets hint learning (Romero et al., ICLR 2015), as run in the CIFAR-100 benchmark.

A trainable *regressor* ``r`` maps the student's hint-stage feature map onto the teacher's
(channels and spatial size), and the loss is the mean squared error to the teacher's map::

    L_hint = mean_{b, c, h, w} (r(F_s) − F_t)²

The regressor follows the benchmark's convolutional regressor (RepDistiller ``models/util.py``
``ConvReg``, mdistiller ``distillers/_common.py``): a 3×3 stride-2 conv when the student map is
twice the teacher's size, a 4×4 stride-2 transposed conv when it is half, otherwise a
``(1 + H_s − H_t) × (1 + W_s − W_t)`` conv (1×1 for equal sizes); then BatchNorm and ReLU.
It is built in ``bind`` from the probed stage shapes, so it is optimised, clipped and
checkpointed with the student.

Stage: the benchmark's ``hint_layer = 2`` is the published feature ``feat[2]``, the *second*
intermediate feature map (ResNets ``layer2``, VGG ``block2``, MobileNetV2 ``block2``). kdlab
expresses it as ``stages="body", hint=1``: index 1 (0-based) of the intermediate-stage pairs.
``hint=None`` uses every pair of ``stages`` (summing the per-pair losses); with an explicit
stage list pass ``hint=None`` or an index into that list.

Deviation from the paper: FitNets trains in two stages (hint pre-training of the lower student
layers, then KD). The benchmark, and this module, use one stage: CE + 100·L_hint from the
first step (RepDistiller ``train_student.py --distill hint -a 0 -b 100``;
``conf/distill/fitnet.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.base import check_int
from kdlab.distill.parts import StagePairLoss, pair_name, probe_shapes, require_maps, resolve_stages


class HintRegressor(nn.Module):
    """Conv (chosen from the two spatial sizes) → BatchNorm → ReLU, student → teacher map."""

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...]) -> None:
        super().__init__()
        (cs, hs, ws), (ct, ht, wt) = s_shape, t_shape
        if (hs, ws) == (2 * ht, 2 * wt):
            self.conv: nn.Module = nn.Conv2d(cs, ct, kernel_size=3, stride=2, padding=1)
        elif (2 * hs, 2 * ws) == (ht, wt):
            self.conv = nn.ConvTranspose2d(cs, ct, kernel_size=4, stride=2, padding=1)
        elif hs >= ht and ws >= wt:
            self.conv = nn.Conv2d(cs, ct, kernel_size=(1 + hs - ht, 1 + ws - wt))
        else:
            raise ValueError(
                f"FitNet cannot regress a student map of size {hs}×{ws} onto a teacher map of "
                f"size {ht}×{wt} (supported: equal or larger student maps, or exactly half); "
                "choose another hint stage"
            )
        self.bn = nn.BatchNorm2d(ct)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class FitNet(StagePairLoss):
    """Hint loss: MSE between the regressed student map and the teacher map (FitNets).

    Args:
        stages: the candidate stage pairs: ``"body"`` (every intermediate feature map,
            default), ``"last"``, a stage name, or a list of names / ``s:t`` pairs.
        hint: which of those pairs is the hint (0-based; published ``hint_layer=2`` is
            ``hint=1`` of ``"body"``), or ``None`` to use all of them.

    Returns ``{"loss": L_hint}`` (plus one part per pair when several are used).
    """

    method, needs_maps = "FitNet", True

    def __init__(self, stages: str | Sequence[str] = "body", hint: int | None = 1) -> None:
        super().__init__(stages)
        pairs = self.stage_pairs
        if hint is not None:
            hint = check_int(
                "hint",
                hint,
                0,
                "hint is the 0-based index of the hint pair among the stages (1 = the second "
                "intermediate map, the published hint layer), or null for all stages",
            )
        self.hint = hint
        self.stage_pairs = self._pick(pairs) if pairs else ()
        self.regressors = nn.ModuleDict()

    def _pick(self, pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        if self.hint is None:
            return pairs
        if self.hint >= len(pairs):
            raise ValueError(
                f"FitNet: hint={self.hint} is out of range: stages={self.stages!r} gives "
                f"{len(pairs)} pair(s) {[pair_name(*p) for p in pairs]}; pass hint < "
                f"{len(pairs)}, or hint=null to use every listed stage"
            )
        return (pairs[self.hint],)

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.stage_pairs = self._pick(resolve_stages(self.stages, student, teacher, "FitNet"))
        shapes = probe_shapes(student, teacher, self.stage_pairs)
        require_maps(shapes, self.stage_pairs, "FitNet")
        self.regressors = nn.ModuleDict(
            {
                pair_name(s, t): HintRegressor(ss, ts)
                for (s, t), (ss, ts) in zip(self.stage_pairs, shapes, strict=True)
            }
        )

    def bound(self) -> bool:
        return bool(self.regressors)

    def pair_loss(self, name: str, fs: Tensor, ft: Tensor) -> Tensor:
        return F.mse_loss(self.regressors[name](fs), ft)

    def extra_repr(self) -> str:
        return f"stages={self.stages!r}, hint={self.hint}"
