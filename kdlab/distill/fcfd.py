"""Function-consistent feature distillation, FCFD (Liu et al., ICLR 2023).

Feature distillation usually asks a student feature to *look like* the teacher's (an L2
"appearance" loss through a bridge). FCFD also asks it to *work like* it: a bridged student
feature, passed through the teacher's later stages, must make the teacher predict what it
predicts on its own features.

For the bridged stages ``k ∈ 𝒦`` (``stages``) with student maps ``f_s^k`` and teacher maps
``f_t^k``, a bridge ``b_k`` (3×3 conv + BN, a stride-2 conv or a 4×4 stride-2 transposed conv
when the student map is twice or half the teacher's size, then LeakyReLU(0.1) when the teacher's
stage outputs are post-ReLU, as the published code does for such models; none for WRN, whose
stage outputs are raw pre-activation sums) maps the student feature into the teacher's space,
``h^k = b_k(f_s^k)``. A *path* leaves the student at stage ``j`` (every bridged stage but the
last) and continues through the teacher: ``(z^j, {g^{j→k}}) = teacher.forward_from(j, h^j)``,
its logits and its later teacher-space maps. With ``KD_T(z) = T²·KL(softmax(z_t/T) ‖
softmax(z/T))``::

    L = w_kd·KD_T(z_s) + w_path · Σ_j KD_T(z^j)
        + w_l2 · w(e) · [ Σ_k ( MSE(h^k, f_t^k) + Σ_{j<k} MSE(g^{j→k}, f_t^k) )
                           + Σ_{x at the last stage} MSE(GAP(relu x), GAP(relu f_t^last)) ]

(CE is the combination's ``ce`` term); ``w(e)`` is the 20-epoch linear warm-up of the
appearance loss. The teacher's weights stay frozen; gradients flow through its later stages
into the bridges and the student.

Public code followed: LiuDongyang6/FCFD ``classification/models/meta.py`` (``MetaModel``, bridges)
and ``classification/cifar/main.py`` (losses) @ 45934e8 / 4426d8f; per-pair weights in
``classification/experiments/cifar/<student>-<teacher>.yaml`` (resnet20-resnet56: CE 1, student
KD 1 and mixed-path KD 1 at T 4, ``weight_l2`` 0.02), lr 0.05 (0.01 for MobileNetV2/ShuffleNets),
batch 64, 240 epochs, SGD with Nesterov.

Deviations: the published default samples 2 of the "bi" paths per step, i.e. student→teacher
paths *and* teacher→student paths (teacher features bridged into the student's later stages,
with their own BatchNorm statistics); kdlab runs every student→teacher path each step (the
published ``extra_type=s2t`` setting) and no teacher→student path, because running the
student's layers on foreign features would need BN statistics kept apart from the student's
own. The published code also runs the frozen teacher in train mode (batch-statistic BN, with
separate running statistics per path); kdlab's teacher is always in eval mode (its trained
statistics). Paths switch after kdlab's named stages (after ``layer1`` and ``layer2`` for the
CIFAR ResNets), which need not be the published models' stage boundaries. Only the
resnet20-resnet56 config was read for the weights; other pairs keep them until checked.
Teacher continuation needs models with ``forward_from`` (the benchmark's CIFAR
ResNets, WRNs and VGGs: every same-family pair). ``stages`` name the same stages in both models
(default: the ResNets' and WRNs' ``layer1``–``layer3``; VGG pairs pass ``[block1, block2, block3,
block4]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.base import (
    KDLoss,
    Networks,
    validate_loss_weight,
    validate_temperature,
    validate_warmup,
)
from kdlab.distill.parts import pair_name, probe_shapes, require_maps, warmup_factor


def kd(z: Tensor, z_t: Tensor, temperature: float) -> Tensor:
    """``T²·KL(softmax(z_t/T) ‖ softmax(z/T))``, batch mean."""
    log_p = F.log_softmax(z / temperature, dim=1)
    log_q = F.log_softmax(z_t / temperature, dim=1)
    return (log_q.exp() * (log_q - log_p)).sum(1).mean() * temperature**2


def bridge(c_in: int, c_out: int, h_in: int, h_out: int, activate: bool = True) -> nn.Sequential:
    """The student → teacher bridge of one stage (see the module doc); ``activate`` ends it in
    LeakyReLU(0.1), for teachers whose stage outputs are post-ReLU."""
    if h_in == h_out:
        conv: nn.Module = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
    elif h_in == 2 * h_out:
        conv = nn.Conv2d(c_in, c_out, 3, 2, 1)
    elif 2 * h_in == h_out:
        conv = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
    else:
        raise ValueError(f"FCFD bridges maps of equal, double or half size, got {h_in} → {h_out}")
    layers = [conv, nn.BatchNorm2d(c_out)] + ([nn.LeakyReLU(0.1)] if activate else [])
    out = nn.Sequential(*layers)
    for m in out.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return out


class FCFD(KDLoss):
    """Appearance (L2 through bridges) and function (teacher continuation) consistency.

    Args:
        stages: the bridged stages, shallow → deep, named alike in both models.
        temperature: T of every KD term (published 4).
        kd_weight: w_kd, the student's own KD term (published 1).
        path_weight: w_path, each student → teacher path's KD term (published 1).
        l2_weight: w_l2, the appearance loss (published 0.02 for resnet56 → resnet20).
        warmup: epochs of linear warm-up of the appearance loss (published 20).
    """

    short_names = {"l2_weight": "l2", "path_weight": "wp", "kd_weight": "wkd"}
    needs_networks = True

    def __init__(
        self,
        stages: Sequence[str] = ("layer1", "layer2", "layer3"),
        temperature: float = 4.0,
        kd_weight: float = 1.0,
        path_weight: float = 1.0,
        l2_weight: float = 0.02,
        warmup: int = 20,
    ) -> None:
        super().__init__()
        names = [str(s) for s in ([stages] if isinstance(stages, str) else stages)]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"stages={names} must be a non-empty list of distinct stage names")
        self.stages = names
        self.temperature = validate_temperature(temperature)
        self.kd_weight = validate_loss_weight("kd_weight", kd_weight, "1")
        self.path_weight = validate_loss_weight("path_weight", path_weight, "1")
        self.l2_weight = validate_loss_weight("l2_weight", l2_weight, "0.02")
        self.warmup = validate_warmup(warmup)
        self.bridges = nn.ModuleDict()

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        for role, net in (("student", student), ("teacher", teacher)):
            missing = [s for s in self.stages if s not in getattr(net, "stage_names", ())]
            if missing:
                raise ValueError(
                    f"FCFD: unknown stage(s) {missing} for the {role} "
                    f"'{getattr(net, 'arch', type(net).__name__)}'; available stages: "
                    f"{list(getattr(net, 'stage_names', ()))}"
                )
        if not callable(getattr(teacher, "forward_from", None)):
            raise ValueError(
                "FCFD needs a single teacher that can continue from a stage "
                "(forward_from); an ensemble cannot"
            )
        self.stage_pairs = tuple((s, s) for s in self.stages)
        shapes = probe_shapes(student, teacher, self.stage_pairs)
        require_maps(shapes, self.stage_pairs, "FCFD")
        act = bool(getattr(teacher, "activated_stages", True))
        self.bridges = nn.ModuleDict(
            {
                pair_name(s, s): bridge(ss[0], ts[0], ss[1], ts[1], act)
                for s, (ss, ts) in zip(self.stages, shapes, strict=True)
            }
        )

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
        networks: Networks | None = None,
    ) -> dict[str, Tensor]:
        if networks is None or t_logits is None or s_feats is None or t_feats is None:
            raise ValueError(
                "FCFD needs the teacher's logits, both networks' stage outputs "
                "and the networks themselves"
            )
        if not len(self.bridges):
            raise RuntimeError("FCFD: call bind(student, teacher) before computing the loss")
        T, zt = self.temperature, t_logits.detach().float()
        last = self.stages[-1]
        with torch.autocast(s_logits.device.type, enabled=False):
            targets_t = {s: t_feats[s].detach().float() for s in self.stages}
            in_teacher = {s: self.bridges[s](s_feats[s].float()) for s in self.stages}
            # every teacher-space map at each stage: bridged student maps, then path outputs
            space = {s: [in_teacher[s]] for s in self.stages}
            path = s_logits.new_zeros((), dtype=torch.float32)
            for j in self.stages[:-1]:
                z_j, later = networks.teacher.forward_from(j, in_teacher[j])
                path = path + kd(z_j.float(), zt, T)
                for k in self.stages[self.stages.index(j) + 1 :]:
                    space[k].append(later[k].float())
            l2 = sum(F.mse_loss(x, targets_t[s]) for s in self.stages for x in space[s])
            t_pool = F.relu(targets_t[last]).mean(dim=(2, 3))
            l2 = l2 + sum(F.mse_loss(F.relu(x).mean(dim=(2, 3)), t_pool) for x in space[last])
            own = kd(s_logits.float(), zt, T)
            w = warmup_factor(self.epoch, self.warmup)
            total = self.kd_weight * own + self.path_weight * path + self.l2_weight * w * l2
        return {
            "loss": total,
            "kd_student": own.detach(),
            "paths": path.detach(),
            "appearance": l2.detach(),
        }
