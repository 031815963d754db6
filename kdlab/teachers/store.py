"""The teacher store and strict teacher loading.

A distillation result is only meaningful with the right teacher, so nothing here falls back to
random weights: a missing, unreadable or mismatched checkpoint raises ``ValueError`` naming the
path and the exact command that trains that teacher.

Accepted files: a kdlab export (``<store>/<dataset>/<arch>/seed<k>.ckpt``), a Lightning
checkpoint of a kdlab run, a plain state dict, and the published benchmark teachers (a dict
with the weights under ``model``, as RepDistiller and mdistiller release them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from kdlab import CONF_DIR
from kdlab.models.export import is_published_format, network_state, read_checkpoint, sha256_file
from kdlab.teachers.frozen import EnsembleTeacher, FrozenTeacher
from kdlab.teachers.known import announce, recognise

EXPERIMENTS = CONF_DIR / "experiment"


def store_path(store: str | Path, dataset: str, arch: str, seed: int) -> Path:
    """``<store>/<dataset>/<arch>/seed<k>.ckpt``: where teacher runs export their best weights."""
    return Path(store) / dataset / arch / f"seed{seed}.ckpt"


def train_command(arch: str, dataset: str, seed: int) -> str:
    """The command that trains (and exports) this teacher: its own experiment for this dataset
    or in general when there is one, else the generic teacher experiment with this model."""
    for name in (f"teacher_{arch}_{dataset}", f"teacher_{arch}"):
        if (EXPERIMENTS / f"{name}.yaml").is_file():
            experiment = f"+experiment={name}"
            break
    else:
        experiment = f"+experiment=teacher model={arch}"
    return f"python -m kdlab.train {experiment} data={dataset} seed={seed}"


def _mismatches(net: nn.Module, state: dict[str, torch.Tensor], first: int = 3) -> str:
    """The first missing, unexpected and wrongly shaped keys, for an error message."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} ≠ {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
    ]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if keys:
            more = f" (+{len(keys) - first} more)" if len(keys) > first else ""
            parts.append(f"{len(keys)} {what}: {', '.join(keys[:first])}{more}")
    return "; ".join(parts)


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
    if is_published_format(obj):
        from kdlab.models.zoo.published import to_kdlab_state

        state = to_kdlab_state(arch, state)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:  # the model's own loader decides; the message lists what differs
        problems = _mismatches(net, state) or " ".join(str(e).split())[:600]
        raise fail(f"does not match the '{arch}' architecture ({problems})") from e
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
    fold_bn: bool = True,
    channels_last: bool | str = "auto",
    compile: bool = False,
    vmap: bool = True,
) -> FrozenTeacher | EnsembleTeacher:
    """The teacher of a run: ``ckpt``/``ckpts`` when given, else the store's ``seed``/``seeds``.

    ``arch`` is the short name under which the store keeps this teacher (``r50``, …). With
    ``seeds`` or ``ckpts`` the result is an ensemble. ``sources`` records each member's path and
    sha256 for results.json. The members' throw-away random initialisation runs on a forked RNG
    so building a teacher never shifts the run's data-order stream. ``fold_bn``,
    ``channels_last``, ``compile`` and ``vmap`` are applied by the teacher's ``prepare``.
    """
    if ckpts:
        paths, member_seeds = [Path(p) for p in ckpts], [seed] * len(ckpts)
    elif seeds is not None:
        if len(seeds) == 0:
            raise ValueError(
                "teacher.seeds=[] names no teacher: give the ensemble's seeds "
                "(teacher.seeds=[0,1,2]), or drop teacher.seeds for the single teacher.seed"
            )
        paths = [store_path(store, dataset, arch, s) for s in seeds]
        member_seeds = list(seeds)
    elif ckpt:
        paths, member_seeds = [Path(ckpt)], [seed]
    else:
        paths, member_seeds = [store_path(store, dataset, arch, seed)], [seed]
    nets, sources = [], []
    with torch.random.fork_rng(devices=[]):
        for path, s in zip(paths, member_seeds, strict=True):
            nets.append(load_teacher_net(path, model, dataset, num_classes, s))
            digest = sha256_file(path)
            known = recognise(path, digest)
            announce(known, arch, dataset)
            sources.append(
                {"path": str(path), "sha256": digest, "seed": s} | (known.record() if known else {})
            )
    fast = {"fold_bn": fold_bn, "channels_last": channels_last, "compile": compile, "vmap": vmap}
    if len(nets) == 1:
        return FrozenTeacher(nets[0], sources, **fast)
    return EnsembleTeacher(nets, sources, **fast)
