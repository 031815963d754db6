"""Lightning's loop against a plain PyTorch loop on the same system and the same batches.

Lightning's per-step cost is the loop itself plus what the system's ``training_step`` adds
(metric update, ``self.log`` calls, the gradient-norm hook). The plain loop runs the identical
``compute_losses`` + backward + clipping + SGD step; the difference is the price of the
framework.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from kdlab.bench.steps import summarize, sync


class _StepClock(L.Callback):
    """Timestamps at the end of every training batch (after a device sync)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.ends = device, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(self.device)
        self.ends.append(time.perf_counter())


def lightning_rate(
    system, loader, device: torch.device, batch: int, warmup: int, steps: int, repeats: int
) -> dict:
    """images/s of ``Trainer.fit`` steps, in ``repeats`` windows of ``steps`` after ``warmup``."""
    clock = _StepClock(device)
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        max_steps=warmup + steps * repeats,
        precision="bf16-mixed" if device.type == "cuda" else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        deterministic=False,
        callbacks=[clock],
        log_every_n_steps=50,
    )
    trainer.fit(system, train_dataloaders=loader)
    ends = clock.ends[warmup - 1 :: steps]  # window boundaries (warmup ≥ 1)
    rates = [batch * steps / (b - a) for a, b in zip(ends, ends[1:], strict=False)]
    return summarize(rates[:repeats])
