"""Frozen teachers: strict loading from the teacher store, freezing, and ensembles.

A distillation result is only meaningful with the right teacher, so nothing here falls back to
random weights: a missing, unreadable or mismatched checkpoint raises ``ValueError`` naming the
path and the exact command that trains that teacher (SPEC §2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from kdlab.distill.ensemble import ensemble_logits
from kdlab.models.export import network_state, read_checkpoint, sha256_file


def store_path(store: str | Path, dataset: str, arch: str, seed: int) -> Path:
    """``<store>/<dataset>/<arch>/seed<k>.ckpt``: where teacher runs export their best weights."""
    return Path(store) / dataset / arch / f"seed{seed}.ckpt"


def train_command(arch: str, dataset: str, seed: int) -> str:
    return f"python -m kdlab.train +experiment=teacher_{arch} data={dataset} seed={seed}"


class _Frozen(nn.Module):
    """Eval mode forever, no gradients: Lightning's ``.train()`` calls cannot undo it."""

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)


class FrozenTeacher(_Frozen):
    """One frozen teacher network; exposes ``forward_stages`` for feature KD and CKA."""

    def __init__(self, net: nn.Module, sources: Sequence[dict] = ()) -> None:
        super().__init__()
        self.net = net
        self.arch = getattr(net, "arch", "teacher")
        self.label = self.arch
        self.num_classes = net.num_classes
        self.stage_names = tuple(getattr(net, "stage_names", ()))
        self.input_size = getattr(net, "input_size", 32)
        self.sources = list(sources)
        self.members = [net]
        self.freeze()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def forward_stages(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.net.forward_stages(x)


class EnsembleTeacher(_Frozen):
    """Several frozen members; logits = log of the mean of the members' softmax.

    It has no ``forward_stages``: feature KD against an average of differently-shaped feature
    maps is not defined, and the feature loss says so.
    """

    def __init__(self, nets: Sequence[nn.Module], sources: Sequence[dict] = ()) -> None:
        super().__init__()
        if len(nets) < 2:
            raise ValueError("an ensemble teacher needs at least two members")
        self.nets = nn.ModuleList(nets)
        self.arch = getattr(nets[0], "arch", "teacher")
        self.label = f"ens{len(nets)}_{self.arch}"
        self.num_classes = nets[0].num_classes
        self.input_size = getattr(nets[0], "input_size", 32)
        self.sources = list(sources)
        self.members = list(nets)
        self.freeze()

    def forward_members(self, x: Tensor) -> Tensor:
        """Every member's logits, stacked ``[M, B, C]``."""
        return torch.stack([net(x) for net in self.nets])

    def forward(self, x: Tensor) -> Tensor:
        return ensemble_logits(self.forward_members(x))


def load_teacher_net(
    path: str | Path, model: Callable[[], nn.Module], dataset: str, num_classes: int, seed: int
) -> nn.Module:
    """Build a network with ``model()`` and load ``path`` into it strictly."""
    net = model()
    arch = getattr(net, "arch", "?")
    hint = f"Train this teacher with: {train_command(arch, dataset, seed)}"

    def fail(problem: str) -> ValueError:
        return ValueError(f"teacher checkpoint {path}: {problem}. {hint}")

    if not Path(path).is_file():
        raise fail("file not found")
    try:
        obj = read_checkpoint(path)
    except ValueError as e:
        raise fail(f"unreadable ({e})") from e
    if obj.get("arch") not in (None, arch):
        raise fail(f"was trained as '{obj['arch']}', but the teacher config builds '{arch}'")
    if obj.get("num_classes") not in (None, num_classes):
        raise fail(f"has {obj['num_classes']} classes, but {dataset} has {num_classes}")
    if obj.get("dataset") not in (None, dataset):
        raise fail(f"was trained on {obj['dataset']}, but this run uses {dataset}")
    state = network_state(obj)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())[:600]
        raise fail(f"does not match the '{arch}' architecture ({msg})") from e
    head = getattr(net, "num_classes", num_classes)
    if head != num_classes:
        raise fail(f"builds {head} classes, but {dataset} has {num_classes}")
    return net


def build_teacher(
    model: Callable[[], nn.Module],
    arch: str,
    dataset: str,
    num_classes: int,
    store: str,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    ckpt: str | None = None,
    ckpts: Sequence[str] | None = None,
) -> FrozenTeacher | EnsembleTeacher:
    """The teacher of a run: ``ckpt``/``ckpts`` when given, else the store's ``seed``/``seeds``.

    ``arch`` is the short name under which the store keeps this teacher (``r50``, …).
    With ``seeds`` or ``ckpts`` the result is an ensemble. ``sources`` records each member's
    path and sha256 for results.json.
    """
    if ckpts:
        paths, member_seeds = [Path(p) for p in ckpts], [seed] * len(ckpts)
    elif seeds:
        paths = [store_path(store, dataset, arch, s) for s in seeds]
        member_seeds = list(seeds)
    elif ckpt:
        paths, member_seeds = [Path(ckpt)], [seed]
    else:
        paths, member_seeds = [store_path(store, dataset, arch, seed)], [seed]
    nets, sources = [], []
    for path, s in zip(paths, member_seeds, strict=True):
        nets.append(load_teacher_net(path, model, dataset, num_classes, s))
        sources.append({"path": str(path), "sha256": sha256_file(path), "seed": s})
    if len(nets) == 1:
        return FrozenTeacher(nets[0], sources)
    return EnsembleTeacher(nets, sources)
