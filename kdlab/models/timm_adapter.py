"""timm models and other-resolution networks behind kdlab's ``StagedModel`` interface.

The cross-architecture study distils between ViTs, MobileViT and ResNets at
224×224, and the notebook's teacher (the introductory notebook) was trained on upsampled 224×224 images, while
every kdlab pipeline delivers 32×32 CIFAR batches. ``InputResize`` upsamples a batch on its own
device (bilinear, no parameters), so the data pipeline, MixUp and the teacher-logit cache stay
at 32×32 and any teacher can pair with any student.

Stages. ``TimmModel`` exposes the outputs that timm lists in ``feature_info`` (through timm's
``forward_intermediates``), named by their module with dots replaced by underscores:
``layer1``–``layer4`` (plus ``act1``) for timm ResNets, ``stages_0``–``stages_3`` and
``final_conv`` for MobileViT, and ``blocks_0`` … ``blocks_{depth-1}`` for ViTs — one stage per
transformer block, its patch tokens (prefix/class tokens dropped) reshaped to a
``B×C×(H/p)×(W/p)`` map, so CKA and feature KD treat them like convolutional maps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.base import StagedModel

log = logging.getLogger(__name__)


class InputResize(nn.Module):
    """Bilinear resize of a ``B×C×H×W`` batch to ``size×size`` on its device (no-op if equal)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"input size must be a positive integer, got {size!r}")
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def _check_head(path: Path, state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Drop classifier weights whose shape differs (other num_classes); reject anything else."""
    own = model.state_dict()
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_keys = {f"{n}.{k}" for n, m in model.named_modules() if m is head for k in m.state_dict()}
    dropped = [k for k in head_keys if k in state and state[k].shape != own[k].shape]
    if dropped:
        log.info("pretrained %s: dropping head %s (different num_classes)", path, sorted(dropped))
        state = {k: v for k, v in state.items() if k not in dropped}
    missing = [k for k in own if k not in state and k not in dropped]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"pretrained weights {path} do not match this model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]} (of {len(missing)}, "
            f"{len(unexpected)}, {len(wrong)}). Pass the state dict of the same timm model name "
            "and configuration (e.g. saved with torch.save(model.state_dict(), PATH))."
        )
    return state


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict (plain, or under ``state_dict``/``model``) into a timm model."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"pretrained weights not found: {path}. kdlab never downloads weights; save them "
            "locally first (timm.create_model(NAME, pretrained=True).state_dict())."
        )
    from kdlab.utils.safe_load import load_weights

    obj = load_weights(path, "pretrained weights")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"pretrained weights {path} do not hold a state dict of tensors")
    state = _check_head(path, obj, model)
    model.load_state_dict(state, strict=False)  # only the dropped head may be missing


class TimmModel(StagedModel):
    """A timm model (random init or a local ``pretrained`` file) fed through ``InputResize``.

    Args:
        name: timm model name, e.g. ``vit_tiny_patch16_224``; created with ``pretrained=False``.
        num_classes: classes of the head.
        arch: kdlab short name (``vit_tiny``; used in results.json and the teacher store).
        input_size: the resolution the model runs at; 32×32 batches are upsampled to it.
        pretrained: path to a local state dict; a head for a different ``num_classes`` is
            dropped (and freshly initialised), any other mismatch raises ``ValueError``.
        kwargs: passed to ``timm.create_model`` (e.g. ``img_size``, ``patch_size``, ``depth``).
    """

    def __init__(
        self,
        name: str,
        num_classes: int,
        arch: str | None = None,
        input_size: int = 224,
        pretrained: str | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        import timm

        self.arch = arch or name
        self.num_classes = num_classes
        self.input_size = input_size
        self.resize = InputResize(input_size)
        self.model = timm.create_model(
            name, pretrained=False, num_classes=num_classes, **dict(kwargs or {})
        )
        if pretrained:
            load_pretrained(self.model, pretrained)
        self.stage_names = tuple(f["module"].replace(".", "_") for f in self.model.feature_info)

    def forward_stages(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        final, feats = self.model.forward_intermediates(self.resize(x))
        return self.model.forward_head(final), dict(zip(self.stage_names, feats, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.resize(x))


class Resized(StagedModel):
    """Any kdlab model run at ``size×size`` (e.g. an ImageNet-stem ResNet teacher at 224).

    ``net`` is a model or a factory (Hydra ``_partial_``, so each ensemble member gets its own
    network). ``arch`` defaults to ``<net.arch>_<size>`` so the teacher store keeps it apart
    from the 32×32 model. ``load_state_dict`` also accepts the bare network's keys (a
    checkpoint of the unwrapped model), adding the ``net.`` prefix.
    """

    def __init__(
        self, net: nn.Module | Callable[[], nn.Module], size: int, arch: str | None = None
    ) -> None:
        super().__init__()
        self.net = net if isinstance(net, nn.Module) else net()
        self.resize = InputResize(size)
        self.input_size = size
        self.arch = arch or f"{getattr(self.net, 'arch', 'model')}_{size}"
        self.num_classes = self.net.num_classes
        self.stage_names = tuple(getattr(self.net, "stage_names", ()))

    def forward_stages(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.net.forward_stages(self.resize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.resize(x))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if state_dict and not any(k.startswith("net.") for k in state_dict):
            state_dict = {f"net.{k}": v for k, v in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
