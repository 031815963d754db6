"""Loading the CRD benchmark's released checkpoints into kdlab models.

The benchmark's teacher checkpoints (RepDistiller / mdistiller ``*.pth``) are dicts whose
``"model"`` entry is the ``state_dict`` (next to ``"epoch"``, ``"best_acc"``/``"accuracy"``,
``"optimizer"``). The zoo models use the published parameter names, so their state dicts load
unchanged.

The benchmark's ResNet-50 (``resnetv2.py``, ``ResNet50``) is the same network as kdlab's ``r50``
(``kdlab.models.resnet.resnet50``: torchvision's ResNet-50 with the CIFAR stem): 3×3 stride-1
stem conv + BN + ReLU without max-pool, [3, 4, 6, 3] bottlenecks with the stride on the 3×3 conv,
1×1 conv + BN projection shortcuts, global average pooling and one linear layer; 23,705,252
parameters for 100 classes in both. Only two names differ, so no second ResNet-50 exists in
kdlab and the checkpoint is renamed instead:

    published                      kdlab (torchvision)
    layerK.i.shortcut.{0,1}.*      layerK.i.downsample.{0,1}.*
    linear.*                       fc.*

The same renaming holds for the published ``ResNet18/34/101/152`` and kdlab's ``r18/r34/r101/
r152``, so those are mapped as well.

Feature positions differ though: the published ResNet50 returns ``[f0, f1…f4, f5]`` (stem, the
four layers, the pooled vector) while kdlab's ``r50`` exposes only ``layer1``–``layer4``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

__all__ = [
    "KDLAB_NAMES",
    "PUBLISHED_NAMES",
    "kdlab_arch",
    "to_kdlab_state",
    "to_published_state",
]

# kdlab arch → factory name in the published benchmark code
PUBLISHED_NAMES: dict[str, str] = {
    **{
        n: n
        for n in (
            "resnet8",
            "resnet14",
            "resnet20",
            "resnet32",
            "resnet44",
            "resnet56",
            "resnet110",
            "resnet8x4",
            "resnet32x4",
            "wrn_16_1",
            "wrn_16_2",
            "wrn_40_1",
            "wrn_40_2",
        )
    },
    **{f"vgg{d}": f"vgg{d}_bn" for d in (8, 11, 13, 16, 19)},
    "mobilenetv2": "mobile_half",
    "shufflev1": "ShuffleV1",
    "shufflev2": "ShuffleV2",
    **{f"r{d}": f"ResNet{d}" for d in (18, 34, 50, 101, 152)},
}
# published name → kdlab arch; mdistiller calls ``mobile_half`` "MobileNetV2" in its model table
KDLAB_NAMES: dict[str, str] = {
    **{pub: arch for arch, pub in PUBLISHED_NAMES.items()},
    "MobileNetV2": "mobilenetv2",
}

# kdlab archs whose published counterpart names two modules differently (torchvision ResNets)
_RENAMED = {f"r{d}" for d in (18, 34, 50, 101, 152)}


def kdlab_arch(name: str) -> str:
    """The kdlab arch of a kdlab or published model name (``"ResNet50"`` → ``"r50"``)."""
    if name in PUBLISHED_NAMES:
        return name
    if name in KDLAB_NAMES:
        return KDLAB_NAMES[name]
    raise ValueError(
        f"no published CIFAR-100 benchmark model '{name}'; known kdlab archs: "
        f"{sorted(PUBLISHED_NAMES)} (or their published names {sorted(KDLAB_NAMES)})"
    )


def _state_dict_of(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict inside a checkpoint (its ``"model"`` entry) or ``state`` itself.

    A ``module.`` prefix on every key (a checkpoint saved from ``nn.DataParallel``) is removed.
    """
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    sd = dict(state)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _rename(key: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for old, new in pairs:
        if old.startswith(".") and old in key:
            return key.replace(old, new, 1)
        if not old.startswith(".") and key.startswith(old):
            return new + key[len(old) :]
    return key


_TO_KDLAB = ((".shortcut.", ".downsample."), ("linear.", "fc."))
_TO_PUBLISHED = ((".downsample.", ".shortcut."), ("fc.", "linear."))


def to_kdlab_state(arch: str, state: Mapping[str, Any]) -> dict[str, Tensor]:
    """A published checkpoint or state dict of ``arch`` with kdlab's parameter names.

    ``arch`` is a kdlab arch or its published name. ``state`` is either the released checkpoint
    (the ``"model"`` entry is taken) or its state dict. Zoo models keep the names unchanged;
    the torchvision-based ``r18``–``r152`` get ``shortcut`` → ``downsample`` and ``linear`` →
    ``fc``. The result loads with ``model.load_state_dict(..., strict=True)``.
    """
    arch = kdlab_arch(arch)
    sd = _state_dict_of(state)
    if arch in _RENAMED:
        return {_rename(k, _TO_KDLAB): v for k, v in sd.items()}
    return sd


def to_published_state(arch: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`to_kdlab_state`: a kdlab state dict with the published names."""
    arch = kdlab_arch(arch)
    sd = dict(state)
    if arch in _RENAMED:
        return {_rename(k, _TO_PUBLISHED): v for k, v in sd.items()}
    return sd
