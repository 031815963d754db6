"""Frozen teachers: eval mode forever, no gradients, and their own fast inference path.

A teacher is only ever *run*, never trained, so everything that makes running it cheaper belongs
here, offered by the teacher itself (``prepare``) rather than patched onto it from outside:

- **BN folding**: the network that runs is an eval-mode copy with BatchNorm merged into its
  convolutions (``kdlab.models.fold``); ``members`` keeps the trained networks, so parameter
  counts, hashes and init proximity still see the real weights.
- **channels_last** (NHWC) where it is faster on the device.
- **torch.compile** of the members' ``forward`` (``forward_stages`` stays eager).
- **vmap ensembles**: same-architecture members stacked and run as one batched call.

``predict`` runs the teacher under ``torch.inference_mode`` (no autograd bookkeeping at all)
and returns ordinary tensors, which a loss may save for its backward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdlab.models.base import stage_outputs
from kdlab.models.fold import fold_batchnorm
from kdlab.models.memory_format import choose_channels_last
from kdlab.teachers.ensemble import StackedMembers, ensemble_logits, stack_members

log = logging.getLogger(__name__)


class _Frozen(nn.Module):
    """Eval mode forever, no gradients: Lightning's ``.train()`` calls cannot undo it."""

    def __init__(
        self,
        sources: Sequence[dict] = (),
        fold_bn: bool = True,
        channels_last: bool | str = "auto",
        compile: bool = False,
        vmap: bool = True,
    ) -> None:
        super().__init__()
        self.sources = list(sources)
        self.fast = {
            "fold_bn": fold_bn,
            "channels_last": channels_last,
            "compile": compile,
            "vmap": vmap,
        }
        self.prepared: dict[str, bool] | None = None
        self.cache: nn.Module | None = None  # a teacher-logit table (kdlab.teachers.cache)

    def use_cache(self, table: nn.Module | None) -> None:
        """Serve the logits of training rows from ``table.lookup(index[, view])`` instead of
        running (``None``: run again). Feature maps and images without an index always run."""
        self.cache = table

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)

    def prepare(self, device: str | torch.device = "cpu") -> dict[str, bool]:
        """Apply the fast-inference settings once (idempotent); returns what was done."""
        if self.prepared is not None:
            return self.prepared
        device = torch.device(device)
        done = {"fold_bn": False, "channels_last": False, "compile": False, "vmap": False}
        if self.fast["fold_bn"]:
            self._fold()
            done["fold_bn"] = True
        if choose_channels_last(self.fast["channels_last"], self, device, train=False):
            self.use_channels_last(True)
            done["channels_last"] = True
        if self.fast["vmap"]:
            done["vmap"] = self._stack()
        if self.fast["compile"]:
            for net in self._running():
                net.compile()
            done["compile"] = True
        self.prepared = done
        log.info("teacher %s: %s", self.label, ", ".join(f"{k}={v}" for k, v in done.items()))
        return done

    channels_last = False  # the memory format the running networks are in

    def use_channels_last(self, flag: bool) -> None:
        """Run in channels_last (NHWC) or back in NCHW (stacked ensemble members keep their
        batched layout: a memory format is a property of 4-D tensors)."""
        fmt = torch.channels_last if flag else torch.contiguous_format
        for net in self._running():
            if not isinstance(net, StackedMembers):
                net.to(memory_format=fmt)
        self.channels_last = bool(flag)
        if self.prepared is not None:
            self.prepared["channels_last"] = self.channels_last

    @torch.no_grad()
    def predict(
        self,
        x: Tensor,
        stages: bool = False,
        preact: bool = False,
        index: Tensor | None = None,
        view: Tensor | None = None,
    ):
        """Logits (and stage maps) under ``inference_mode``, returned as normal tensors.

        With a cache and the batch's training-split ``index`` (and ``view`` ids for a view
        cache) the logits are looked up instead of computed. Cloning outside inference mode
        turns the outputs into ordinary tensors that a loss may save for its backward pass
        (the student's gradient never flows into them).
        """
        if self.cache is not None and not stages and index is not None:
            return self.cache.lookup(index, view)
        with torch.inference_mode():
            out = self.forward_stages(x, preact=preact) if stages else self(x)
        if stages:
            logits, feats = out
            return logits.clone(), {k: v.clone() for k, v in feats.items()}
        return out.clone()

    # subclasses: which networks run, how to fold them and whether they can be stacked
    def _running(self) -> list[nn.Module]:
        raise NotImplementedError

    def _fold(self) -> None:
        raise NotImplementedError

    def _stack(self) -> bool:
        return False


class FrozenTeacher(_Frozen):
    """One frozen teacher network; exposes ``forward_stages`` for feature losses and CKA."""

    def __init__(self, net: nn.Module, sources: Sequence[dict] = (), **fast) -> None:
        super().__init__(sources, **fast)
        self.net = net
        self.arch = getattr(net, "arch", "teacher")
        self.label = self.arch
        self.num_classes = net.num_classes
        self.stage_names = tuple(getattr(net, "stage_names", ()))
        self.has_preact = bool(getattr(net, "has_preact", False))
        self.input_size = getattr(net, "input_size", 32)
        self.members = [net]
        self.freeze()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def forward_stages(self, x: Tensor, preact: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        return stage_outputs(self.net, x, preact)

    # the running network's head (``StagedModel.head_map``/``classify``), for losses that score
    # pooled regions of the teacher's map with its own classifier; call under no_grad
    def head_map(self, last: Tensor) -> Tensor:
        return self.net.head_map(last)

    def classify(self, pooled: Tensor) -> Tensor:
        return self.net.classify(pooled)

    @property
    def map_stage(self) -> str | None:
        return getattr(self.net, "map_stage", None)

    @property
    def map_preact(self) -> bool:
        return bool(getattr(self.net, "map_preact", False))

    def pooled_map(self, feat: Tensor) -> Tensor:
        return self.net.pooled_map(feat)

    @property
    def activated_stages(self) -> bool:
        return bool(getattr(self.net, "activated_stages", True))

    def classifier_head(self) -> nn.Module:
        """The running network's classifier (frozen; BN folding leaves it as trained)."""
        return self.net.classifier_head()

    def forward_from(self, stage: str, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The teacher's layers after ``stage`` on another network's features ``x``.

        Runs with autograd (unlike ``predict``): the teacher's own weights stay frozen, but a
        loss's gradient flows back through it into ``x`` (the student features and whatever
        bridge produced them).
        """
        return self.net.forward_from(stage, x)

    def _running(self) -> list[nn.Module]:
        return [self.net]

    def _fold(self) -> None:
        self.net = fold_batchnorm(self.net)


class EnsembleTeacher(_Frozen):
    """Several frozen members; logits = log of the mean of the members' softmax.

    It has no ``forward_stages``: feature KD against an average of differently-shaped feature
    maps is not defined, and the feature losses say so.
    """

    def __init__(self, nets: Sequence[nn.Module], sources: Sequence[dict] = (), **fast) -> None:
        super().__init__(sources, **fast)
        if len(nets) < 2:
            raise ValueError("an ensemble teacher needs at least two members")
        self.nets = nn.ModuleList(nets)
        self.arch = getattr(nets[0], "arch", "teacher")
        self.label = f"ens{len(nets)}_{self.arch}"
        self.num_classes = nets[0].num_classes
        self.input_size = getattr(nets[0], "input_size", 32)
        self.members = list(nets)
        self.stacked: StackedMembers | None = None
        self.freeze()

    def forward_members(self, x: Tensor) -> Tensor:
        """Every member's logits, stacked ``[M, B, C]`` (one vmap call when stacked)."""
        if self.stacked is not None:
            return self.stacked(x)
        return torch.stack([net(x) for net in self.nets])

    def forward(self, x: Tensor) -> Tensor:
        return ensemble_logits(self.forward_members(x))

    def _running(self) -> list[nn.Module]:
        return [self.stacked] if self.stacked is not None else list(self.nets)

    def _fold(self) -> None:
        self.nets = nn.ModuleList(fold_batchnorm(n) for n in self.nets)

    def _stack(self) -> bool:
        self.stacked = stack_members(list(self.nets))
        return self.stacked is not None
