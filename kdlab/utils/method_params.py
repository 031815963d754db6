"""A method's settings as data: one description from the config or from the built loss.

Everything that names a run after its method (run tags and sweep folders, W&B names, failure
records, results.json's ``method_label``) goes through ``describe``, so a setting that a new
loss adds is recorded and shown without any of those places knowing its name.

Both sides give the same *tree*: ``(loss class, {argument: value or subtree})``. From a config
node the arguments are the node's keys plus the constructor's defaults for those it leaves out;
from a built loss they are read back from the loss (``KDLoss.method_params``). A tag shows every
argument the class gives a short name (``a0.5_T4``) and every other one whose value differs from
its default (``p2``, lists as a short hash), so two runs that differ in any setting never share
a tag.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

Tree = tuple[type, dict[str, Any]]
SYMBOLS = {"alpha": "α", "temperature": "T", "beta": "β"}  # how tables print these settings


def _import(target: str) -> type:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _arguments(cls: type) -> dict[str, Any]:
    """Constructor argument → default (``inspect.Parameter.empty`` when required)."""
    return {
        n: p.default
        for n, p in inspect.signature(cls.__init__).parameters.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _is_target(value: Any) -> bool:
    return isinstance(value, Mapping | DictConfig) and "_target_" in value


def config_tree(node: Mapping | DictConfig) -> Tree:
    """The tree of a loss config node (``_target_`` plus its settings), defaults filled in."""
    cls = _import(str(node["_target_"]))
    args: dict[str, Any] = {}
    for name, default in _arguments(cls).items():
        value = node[name] if name in node else default
        if _is_target(value):
            args[name] = config_tree(value)
        elif (
            isinstance(value, Mapping | DictConfig)
            and value
            and all(_is_target(v) for v in value.values())
        ):
            args[name] = {str(k): config_tree(v) for k, v in value.items()}
        elif value is not inspect.Parameter.empty:
            args[name] = _plain(value)
    return cls, args


def names_loss(node: Any) -> bool:
    """A distill node that names a loss class; ``alpha=0.5`` on a run without distillation
    makes one that does not (the run is refused for it with a message, not by a KeyError)."""
    return node is not None and "_target_" in node


def unread_keys(node: Mapping | DictConfig) -> list[str]:
    """Keys of a loss config node that its class takes no argument for (Hydra's own
    ``_target_``-style keys aside): instantiating the node as it is would fail on them."""
    taken = _arguments(_import(str(node["_target_"])))
    return [str(k) for k in node if str(k) not in taken and not re.fullmatch(r"_\w+_", str(k))]


def arguments(target: str) -> list[str]:
    """The settings a loss class takes, in constructor order (for messages)."""
    return list(_arguments(_import(target)))


def loss_tree(loss: Any) -> Tree:
    """The tree of a built loss, its arguments read back as used."""
    from kdlab.distill.base import KDLoss

    names = list(_arguments(type(loss)))
    missing = [n for n in names if not hasattr(loss, n)]
    if missing:
        raise TypeError(
            f"{type(loss).__name__} must store its constructor arguments {missing} under "
            "their own names, so that its settings are recorded in results.json"
        )
    args: dict[str, Any] = {}
    for name in names:
        value = getattr(loss, name)
        if isinstance(value, KDLoss):
            args[name] = loss_tree(value)
        elif (
            hasattr(value, "items")
            and value
            and all(isinstance(v, KDLoss) for _, v in value.items())
        ):
            args[name] = {str(k): loss_tree(v) for k, v in value.items()}
        else:
            args[name] = _plain(value)
    return type(loss), args


def _is_tree(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], type)


def _is_trees(value: Any) -> bool:
    """A mapping of named sub-losses (a combination's ``terms``)."""
    return isinstance(value, dict) and bool(value) and all(_is_tree(v) for v in value.values())


def params(tree: Tree | None) -> dict[str, Any]:
    """The plain nested settings of a tree (what results.json stores as ``method_params``)."""
    if tree is None:
        return {}
    out: dict[str, Any] = {}
    for name, value in tree[1].items():
        if _is_tree(value):
            out[name] = params(value)
        elif _is_trees(value):
            out[name] = {k: params(v) for k, v in value.items()}
        else:
            out[name] = value
    return out


def _fmt(value: Any, for_tag: bool = True) -> str:
    """Floats as ``0.5``/``1e-05``; in tags a list or dict becomes ``-<6 hex of its hash>``
    (folder names stay short), in labels it is written out."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        if for_tag:
            return "-" + hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]
        if isinstance(value, list):
            return "[" + ", ".join(_fmt(v, False) for v in value) + "]"
        return "{" + ", ".join(f"{k}: {_fmt(v, False)}" for k, v in value.items()) + "}"
    return str(value)


def _shown(tree: Tree) -> list[tuple[str, str, Any]]:
    """``(tag key, table key, value)`` of every setting worth naming, in constructor order."""
    cls, args = tree
    defaults = _arguments(cls)
    short = getattr(cls, "short_names", {})
    out: list[tuple[str, str, Any]] = []
    weights = args.get("weights") if isinstance(args.get("weights"), dict) else {}
    for name, value in args.items():
        if _is_tree(value):
            out += _shown(value)
            continue
        if _is_trees(value):
            for key, sub in value.items():
                if weights.get(key, 1) != 0:  # a term switched off says nothing about the run
                    out += _shown(sub)
            continue
        default = _plain(defaults.get(name, inspect.Parameter.empty))
        if name not in short and value == default:
            continue
        if isinstance(value, dict) and name in short:  # e.g. weights → wce1_wkd0.9
            out += [(f"{short[name]}{k}", f"{short[name]}_{k}", v) for k, v in value.items()]
        else:
            out.append((short.get(name, name), SYMBOLS.get(name, name), value))
    return out


def tag(tree: Tree | None, seed: Any = None) -> str:
    """``a0.5_T4_s0``: the run tag of run folders, sweep job folders and W&B run names."""
    parts = [f"{key}{_fmt(v)}" for key, _, v in (_shown(tree) if tree else []) if v is not None]
    if seed is not None:
        parts.append(f"s{seed}")
    return "_".join(parts) or "run"


def label(tree: Tree | None) -> str:
    """``α=0.5, T=4``: how tables and summaries name a configuration ("—" when none)."""
    shown = _shown(tree) if tree else []
    parts = [f"{key}={_fmt(v, for_tag=False)}" for _, key, v in shown if v is not None]
    return ", ".join(parts) or "—"


def flat_hparams(method_params: Mapping[str, Any]) -> dict[str, Any]:
    """The flat ``alpha``/``temperature``/``beta`` keys that existing scripts read: the method's
    own top-level settings of those names, null when it has none (a combination's inner terms
    are described by ``method_params`` and the label, not by these keys)."""
    return {k: method_params.get(k) for k in SYMBOLS}
