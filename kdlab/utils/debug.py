"""What a debug run did, counted: batches per stage (``conf/debug/`` presets add this callback).

A debug preset promises something about how much runs ("one batch per stage", "a few batches
for 2 epochs"); Lightning's limits are easy to get subtly wrong (a float is a fraction, an int a
count, fast_dev_run overrides both, an experiment may override a preset), so the run writes
what actually ran to ``debug_batches.json`` in its folder and logs it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)


class BatchCount(L.Callback):
    """Counts training, validation (sanity checks apart) and test batches; one count per pass.

    ``debug_batches.json``: ``{"train": [per epoch], "validate": [per pass], "sanity": n,
    "test": [per test pass]}``, rewritten at the end of each pass (written by the first process
    only).
    """

    def __init__(self) -> None:
        self.counts: dict[str, list[int] | int] = {
            "train": [],
            "validate": [],
            "sanity": 0,
            "test": [],
        }

    def _bump(self, stage: str) -> None:
        self.counts[stage][-1] += 1  # type: ignore[index]

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero and trainer.default_root_dir:
            path = Path(trainer.default_root_dir) / "debug_batches.json"
            path.write_text(json.dumps(self.counts) + "\n")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.counts["train"].append(0)  # type: ignore[union-attr]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._bump("train")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.counts["validate"].append(0)  # type: ignore[union-attr]

    def on_validation_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:
        if trainer.sanity_checking:
            self.counts["sanity"] += 1  # type: ignore[operator]
        else:
            self._bump("validate")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.counts["test"].append(0)  # type: ignore[union-attr]

    def on_test_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:
        self._bump("test")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)
        log.info("debug run: batches per stage %s", self.counts)
