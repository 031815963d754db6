"""Fold eval-mode BatchNorm into the preceding convolution of a frozen teacher.

A frozen teacher only ever runs in eval mode, where ``BN(conv(x))`` is one affine map per
output channel after the convolution, so it can be baked into the convolution's weight and
bias. That removes a memory-bound pass over every activation, the cheapest speed-up for the
teacher's forward in KD.

Which pairs are folded is read from the model's actual data flow, not from attribute names: the
model's ``forward`` is traced with ``torch.fx`` and a ``Conv2d`` is folded into a
``BatchNorm2d`` only when the BN's input is that convolution's output *and nothing else reads
that output* (otherwise the un-normalised tensor would still be needed). Names would lie for
pre-activation nets, where ``bn1`` comes *before* ``conv1``.

- torchvision/kdlab ResNets: every BN is folded: the stem ``conv1 → bn1``, each block's
  ``convK → bnK`` and each ``downsample = Sequential(conv, bn)``. No ``BatchNorm2d`` remains.
- PreResNet (pre-activation): each block's ``conv1 → bn2`` is folded. Each block's ``bn1`` (it
  reads the block input, which the residual path also reads, or a residual sum) and the final
  ``bn`` (it reads the last residual sum) have no conv directly before them and stay as
  eval-mode ``BatchNorm2d``.
- BNs with ``track_running_stats=False`` normalise with batch statistics even in eval mode and
  are never folded.

If a model cannot be traced (data-dependent Python control flow), only ``Conv2d`` immediately
followed by ``BatchNorm2d`` inside an ``nn.Sequential`` is folded, and a warning says so.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import fx, nn

log = logging.getLogger(__name__)


def _foldable_bn(bn: nn.Module) -> bool:
    return isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None


def _traced_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, bn name) pairs where the BN is the sole consumer of the conv's output."""
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.Conv2d):
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module":
            continue
        bn_name = users[0].target
        bn_node = users[0]
        if not _foldable_bn(modules[bn_name]) or bn_node.args[:1] != (node,) or bn_node.kwargs:
            continue
        if calls[node.target] == 1 and calls[bn_name] == 1:  # shared modules stay unfolded
            pairs.append((node.target, bn_name))
    return pairs


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Fallback: adjacent (Conv2d, BatchNorm2d) children of every ``nn.Sequential``."""
    pairs = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        kids = list(mod.named_children())
        for (cn, conv), (bn_n, bn) in zip(kids, kids[1:], strict=False):
            if isinstance(conv, nn.Conv2d) and _foldable_bn(bn):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + cn, prefix + bn_n))
    return pairs


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv ← BN∘conv: W' = W·γ/σ, b' = (b − μ)·γ/σ + β, with σ = sqrt(var + eps)."""
    w = conv.weight.double()
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    new_bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        new_bias = new_bias + bn.bias.double()
    conv.weight.copy_((w * scale.reshape(-1, 1, 1, 1)).to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype))
    else:
        conv.bias.copy_(new_bias.to(conv.bias.dtype))


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A frozen eval-mode copy of ``model`` with each conv→BN pair merged into the conv.

    The original is left untouched. Folded BNs become ``nn.Identity`` so the copy keeps the
    model's own ``forward``/``forward_stages``; every parameter has ``requires_grad=False``.
    The copy must stay in eval mode: putting it in train mode would not bring the BNs back.
    """
    folded = copy.deepcopy(model).eval()
    try:
        pairs = _traced_pairs(folded)
    except Exception as err:  # untraceable forward: fall back to the structure we can trust
        log.warning(
            "fold_batchnorm: could not trace %s (%s); folding only Conv2d→BatchNorm2d pairs "
            "inside nn.Sequential",
            type(model).__name__,
            err,
        )
        pairs = _sequential_pairs(folded)
    for conv_name, bn_name in pairs:
        _fold_into(folded.get_submodule(conv_name), folded.get_submodule(bn_name))
        _replace(folded, bn_name, nn.Identity())
    folded.requires_grad_(False)
    return folded
