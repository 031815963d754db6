"""Training-set statistics accumulated on the device, read once per epoch.

Logging every loss term and updating an accuracy metric at every step costs a few Python calls
per term per step — for a small student more than the step itself. The sums here are a handful
of in-place tensor additions on the device; the epoch means equal what Lightning's epoch
reduction of per-step ``self.log`` calls gives (the mean over steps weighted by batch size).
"""

from __future__ import annotations

import torch
from torch import Tensor


class RunningMeans:
    """Batch-size-weighted sums of named scalars and of correct predictions."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.correct: Tensor | None = None
        self.count = 0

    @torch.no_grad()
    def update(self, terms: dict[str, Tensor], logits: Tensor, targets: Tensor) -> None:
        n = logits.shape[0]
        for name, value in terms.items():
            v = value.detach().float() * n
            self.sums[name] = v if name not in self.sums else self.sums[name].add_(v)
        hard = targets.argmax(-1) if targets.ndim == 2 else targets  # MixUp: soft targets
        right = (logits.detach().argmax(-1) == hard).sum()
        self.correct = right if self.correct is None else self.correct.add_(right)
        self.count += n

    def means(self) -> dict[str, Tensor]:
        return {name: total / self.count for name, total in self.sums.items()}

    def accuracy(self) -> Tensor:
        """Top-1 accuracy in percent over the accumulated batches."""
        return self.correct.float() * (100.0 / self.count)

    def reset(self) -> None:
        self.sums, self.correct, self.count = {}, None, 0
