"""The CIFAR-100 KD benchmark's model zoo (CRD paper; RepDistiller / mdistiller ``models``).

Every model is a :class:`kdlab.models.base.StagedModel` with the *published parameter names*, so
the released teacher checkpoints load strictly (see :mod:`kdlab.models.zoo.published`), and the
published parameter count. Stages are ``("stem", <body stages>, "pool")``: the published
feature list ``is_feat=True`` in order, from the first conv block's output (``f0``) to the
pooled vector fed to the classifier (the last feature); each family's module doc lists which
published index is which stage. ``forward_stages(x, preact=True)`` returns the published
``preact=True`` features.

The benchmark's ResNet-50 is kdlab's ``r50`` (:func:`kdlab.models.resnet.resnet50`), with a
checkpoint key mapping in :func:`kdlab.models.zoo.published.to_kdlab_state`.

Build a model with ``build(arch)`` / ``ZOO[arch]`` or its config ``conf/model/<arch>.yaml``.
The factories are re-exported here except ``mobilenetv2``, whose name is its module's.
"""

from __future__ import annotations

from collections.abc import Callable

from kdlab.models.base import StagedModel

# the module, not its factory: binding ``mobilenetv2`` to the function here would hide the
# submodule ``kdlab.models.zoo.mobilenetv2`` (the config's ``_target_`` path)
from kdlab.models.zoo import mobilenetv2 as _mobilenetv2
from kdlab.models.zoo.published import to_kdlab_state, to_published_state
from kdlab.models.zoo.resnet import (
    resnet8,
    resnet8x4,
    resnet14,
    resnet20,
    resnet32,
    resnet32x4,
    resnet44,
    resnet56,
    resnet110,
)
from kdlab.models.zoo.shufflenetv1 import shufflev1
from kdlab.models.zoo.shufflenetv2 import shufflev2
from kdlab.models.zoo.vgg import vgg8, vgg11, vgg13, vgg16, vgg19
from kdlab.models.zoo.wrn import wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2

# arch → factory(num_classes); the arch is also the model's ``arch`` and its config name
ZOO: dict[str, Callable[..., StagedModel]] = {
    f.__name__: f
    for f in (
        resnet8,
        resnet14,
        resnet20,
        resnet32,
        resnet44,
        resnet56,
        resnet110,
        resnet8x4,
        resnet32x4,
        wrn_16_1,
        wrn_16_2,
        wrn_40_1,
        wrn_40_2,
        vgg8,
        vgg11,
        vgg13,
        vgg16,
        vgg19,
        _mobilenetv2.mobilenetv2,
        shufflev1,
        shufflev2,
    )
}


def build(arch: str, num_classes: int = 100, image_size: int = 32) -> StagedModel:
    """The zoo model ``arch`` (e.g. ``"resnet8x4"``) for ``num_classes`` classes."""
    if arch not in ZOO:
        raise ValueError(f"unknown zoo model '{arch}'; available: {sorted(ZOO)}")
    return ZOO[arch](num_classes=num_classes, image_size=image_size)


__all__ = [
    "ZOO",
    "build",
    "to_kdlab_state",
    "to_published_state",
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
    "vgg8",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "shufflev1",
    "shufflev2",
]
