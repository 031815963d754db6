"""Reading files that hold tensors, with errors that name the file and never advise unsafe
loading.

``torch.load(weights_only=True)`` on a corrupt or foreign file suggests retrying with
``weights_only=False``, which runs arbitrary code from the file: advice a user must never
follow for a downloaded checkpoint. Every kdlab reader goes through :func:`load_weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class UnreadableFile(ValueError):
    """A file kdlab needs that torch cannot read safely (missing, truncated, not tensors)."""


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if "weights_only" in str(err) or "Weights only load failed" in str(err):
        return "not a file of tensors that can be loaded safely (corrupt, truncated, or pickled objects)"
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def load_weights(path: str | Path, what: str = "file") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or :class:`UnreadableFile`."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"{what} {path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UnreadableFile(f"cannot read {what} {path}: {_why(e)}") from None
