"""Linear CKA (Kornblith et al. 2019) over a whole evaluation set, accumulated batch by batch.

CKA of a set is *not* the mean of per-batch CKAs (centring and the normalisation are
set-level), so the metric keeps the sufficient statistics of the full set instead: n, Σx, Σy,
XᵀX, YᵀY and YᵀX, all in float64. From them the centred cross-products follow exactly
(``X̃ᵀX̃ = XᵀX − n·μxμxᵀ`` and so on), and

    CKA(X, Y) = ‖ỸᵀX̃‖²_F / (‖X̃ᵀX̃‖_F · ‖ỸᵀỸ‖_F).

The statistics are sums, so DDP sums them across processes (``dist_reduce_fx="sum"``).
Their size is D×D per feature width D, not n×n, so a whole test set fits in memory.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

_REDUCTIONS = ("gap", "flatten")


class LinearCKA(Metric):
    """Linear CKA between two representations of the same inputs (e.g. teacher vs student stage).

    Args:
        reduce: how a [B, C, H, W] feature map becomes a [B, D] matrix. ``"gap"`` averages over
            H and W (D = C; the statistics stay C×C, feasible for 2048 channels) and compares
            channel-wise representations. ``"flatten"`` keeps every position (D = C·H·W; only
            for small maps, since the statistics are D×D). 2-D inputs [B, D] are used as is.

    The result is invariant to orthogonal transforms and isotropic scaling of either input and
    lies in [0, 1]; it is NaN when one representation is constant over the set (undefined).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, reduce: str = "gap", **kwargs) -> None:
        super().__init__(**kwargs)
        if reduce not in _REDUCTIONS:
            raise ValueError(f"reduce={reduce!r} is not one of {_REDUCTIONS}")
        self.reduce = reduce
        # Feature widths are unknown until the first batch: states start empty and are
        # sized lazily (``reset`` restores the empty defaults).
        for name in ("n", "sum_x", "sum_y", "xx", "yy", "yx"):
            self.add_state(name, default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")

    def _matrix(self, f: Tensor, which: str) -> Tensor:
        """Turn a batch of features into a float64 [B, D] matrix according to ``reduce``."""
        if f.dim() == 2:
            return f.detach().double()
        if f.dim() == 4 and self.reduce == "gap":
            return f.detach().double().mean(dim=(2, 3))
        if f.dim() >= 3 and self.reduce == "flatten":
            return f.detach().double().flatten(1)
        raise ValueError(
            f"LinearCKA(reduce={self.reduce!r}) cannot use {which} of shape {tuple(f.shape)}: "
            "pass [B, D] features, [B, C, H, W] maps, or reduce='flatten' for other shapes"
        )

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add a batch of paired features ``x`` [B, ...] and ``y`` [B, ...] of the same inputs."""
        x, y = self._matrix(x, "x"), self._matrix(y, "y")
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x and y must hold the same inputs: {x.shape[0]} vs {y.shape[0]} rows"
            )
        if self.n.numel() == 0:
            dx, dy, dev = x.shape[1], y.shape[1], x.device
            zeros = lambda *s: torch.zeros(*s, dtype=torch.float64, device=dev)  # noqa: E731
            self.n, self.sum_x, self.sum_y = zeros(1), zeros(dx), zeros(dy)
            self.xx, self.yy, self.yx = zeros(dx, dx), zeros(dy, dy), zeros(dy, dx)
        elif (x.shape[1], y.shape[1]) != (self.sum_x.numel(), self.sum_y.numel()):
            raise ValueError(
                f"feature widths changed between batches: ({x.shape[1]}, {y.shape[1]}) after "
                f"({self.sum_x.numel()}, {self.sum_y.numel()}); use one metric per stage"
            )
        self.n += x.shape[0]
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.xx += x.T @ x
        self.yy += y.T @ y
        self.yx += y.T @ x

    def _reduce_states(self, incoming_state: dict) -> None:
        """Merge states in ``forward``, where one side may still be the empty lazy default."""
        if self.n.numel() == 0:
            for name, value in incoming_state.items():
                if name in self._defaults:
                    setattr(self, name, value)
            return
        if incoming_state["n"].numel() == 0:
            return
        super()._reduce_states(incoming_state)

    def compute(self) -> Tensor:
        """CKA of the centred full-set features (float64 scalar)."""
        if self.n.numel() == 0 or self.n.item() < 2:
            raise ValueError("LinearCKA needs at least 2 samples before compute()")
        n = self.n
        mx, my = self.sum_x / n, self.sum_y / n
        xx = self.xx - n * torch.outer(mx, mx)
        yy = self.yy - n * torch.outer(my, my)
        yx = self.yx - n * torch.outer(my, mx)
        return (yx**2).sum() / (torch.linalg.matrix_norm(xx) * torch.linalg.matrix_norm(yy))
