"""The one way every kdlab model exposes its stage outputs.

Feature KD, CKA and the benchmark all need intermediate activations. Instead of forward hooks
(which break under ``torch.compile`` and leak across calls) every model implements
``forward_stages`` and names its stages; ``stage_shapes`` probes shapes with a dry run, so the
same code works for our ResNets, PreResNet, the small CNN and wrapped timm models.
"""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class StagedModel(nn.Module):
    """A classifier whose named stage outputs can be returned next to the logits.

    Subclasses set ``arch`` (the short name used in experiment names and the teacher store,
    e.g. ``"r18"``), ``num_classes``, ``stage_names`` (in forward order) and implement
    ``forward_stages``.
    """

    arch: str = "model"
    num_classes: int
    stage_names: tuple[str, ...] = ()
    input_size: int = 32
    # the linear classifier on the pooled vector (a submodule path), and the stage whose global
    # mean is that vector (None: the pooled map is not a stage, e.g. a BN + ReLU follows)
    head_name: str | None = None
    map_stage: str | None = None
    map_preact: bool = False  # read map_stage with preact=True (see pooled_map)
    # whether stage outputs are post-ReLU (non-negative): a bridge into them ends in a ReLU-like
    # activation; pre-activation networks (WRN) output raw sums
    activated_stages: bool = True

    def forward_stages(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(logits, {stage_name: activation})`` for every stage in ``stage_names``."""
        raise NotImplementedError

    def classifier_head(self) -> nn.Linear:
        """The linear layer mapping the pooled vector to logits (class activation maps use its
        weights on ``map_stage``)."""
        head = self.get_submodule(self.head_name) if self.head_name else None
        if not isinstance(head, nn.Linear):
            raise ValueError(f"model '{self.arch}' names no linear classifier head (head_name)")
        return head

    def pooled_map(self, feat: Tensor) -> Tensor:
        """The map the classifier's input is the global mean of, from ``map_stage``'s output
        (read with ``preact=map_preact``); by default that output itself."""
        return feat

    def forward_from(self, stage: str, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Continue the forward pass from ``stage``'s output ``x``: ``(logits, {later stage:
        activation})``. Lets another network's features run through this one's later stages."""
        raise ValueError(
            f"model '{self.arch}' cannot continue its forward pass from a stage (forward_from); "
            "models that can: the benchmark's CIFAR ResNets (resnet8 … resnet110, resnet8x4/32x4), "
            "WRNs and VGGs"
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)[0]

    # The head, for losses that score other pooled vectors with the model's own classifier
    # (scale-decoupled distillation). Models with a pooled feature map implement both.
    def head_map(self, last: Tensor) -> Tensor:
        """The map the classifier pools, from the output of the last stage before ``pool``
        (identity unless layers sit between them); BN statistics are not updated again."""
        raise NotImplementedError(f"{type(self).__name__} has no head_map")

    def classify(self, pooled: Tensor) -> Tensor:
        """The classifier applied to pooled feature vectors ``[N, C]`` → logits ``[N, K]``."""
        raise NotImplementedError(f"{type(self).__name__} has no classify")


def batch_norm_again(bn: nn.Module, x: Tensor) -> Tensor:
    """``bn(x)`` without updating its running statistics a second time.

    ``head_map`` re-applies layers the forward pass already ran on the same batch: in training
    mode the batch statistics give the same output, and the running averages keep one update
    per step. Outside training (or for a folded ``Identity``) it is ``bn(x)``.
    """
    if not isinstance(bn, nn.BatchNorm2d) or not bn.training:
        return bn(x)
    return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)


def stage_outputs(net: nn.Module, x: Tensor, preact: bool = False):
    """``net.forward_stages(x)``, asking for pre-activation features only when wanted (models
    without them take no ``preact`` argument)."""
    return net.forward_stages(x, preact=True) if preact else net.forward_stages(x)


def check_stages(model: StagedModel, stages: list[str] | tuple[str, ...]) -> None:
    """Raise a clear ``ValueError`` for stage names the model does not have."""
    unknown = [s for s in stages if s not in model.stage_names]
    if unknown:
        raise ValueError(
            f"unknown stage(s) {unknown} for model '{model.arch}'; "
            f"available stages: {list(model.stage_names)}"
        )


M = TypeVar("M", bound=StagedModel)


def at_size(model: M, image_size: int) -> M:
    """The network as it will run: on ``image_size`` × ``image_size`` images (losses probe
    its stage shapes, and the memory-format timing its speed, at that size)."""
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer ≥ 8, got {image_size!r}")
    model.input_size = image_size
    return model


@torch.no_grad()
def stage_shapes(model: StagedModel, input_size: int | None = None) -> dict[str, tuple[int, ...]]:
    """Shapes ``(C, H, W)`` of every stage output for one input image, found by a dry run.

    The model is put in eval mode for the probe (BatchNorm with a batch of one) and its
    previous mode is restored afterwards.
    """
    size = input_size or getattr(model, "input_size", 32)
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        _, feats = model.forward_stages(torch.zeros(2, 3, size, size, device=device))
    finally:
        model.train(was_training)
    return {name: tuple(f.shape[1:]) for name, f in feats.items()}


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (the figure reported in papers' tables)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
