"""bf16-mixed against fp32: the loss of one training batch, computed both ways.

The trainer's GPU default is bf16 autocast, and the KD losses promise to compute in float32
log-space under it. This measures what that promise is worth on the benchmark's pairs: one
system is built (random weights, random BatchNorm statistics in the teacher), copied, and
each copy computes the loss terms of the same batch in training mode, one in fp32 and one
under bf16 autocast. Each copy starts from the same state, so the memory banks of CRD and the
BatchNorm statistics cannot make the two differ; only the arithmetic does.

``ok`` is a relative difference of the total loss below ``TOLERANCE``: bf16 keeps 8 bits of
mantissa (≈ 0.4 % per rounding), and a loss that drifts by more than a few of those roundings
has lost float32 somewhere it should not have.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch

from kdlab.bench import steps as S
from kdlab.bench.pairs import PAIRS
from kdlab.systems import fast

TOLERANCE = 0.02


def _terms(system, x: torch.Tensor, batch, bf16: bool) -> tuple[dict[str, float], torch.Tensor]:
    device = x.device
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits, terms = system.compute_losses(x, batch.y, batch.index, batch.view)
    return {k: float(v) for k, v in terms.items()}, logits.float()


def loss_agreement(
    pair: str,
    method: str,
    device: torch.device,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
) -> dict[str, Any]:
    """fp32 and bf16-autocast loss terms of one batch for ``method`` on ``pair``."""
    t_arch, s_arch = PAIRS[pair]
    system = S.build_pair_system(method, t_arch, s_arch, len(images), device=device)
    fast.prepare(system, device.type)
    system.to(device).train()
    b = S.to_device(next(iter(S.make_loader("device", images, labels, batch, device, 0))), device)
    x = b.x.contiguous(memory_format=system.input_format)
    twin = copy.deepcopy(system)
    fp32, logits32 = _terms(system, x, b, bf16=False)
    bf16, logits16 = _terms(twin, x, b, bf16=True)
    diff = abs(bf16["loss"] - fp32["loss"])
    rel = diff / max(abs(fp32["loss"]), 1e-12)
    return {
        "name": f"precision/{pair}/{method}",
        "kind": "precision",
        "pair": pair,
        "method": method,
        "batch": batch,
        "loss_fp32": fp32["loss"],
        "loss_bf16": bf16["loss"],
        "abs_diff": diff,
        "rel_diff": rel,
        "ok": rel < TOLERANCE,
        "tolerance": TOLERANCE,
        "terms_fp32": fp32,
        "terms_bf16": bf16,
        "logits_max_abs_diff": float((logits16 - logits32).abs().max()),
    }


def agreement_rows(
    pairs: Sequence[str],
    methods: Sequence[str],
    device: torch.device,
    batch: int = 64,
    n_train: int = 20_000,
    on_row: Callable[[list], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per (pair, method); a method that raises is recorded with its error."""
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n_train, 32, 32, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 100, (n_train,), generator=g)
    rows: list[dict[str, Any]] = []
    for pair in pairs:
        for method in methods:
            try:
                row = loss_agreement(pair, method, device, images, labels, batch)
            except Exception as err:  # the next method still runs
                row = {
                    "name": f"precision/{pair}/{method}",
                    "kind": "precision",
                    "pair": pair,
                    "method": method,
                    "error": f"{type(err).__name__}: {err}",
                }
            rows.append(row)
            shown = (
                f"rel diff {row['rel_diff']:.2e}" if "rel_diff" in row else f"error: {row['error']}"
            )
            print(f"  {row['name']}: {shown}", flush=True)
            if on_row is not None:
                on_row(rows)
    return rows
