"""A test-only Lightning callback that interrupts training, importable in a subprocess.

``tests/test_resume.py`` passes it to ``python -m kdlab.train`` with
``+callbacks.stopper._target_=helpers_resume.StopAfterEpochs`` (``tests/`` on ``PYTHONPATH``):
it stands in for a run killed after its first epoch, leaving ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import lightning as L


class StopAfterEpochs(L.Callback):
    """Stop the fit loop once ``epochs`` epochs (training + validation + checkpoint) are done,
    the first time this run folder gets there (a marker file remembers): the relaunch, with
    the same config, trains to the end."""

    def __init__(self, epochs: int = 1) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from pathlib import Path

        marker = Path(trainer.default_root_dir) / "stopped_once"
        if trainer.current_epoch + 1 >= self.epochs and not marker.exists():
            marker.write_text("stopped\n")
            trainer.should_stop = True


class ProbeStart(L.Callback):
    """Write where fit starts (epoch, global step) to ``<run>/fit_start.json``: after a resume
    it must be the interrupted run's position, not epoch 0."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import json
        from pathlib import Path

        probe = {"epoch": trainer.current_epoch, "global_step": trainer.global_step}
        Path(trainer.default_root_dir, "fit_start.json").write_text(json.dumps(probe))


class CountTestSamples(L.Callback):
    """Write how many test images this process evaluated to ``<run>/test_rank<r>.json``:
    proves a DDP run really shards the test set instead of every rank seeing all of it."""

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.seen += len(batch.y)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import json
        from pathlib import Path

        out = Path(trainer.default_root_dir, f"test_rank{trainer.global_rank}.json")
        out.write_text(json.dumps({"seen": self.seen, "world_size": trainer.world_size}))


class HardExit(L.Callback):
    """Kill the process outright when training starts (like an OOM kill: no Python cleanup,
    no results.json): the sweep must still collect the other jobs and list this one."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import os

        os._exit(3)


class SleepPerBatch(L.Callback):
    """Sleep after every training batch: a tiny run lasts long enough to meet a SLURM time limit
    (or a ``scancel``) mid-epoch, without changing what it computes (no RNG, no state)."""

    def __init__(self, seconds: float = 0.5) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import time

        time.sleep(self.seconds)
