"""Contrastive representation distillation, CRD (Tian et al., ICLR 2020).

CRD makes the student's representation of a sample recognisable by the teacher's among many
others, and vice versa. Both pooled feature vectors are embedded by a linear layer and
L2-normalised (``v_s``, ``v_t`` ∈ ℝ^d, ``d = feat_dim``). A memory bank keeps one embedding per
training sample for each side (``memory_s`` from the student, ``memory_t`` from the teacher).
For a batch sample ``i`` with training-split row ``n_i``, the contrast set is ``n_i`` itself (the
positive) and ``K = nce_k`` negatives: rows of *other classes* drawn uniformly. Scores are
``P(j | v) = exp(⟨m_j, v⟩/τ)/Z`` (τ = ``nce_t``) where ``Z = N·mean(exp(·/τ))`` is fixed from
the first batch, as published, and each side is trained as noise-contrastive estimation against
a uniform noise distribution ``1/N``::

    h(P) = P / (P + K/N + ε)
    NCE(v, M) = −(1/B)·Σ_i [ log h(P_{i,pos}) + Σ_k log(1 − h(P_{i,k})) ]
    L_crd = NCE(v_s, memory_t) + NCE(v_t, memory_s)

(``1 − h`` is written ``(K/N)/(P + K/N + ε)``, as in the published code, ε = 1e-7.)

After the scores, the bank rows of the batch are moved towards the new embeddings and
re-normalised, without autograd: ``m_n ← (μ·m_n + (1 − μ)·v) / ‖μ·m_n + (1 − μ)·v‖`` with
``μ = nce_m``. The banks start uniform in ``±1/√(d/3)``, drawn with torch's global RNG in
``bind_data``. Everything runs in float32 with autocast disabled.

Negatives are drawn in the loss with torch's RNG (the published code draws them with numpy in
the data loader): for each sample, ``torch.multinomial`` over the training rows with weight 1
for rows whose label differs from the sample's and 0 otherwise; *without replacement* when every
class has at least ``K`` rows of other classes (CIFAR-100: 49,500 ≥ 16,384), as published, and
with replacement for every sample otherwise (the published code decides per class; the two
differ only on small or very unbalanced splits). The positive is the sample's own row (the published
default ``--mode exact``). The labels come from ``bind_data`` (the training split), so soft
MixUp targets change nothing here. Banks are updated only in training mode; under DDP the rows
and embeddings of all ranks are gathered first, so every rank applies the same update.

Published settings (RepDistiller ``train_student.py``, ``crd/``): ``feat_dim 128, nce_k 16384,
nce_t 0.07, nce_m 0.5``, on the pooled features (``feat[-1]``), loss ``CE + 0.8·CRD``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from kdlab.distill.base import KDLoss
from kdlab.distill.parts import ROLES, Embed, select_stages
from kdlab.models.base import stage_shapes

NCE_EPS = 1e-7


def _positive_int(name: str, value: object, example: int, what: str) -> int:
    hint = f"{name} is {what}: an integer >= 1; pass e.g. {name}={example}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}={value!r} is not a number: {hint}")
    if not (math.isfinite(value) and float(value).is_integer() and value >= 1):
        raise ValueError(f"{name}={value!r} is not allowed: {hint}")
    return int(value)


def _number(name: str, value: object, ok, allowed: str, example: str) -> float:
    hint = f"{name} must be {allowed}; pass e.g. {name}={example}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}={value!r} is not a number: {hint}")
    v = float(value)
    if not (math.isfinite(v) and ok(v)):
        raise ValueError(f"{name}={value!r} is not allowed: {hint}")
    return v


def nce_loss(scores: Tensor, n_data: int) -> Tensor:
    """NCE loss of ``scores`` [B, 1 + K] (positive first) against uniform noise ``1/n_data``."""
    k = scores.shape[1] - 1
    noise = k / float(n_data)
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + NCE_EPS))
    log_neg = torch.log(noise / (scores[:, 1:] + noise + NCE_EPS))
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


def _gather_from_ranks(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Concatenate each tensor's rows over all DDP ranks (unchanged outside DDP)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    world = dist.get_world_size()
    n = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_list = [int(s.item()) for s in sizes]
    most = max(sizes_list)
    out = []
    for t in tensors:
        padded = t.new_zeros((most, *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        out.append(torch.cat([p[:s] for p, s in zip(parts, sizes_list, strict=True)]))
    return tuple(out)


class CRD(KDLoss):
    """Contrastive representation distillation with memory banks (see the module doc).

    Args:
        feat_dim: embedding size d of both linear heads and of the memory banks.
        nce_k: negatives per sample K.
        nce_t: temperature τ > 0 of the scores.
        nce_m: momentum μ ∈ [0, 1) of the memory-bank update.
        stages: one stage pair to embed: the role ``"pool"`` (the published pooled vectors),
            ``"last"``, or one stage name / ``"s:t"`` pair; spatial maps are flattened.

    Trainable: ``embed_s``, ``embed_t`` (built in ``bind``). Buffers (built in ``bind_data``,
    checkpointed): ``memory_s``, ``memory_t`` [N, d] and ``z_norm`` (the two normalisers Z,
    negative until the first batch sets them). Returns ``{"loss", "nce_s", "nce_t"}``: the
    contrast of the student embedding against the teacher bank and the reverse.
    """

    short_names = {"feat_dim": "d", "nce_k": "k", "nce_t": "t", "nce_m": "m"}

    def __init__(
        self,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        nce_m: float = 0.5,
        stages: str | Sequence[str] = "pool",
    ) -> None:
        super().__init__()
        self.feat_dim = _positive_int("feat_dim", feat_dim, 128, "the embedding size")
        self.nce_k = _positive_int("nce_k", nce_k, 16384, "the number of negatives per sample")
        self.nce_t = _number("nce_t", nce_t, lambda v: v > 0, "a finite number > 0", "0.07")
        self.nce_m = _number(
            "nce_m", nce_m, lambda v: 0 <= v < 1, "in [0, 1) (0 = replace the row)", "0.5"
        )
        if isinstance(stages, str):
            self.stages: str | tuple[str, ...] = stages
        else:
            self.stages = tuple(str(s) for s in stages)
            if len(self.stages) != 1:
                raise ValueError(
                    f"stages={list(self.stages)}: CRD embeds one feature; give one role "
                    "('pool', 'last'), one stage name or one 's:t' pair"
                )
        self.embed_s: Embed | None = None
        self.embed_t: Embed | None = None
        self.n_data = 0
        self.replacement = False
        self._labels: Tensor | None = None

    # -- set-up ----------------------------------------------------------------------------
    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Resolve the stage pair and build the two embedding heads from probed shapes."""
        if isinstance(self.stages, str):
            stages = self.stages if self.stages in ROLES else [self.stages]
        else:
            stages = list(self.stages)
        pairs = select_stages(student, teacher, stages, "CRD")
        if len(pairs) != 1:
            raise ValueError(
                f"stages={self.stages!r} gives {len(pairs)} stage pairs; CRD embeds one feature: "
                "use 'pool' (published), 'last' or one stage name"
            )
        size = int(getattr(student, "input_size", 32))
        (s, t) = pairs[0]
        s_dim = math.prod(stage_shapes(student, size)[s])
        t_dim = math.prod(stage_shapes(teacher, size)[t])
        self.stage_pairs = pairs
        self.embed_s = Embed(s_dim, self.feat_dim)
        self.embed_t = Embed(t_dim, self.feat_dim)

    def bind_data(self, labels: Tensor) -> None:
        """Create the memory banks for the training split whose labels are ``labels`` [N].

        Called again with the same labels, it keeps the banks (a later ``setup`` must not erase
        what training wrote); a checkpoint restored afterwards overwrites them.
        """
        labels = torch.as_tensor(labels).long().flatten().cpu()
        if labels.numel() < 2:
            raise ValueError(f"CRD needs a training split of at least 2 samples, got {labels}")
        if self._labels is not None and torch.equal(self._labels, labels):
            return
        counts = torch.bincount(labels)
        counts = counts[counts > 0]
        n = labels.numel()
        if counts.numel() < 2:
            raise ValueError(
                "CRD draws its negatives from other classes, but the training split has a "
                "single class: use a split with at least two classes or another method"
            )
        device = self._device()
        stdv = 1.0 / math.sqrt(self.feat_dim / 3.0)
        memory_s = torch.rand(n, self.feat_dim, device=device).mul_(2 * stdv).sub_(stdv)
        memory_t = torch.rand(n, self.feat_dim, device=device).mul_(2 * stdv).sub_(stdv)
        self.register_buffer("memory_s", memory_s)
        self.register_buffer("memory_t", memory_t)
        self.register_buffer("z_norm", torch.full((2,), -1.0, device=device))
        self.register_buffer("bank_labels", labels.to(device), persistent=False)
        self.n_data = n
        # without replacement (as published) when every class has K other-class rows
        self.replacement = self.nce_k > n - int(counts.max())
        self._labels = labels

    def _device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")

    # -- the method ------------------------------------------------------------------------
    @torch.no_grad()
    def contrast_rows(self, index: Tensor) -> Tensor:
        """``[B, 1 + K]`` training rows: each sample's own row, then K rows of other classes."""
        labels = self.bank_labels
        allowed = (labels[None, :] != labels[index][:, None]).float()
        negatives = torch.multinomial(allowed, self.nce_k, replacement=self.replacement)
        return torch.cat([index[:, None], negatives], dim=1)

    @torch.no_grad()
    def update_memory(self, index: Tensor, v_s: Tensor, v_t: Tensor) -> None:
        """Momentum update of the bank rows ``index`` with the new embeddings, re-normalised."""
        index, v_s, v_t = _gather_from_ranks(index, v_s, v_t)
        m = self.nce_m
        for bank, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            rows = bank.index_select(0, index).mul_(m).add_(v, alpha=1.0 - m)
            bank.index_copy_(0, index, rows / rows.norm(dim=1, keepdim=True))

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        if self.embed_s is None or self.embed_t is None:
            raise RuntimeError("CRD.bind(student, teacher) must be called before use")
        if self._labels is None:
            raise RuntimeError(
                "CRD has no memory bank: call loss.bind_data(train_labels) with the training "
                "split's labels first (the Distiller does this at setup from the data module's "
                "train_labels)"
            )
        if index is None:
            raise ValueError(
                "CRD needs the batch's training-split rows (index=...) to read and update its "
                "memory bank; the data module's batches carry them"
            )
        if s_feats is None or t_feats is None:
            raise ValueError(f"CRD needs student and teacher features for {self.stage_pairs}")
        s, t = self.stage_pairs[0]
        f_s, f_t = s_feats[s], t_feats[t].detach()
        index = index.to(self.memory_s.device).long().flatten()
        if index.numel() != f_s.shape[0]:
            raise ValueError(f"index has {index.numel()} rows for a batch of {f_s.shape[0]}")
        with torch.autocast(f_s.device.type, enabled=False):
            v_s = self.embed_s(f_s.float())
            v_t = self.embed_t(f_t.float())
            rows = self.contrast_rows(index)
            # P(j | v) ∝ exp(<m_j, v>/τ): all rows in one matmul, then the contrast set; the
            # matmul keeps a copy of the banks for its backward (they are updated in place)
            mem_s, mem_t = self.memory_s.clone(), self.memory_t.clone()
            p_s = torch.exp((v_s @ mem_t.t()).gather(1, rows) / self.nce_t)
            p_t = torch.exp((v_t @ mem_s.t()).gather(1, rows) / self.nce_t)
            with torch.no_grad():  # Z is set once, from the first batch, and then kept
                first = torch.stack([p_s.mean(), p_t.mean()]) * self.n_data
                self.z_norm.copy_(torch.where(self.z_norm < 0, first, self.z_norm))
                z = self.z_norm.clone()
            nce_s = nce_loss(p_s / z[0], self.n_data)
            nce_t = nce_loss(p_t / z[1], self.n_data)
            loss = nce_s + nce_t
        if self.training:
            self.update_memory(index, v_s.detach(), v_t.detach())
        return {"loss": loss, "nce_s": nce_s.detach(), "nce_t": nce_t.detach()}

    def extra_repr(self) -> str:
        return (
            f"feat_dim={self.feat_dim}, nce_k={self.nce_k}, nce_t={self.nce_t}, "
            f"nce_m={self.nce_m}, stages={self.stages!r}, n_data={self.n_data}"
        )
