"""Exported weights: the format of the teacher store (``<store>/<dataset>/<arch>/seed<k>.ckpt``).

An export is a plain ``torch.save`` dict that ``torch.load(weights_only=True)`` can read:
``state_dict`` (the bare network's weights), ``model`` (the Hydra config that builds the
network, with ``_target_``), and metadata (``arch``, ``num_classes``, ``dataset``, ``seed``,
accuracies). Loading needs no Lightning and no training code, which is what the report's
figures and the teacher loader rely on.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn


def export_weights(net: nn.Module, path: str | Path, model_cfg: dict, **meta: Any) -> Path:
    """Write ``net``'s weights and the config that rebuilds it, atomically (tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "kdlab-weights-v1",
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "model": model_cfg,
        "arch": getattr(net, "arch", None),
        "num_classes": getattr(net, "num_classes", None),
        **meta,
    }
    return save_atomic(payload, path)


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file, then rename: a killed run never leaves half a file."""
    from kdlab.utils.checkpoint_io import write_atomic

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer(), "file")
    return Path(path)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file: recorded in results.json so a result names the exact teacher."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a kdlab export, a Lightning checkpoint or a plain state_dict as a dict.

    Raises ``ValueError`` naming the path when the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    from kdlab.utils.safe_load import load_weights

    obj = load_weights(path, "checkpoint")
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of weights")
    return obj


def is_published_format(obj: dict[str, Any]) -> bool:
    """The benchmark's released teachers: the weights (tensors) under ``model``.

    kdlab exports also have a ``model`` entry, but it holds the Hydra config, not tensors.
    """
    weights = obj.get("model")
    return (
        isinstance(weights, dict)
        and bool(weights)
        and all(isinstance(v, torch.Tensor) for v in weights.values())
    )


def network_state(obj: dict[str, Any], prefix: str = "net.") -> dict[str, torch.Tensor]:
    """The bare network's state dict from any of the formats ``read_checkpoint`` accepts.

    Lightning checkpoints keep the network under ``state_dict`` with the system's attribute
    prefix (``net.`` in kdlab systems); kdlab exports keep it bare; published benchmark
    teachers keep it under ``model`` (names as in their code); a plain state dict is returned
    as is.
    """
    if is_published_format(obj):
        return obj["model"]
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd = obj["state_dict"]
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        return sd
    return obj


def load_exported(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network of a kdlab export from its stored config and load its weights."""
    from hydra.utils import instantiate

    obj = read_checkpoint(path)
    if "model" not in obj:
        raise ValueError(f"{path} is not a kdlab weights export (no 'model' config inside)")
    net = instantiate(obj["model"])
    net.load_state_dict(network_state(obj), strict=True)
    return net.to(map_location).eval()
