"""A non-finite training loss, noticed on the device and acted on at a sync point.

Once a loss is NaN or infinite every later step only spreads it into the weights, so the run
must stop and say so instead of "finishing" with NaN metrics. Testing ``isfinite`` on the host
every step would add a device sync per step (the small students of the benchmark are bound by
exactly such stalls on a GPU), so the first bad step and term are recorded with device ops and
read when the host syncs anyway: every step on the CPU, every logging interval and before each
validation on an accelerator.
"""

from __future__ import annotations

import torch
from torch import Tensor


class RunDiverged(Exception):
    """The training loss became non-finite: the run is recorded as ``diverged``."""

    def __init__(self, step: int, epoch: int, term: str) -> None:
        super().__init__(
            f"the training loss term {term!r} became non-finite at step {step} (epoch {epoch}); "
            "the run stopped. Lower the learning rate (optim.lr=), keep gradient clipping on "
            "(grad_clip=), or check the data and the teacher"
        )
        self.step, self.epoch, self.term = step, epoch, term


class DivergenceWatch:
    """The first (step, term) whose loss was not finite, kept on the loss's device."""

    def __init__(self) -> None:
        self.first: Tensor | None = None  # [step, term index, epoch]; step -1 = all finite
        self.names: list[str] = []

    @torch.no_grad()
    def update(self, terms: dict[str, Tensor], step: int, epoch: int) -> None:
        # the parts before the total: a NaN part makes the total NaN too, and the part is the
        # news (the KD term of a broken teacher, the CE of an exploding student)
        self.names = [n for n in terms if n != "loss"] + [n for n in terms if n == "loss"]
        values = torch.stack([terms[n].detach().float().reshape(()) for n in self.names])
        bad = ~torch.isfinite(values)
        device = values.device
        if self.first is None:
            self.first = torch.full((3,), -1, dtype=torch.long, device=device)
        order = torch.arange(len(self.names), device=device)
        first_bad = torch.where(bad, order, len(self.names)).min()
        now = torch.stack(
            [torch.tensor(step, device=device), first_bad, torch.tensor(epoch, device=device)]
        )
        self.first = torch.where(bad.any() & (self.first[0] < 0), now, self.first)

    def check(self) -> None:
        """Raise :class:`RunDiverged` if any step so far had a non-finite term (a host sync)."""
        if self.first is None:
            return
        step, term, epoch = (int(v) for v in self.first.tolist())
        if step < 0:
            return
        name = self.names[term] if 0 <= term < len(self.names) else "loss"
        raise RunDiverged(step, epoch, "loss" if name == "loss" else f"loss_{name}")

    def reset(self) -> None:
        self.first = None
