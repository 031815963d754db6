"""Class attention transfer, CAT-KD (Guo et al., CVPR 2023).

A network's class activation maps are its classifier applied at every position of the last
feature map ``F`` [B, K, H, W] (the map whose global mean is the classifier's input):
``CAM_c(h, w) = Σ_k W_ck · F_k(h, w)``, ``W`` the classifier's weight [C, K] (no bias). CAT-KD
transfers them: both networks' maps are average-pooled to ``r × r``, optionally L2-normalised
per map over the ``r × r`` positions, and matched in mean squared error::

    L_cat = MSE(n(pool_r(CAM^s)), n(pool_r(CAM^t)))      (mean over B·C·r·r entries)

Pooling commutes with the (linear, per-position) classifier, so ``pool_r(CAM) = W·pool_r(F)``:
kdlab pools the feature map first (the same value, ``K/C`` times less work for wide maps).
The student's gradient reaches both its feature map and its classifier weights.

Public code followed: GzyAftermath/CAT-KD ``mdistiller/distillers/CAT_KD.py`` @ 2657a68 (the CAMs
come from its ``*_test`` models, which replace pooling + ``fc`` by a 1×1 convolution without
bias carrying the classifier weights, ``models/cifar/resnet.py``). Its CIFAR-100 configs
(``configs/cifar100/CAT_KD/*.yaml``): CE 1, ``CAM_RESOLUTION`` 2 and no normalisation for the
same-family pairs, β = 0.7 (res56→res20), 1.8 (res110→res32), 15 (res32x4→res8x4), 4.5
(vgg13→vgg8), 12 (wrn_40_2→wrn_16_2); r = 4 with normalisation and β = 600 for
res32x4→ShuffleV1.

Deviations: the student keeps its classifier bias (the published student is converted to a
bias-free 1×1 convolution; the bias does not enter the CAMs either way). The models reach
their classifier and last map through their public API (``classifier_head``, ``map_stage``,
``pooled_map``): the benchmark's ResNets, WRNs (the ReLU of their final BN, read as layer3's
pre-activation output), VGGs and ShuffleNet-V1, and kdlab's torchvision ResNets, have them;
ShuffleNet-V2 and MobileNet-V2 pool the output of a 1×1 convolution that is not one of their
stages, so CAT-KD refuses them with a message. The class masking and binarisation variants of
the paper's analysis are not implemented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.base import KDLoss, Networks, check_int
from kdlab.distill.parts import pool_to

STAGE_HINT = (
    "CAT-KD needs models whose pooled map comes from a stage (map_stage) and feeds a linear "
    "classifier (classifier_head): the benchmark's CIFAR ResNets, WRNs, VGGs, ShuffleNet-V1"
)


def class_maps(feat: Tensor, weight: Tensor, resolution: int) -> Tensor:
    """``pool_r(W·F)`` computed as ``W·pool_r(F)``: [B, C, r, r] class activation maps
    (``pool_to``: plain average pooling for integer ratios, deterministic on CUDA)."""
    pooled = pool_to(feat.float(), (resolution, resolution))
    return torch.einsum("ck,bkhw->bchw", weight.float(), pooled)


class CATKD(KDLoss):
    """Class attention transfer between the student's and the teacher's CAMs.

    Args:
        resolution: r, the side of the pooled maps (published 2; 4 for resnet32x4→ShuffleV1).
        normalize: L2-normalise each pooled map over its positions (published false, true for
            resnet32x4→ShuffleV1).
    """

    short_names = {"resolution": "r", "normalize": "n"}
    needs_networks = True

    def __init__(self, resolution: int = 2, normalize: bool = False) -> None:
        super().__init__()
        self.resolution = check_int("resolution", resolution, 1, "the CAM side r must be >= 1")
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize={normalize!r} must be true or false")
        self.normalize = normalize

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        names = []
        for role, net in (("student", student), ("teacher", teacher)):
            stage = getattr(net, "map_stage", None)
            if stage is None or not callable(getattr(net, "classifier_head", None)):
                raise ValueError(
                    f"{STAGE_HINT}; the {role} {type(net).__name__} "
                    f"'{getattr(net, 'arch', '?')}' has none"
                )
            names.append(stage)
            setattr(self, f"{role}_preact", bool(getattr(net, "map_preact", False)))
        self.stage_pairs = ((names[0], names[1]),)

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
        if networks is None or s_feats is None or t_feats is None:
            raise ValueError("CAT-KD needs both networks and their last feature maps")
        (s_stage, t_stage), r = self.stage_pairs[0], self.resolution
        with torch.autocast(s_logits.device.type, enabled=False):
            student, teacher = networks.student, networks.teacher
            f_s = student.pooled_map(s_feats[s_stage])
            cam_s = class_maps(f_s, student.classifier_head().weight, r)
            with torch.no_grad():
                f_t = teacher.pooled_map(t_feats[t_stage])
                cam_t = class_maps(f_t, teacher.classifier_head().weight, r)
            if self.normalize:
                cam_s = F.normalize(cam_s.flatten(2), dim=2)
                cam_t = F.normalize(cam_t.flatten(2), dim=2)
            cat = F.mse_loss(cam_s, cam_t)
        return {"loss": cat}
