"""Checkpoint files that a kill can never leave half-written.

Lightning writes a checkpoint straight into its final path, so a run killed mid-write (a time
limit, an OOM kill, a full disk) leaves a truncated ``last.ckpt`` that blocks its resume. Here
each checkpoint is written to a temporary file and renamed into place (atomic on POSIX), and the
``last.ckpt`` it replaces is kept as ``last.ckpt.prev``: ``resume=previous`` continues from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

KEEP_PREVIOUS = "last.ckpt"


class SafeCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic writes and one previous generation of last.ckpt."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        path = Path(path)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        if path.name == KEEP_PREVIOUS and path.is_file():
            os.replace(path, path.with_name(f"{path.name}.prev"))
        os.replace(tmp, path)
