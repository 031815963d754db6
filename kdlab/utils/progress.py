"""Progress a researcher can see: the rich bar in a terminal, one line per epoch everywhere.

SLURM logs and ``nohup`` files are not terminals: a progress bar there is either absent or a
wall of control characters. ``EpochLog`` writes one plain line per epoch through ``logging``
(so it reaches the console, Hydra's ``<run>/train.log`` and the SLURM log):

    epoch 3/30 · train loss 1.2345 · val acc 55.10 (best 55.10) · 4,210 img/s · 1m02s · ETA 28m10s
"""

from __future__ import annotations

import logging
import sys
import time

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

log = logging.getLogger("kdlab.progress")


def is_terminal() -> bool:
    """Whether standard output is an interactive terminal (not a log file or a pipe)."""
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def rich_progress_bar(enabled: bool = True) -> RichProgressBar | None:
    """The rich bar when progress bars are enabled, else no callback at all (Lightning refuses
    a progress-bar callback with ``enable_progress_bar=false``)."""
    return RichProgressBar() if enabled else None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _value(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


class EpochLog(L.Callback):
    """One log line per finished epoch: loss, val acc and best, images/s, elapsed, ETA."""

    def __init__(self) -> None:
        self.fit_start = self.epoch_start = 0.0
        self.images = 0
        self.epoch_times: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.fit_start = time.time()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_start, self.images = time.time(), 0
        self.last_batch = self.epoch_start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += len(batch)
        self.last_batch = time.time()  # images/s covers training steps, not validation

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        took = time.time() - self.epoch_start
        self.epoch_times.append(took)
        m = trainer.callback_metrics
        done, total = trainer.current_epoch + 1, trainer.max_epochs
        parts = [f"epoch {done}/{total}"]
        # callbacks run before the module's own epoch end, where kdlab systems log the epoch's
        # training means: read them from the system's running sums instead
        stats = getattr(pl_module, "train_stats", None)
        if stats is not None and stats.count:
            loss = float(stats.means()["loss"])
        else:
            loss = _value(m, "train/loss_epoch") or _value(m, "train/loss")
        if loss is not None:
            parts.append(f"train loss {loss:.4f}")
        acc, best = _value(m, "val/acc"), _value(m, "val/acc_best")
        if acc is not None:
            parts.append(f"val acc {acc:.2f}" + (f" (best {best:.2f})" if best is not None else ""))
        parts.append(f"{self.images / max(self.last_batch - self.epoch_start, 1e-9):,.0f} img/s")
        parts.append(_duration(time.time() - self.fit_start))
        if total and total > done:
            mean = sum(self.epoch_times) / len(self.epoch_times)
            parts.append(f"ETA {_duration(mean * (total - done))}")
        log.info(" · ".join(parts))
