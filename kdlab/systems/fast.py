"""How a system's networks run fast on a device: memory format and compilation.

This is a choice about the machine, not about the method, so it lives outside the systems: the
``FastSteps`` callback makes it once when training starts (``channels_last=auto`` measures both
formats on the device, ``kdlab.models.memory_format``), the frozen teacher applies its own fast
path (BN folding, vmap, its memory format), and checkpoints carry the formats that ran, so a
resumed run keeps them whatever a new measurement would choose (the two formats round
differently).
"""

from __future__ import annotations

import logging

import lightning as L
import torch

from kdlab.models.memory_format import choose_channels_last, resolve_channels_last

log = logging.getLogger(__name__)

FORMATS = "kdlab_memory_formats"  # the checkpoint key (kept from earlier kdlab versions)


def prepare(
    system: L.LightningModule,
    device: str | torch.device = "cpu",
    channels_last: bool | str = "auto",
    compile: bool = False,
) -> dict[str, bool]:
    """Put ``system``'s student (and its teacher's own fast path) in the fastest form for
    ``device``; returns what was done."""
    device = torch.device(device)
    nhwc = choose_channels_last(channels_last, system.net, device)
    system.use_memory_formats({"student": nhwc})
    done = {"channels_last": nhwc, "compile": bool(compile)}
    if compile:
        system.net.compile()
    teacher = getattr(system, "teacher", None)
    if teacher is not None:
        done |= {f"teacher_{k}": v for k, v in teacher.prepare(device).items()}
    return done


class FastSteps(L.Callback):
    """Chooses memory formats and compilation at set-up; saves and restores the formats."""

    def __init__(self, channels_last: bool | str = "auto", compile: bool = False) -> None:
        resolve_channels_last(channels_last, "cpu")  # a bad value fails here, before training
        self.channels_last, self.compile = channels_last, compile
        self.done: dict[str, bool] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.done is None and hasattr(pl_module, "use_memory_formats"):
            device = trainer.strategy.root_device
            self.done = prepare(pl_module, device, self.channels_last, self.compile)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if hasattr(pl_module, "memory_formats"):
            checkpoint[FORMATS] = pl_module.memory_formats()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if FORMATS in checkpoint and hasattr(pl_module, "use_memory_formats"):
            pl_module.use_memory_formats(checkpoint[FORMATS])
