"""Test-only callbacks for the re-run tests, importable in a ``python -m kdlab.train`` subprocess
(``tests/`` is on ``PYTHONPATH`` there): a kill at a chosen point, once, and a long hold."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L


class KillOnce(L.Callback):
    """``os._exit`` (no cleanup, like an OOM kill) at batch ``batch`` of epoch ``epoch``, only
    the first time this run folder sees it (a marker file remembers)."""

    def __init__(self, epoch: int = 1, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        marker = Path(trainer.default_root_dir) / "killed_once"
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and not marker.exists():
            marker.write_text("killed\n")
            os._exit(9)


class Hold(L.Callback):
    """Sleep at the start of training: keeps the run (and its folder lock) alive for a while."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds

    def on_train_start(self, trainer, pl_module) -> None:
        Path(trainer.default_root_dir, "holding").write_text(str(os.getpid()))
        time.sleep(self.seconds)


class NanGradient(L.Callback):
    """Make the student's backward pass produce NaN while every loss stays finite: its logits
    gain ``0·sqrt(z − z.detach())`` (0 forward; 0·∞ = NaN backward), the case only anomaly
    detection can name (a non-finite loss stops the run before any backward)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        import torch

        def hook(module, inputs, out):
            return out + 0.0 * torch.sqrt(out - out.detach())

        pl_module.net.register_forward_hook(hook)
