"""Checkpoint files that a kill can never leave half-written, staged beside their destination.

Lightning writes a checkpoint straight into its final path (through fsspec, which stages it in
the system temp folder), so a run killed mid-write leaves a truncated ``last.ckpt`` that blocks
its resume, and a small ``/tmp`` fails runs whose own disk has room. Here each checkpoint is
serialised, written to a temporary file in its own folder and renamed into place (atomic on
POSIX); the temporary file is removed on every exit path, and a full disk is one message that
names the folder and the space needed. The ``last.ckpt`` it replaces is kept as
``last.ckpt.prev``: ``resume=previous`` continues from it.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

KEEP_PREVIOUS = "last.ckpt"
_UMASK = os.umask(0)
os.umask(_UMASK)
TMP_SUFFIX = ".tmp"


class DiskFull(OSError):
    """No room for a file kdlab must write: which folder, how much it needs."""


def write_atomic(path: str | os.PathLike, data: bytes | memoryview, what: str = "file") -> None:
    """``data`` into ``path`` through a temporary file beside it, never leaving that behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from a group
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise DiskFull(
                e.errno,
                f"disk full: writing {what} {path} needs {len(data) / 2**20:.1f} MiB in "
                f"{path.parent}, which has {free / 2**20:.1f} MiB free. Free space there or point "
                "paths.log_dir= (runs) / paths.teachers= (teacher files) at a larger disk",
            ) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporary files that a killed process left in ``folder`` (call it holding the folder's
    lock: no live writer can own them then)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{TMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class SafeCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic writes beside the file and one previous generation of
    last.ckpt."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        if path.name == KEEP_PREVIOUS and path.is_file():
            # a hard link keeps last.ckpt in place until the new one replaces it
            prev = path.with_name(f"{path.name}.prev")
            prev.unlink(missing_ok=True)
            try:
                os.link(path, prev)
            except OSError:
                shutil.copy2(path, prev)
        write_atomic(path, buffer.getbuffer(), "checkpoint")
