"""Exact resume: a resumed run continues the random streams of the interrupted one."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


class RestoreRNGState(L.Callback):
    """Make a resumed run continue the random streams of the interrupted one (exact resume).

    Lightning checkpoints the model, optimiser, scheduler and loop counters but not the global
    RNGs, so after a resume the DataLoader's shuffle order, CPU-side augmentation and dropout
    draw from a freshly seeded stream and the run drifts from an uninterrupted one. This
    callback stores the torch/NumPy/Python (and CUDA) RNG states in every checkpoint and puts
    them back just before the resumed fit builds its first training iterator, the point where
    the uninterrupted run would draw next (nothing draws between the end-of-epoch checkpoint
    and the next epoch's iterator). Resuming from a mid-epoch checkpoint is not made exact.
    """

    key = "kdlab_rng_states"

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @staticmethod
    def collect() -> dict[str, Any]:
        """RNG states as tensors and plain ints: loadable by ``torch.load(weights_only=True)``."""
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        states: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return states

    @staticmethod
    def restore(states: dict[str, Any]) -> None:
        torch.set_rng_state(states["torch"])
        name, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = states["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.key] = self.collect()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(self.key)

    # Lightning builds the first training iterator of a resumed fit (which draws the shuffle
    # seed) right after the sanity check, before any epoch hook: restore at fit start and again
    # after the sanity check (which draws for its own loader), and stop at the first epoch.
    def on_fit_start(self, trainer, pl_module) -> None:
        if self._pending is not None:
            self.restore(self._pending)

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        if self._pending is not None:
            self.restore(self._pending)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._pending = None
