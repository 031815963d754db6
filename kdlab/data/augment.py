"""Batched, on-device augmentation: random crop with zero padding, flip, normalise, MixUp.

torchvision's per-sample transforms run one image at a time in Python on the CPU, which is what
makes CIFAR KD runs data-bound. Here a whole uint8 batch is augmented with a handful of tensor
ops on whatever device it already lives on (pad once, one ``gather`` with a per-image index
grid), with no Python loop over images.

The augmentation is split in two on purpose: ``sample_views`` draws the random view parameters
``(dy, dx, flip)`` and ``crop_flip_views`` renders exactly those views. A teacher-logit cache can
therefore enumerate all 9 × 9 × 2 = 162 views of an image and render any one of them
bit-identically to what the training pipeline produced.

Conventions match torchvision's ``RandomCrop(32, padding=4)`` (fill 0 on the uint8 image,
i.e. *before* normalisation) and ``RandomHorizontalFlip(p=0.5)``: a view ``(dy, dx, flip)``
is ``pad(x)[..., dy:dy+H, dx:dx+W]``, mirrored along the width when ``flip`` is true.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def sample_views(
    n: int,
    padding: int = 4,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    flip: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``n`` random views: crop offsets uniform in ``[0, 2·padding]`` and a fair flip
    (never a flip when ``flip`` is false).

    The draws come from ``generator`` (which must live on ``device``; a CUDA generator for CUDA)
    so the same seed gives the same views; the flip coin is drawn either way, so turning flips
    off leaves the crops of a seed as they were. Returns ``(dy, dx, flip)``: int64, int64, bool,
    each of shape ``[n]``.
    """
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    flips = torch.randint(0, 2, (n,), generator=generator, device=device).bool()
    return dy, dx, flips if flip else torch.zeros_like(flips)


def crop_flip_views(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, padding: int = 4) -> Tensor:
    """Render the given views of a ``B×C×H×W`` batch (any dtype; uint8 for the pipeline).

    Image ``b`` becomes ``zero_pad(x[b])[:, dy[b]:dy[b]+H, dx[b]:dx[b]+W]``, mirrored along the
    width if ``flip[b]``. One pad and one ``gather`` over the flattened padded image: a flip is
    just a reversed column index, so crop and flip cost the same single pass.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a B×C×H×W batch, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if not (dy.shape == dx.shape == flip.shape == (b,)):
        raise ValueError(f"dy, dx, flip must each have shape [{b}] for a batch of {b}")
    dev = x.device
    dy, dx, flip = dy.to(dev), dx.to(dev), flip.to(dev)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    wp = w + 2 * padding
    rows = dy[:, None] + torch.arange(h, device=dev)  # [B, H]
    col = torch.arange(w, device=dev)
    cols = dx[:, None] + torch.where(flip[:, None], (w - 1) - col, col)  # [B, W]
    flat_idx = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w)
    out = padded.reshape(b, c, -1).gather(2, flat_idx.expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def random_crop_flip(
    x: Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> Tensor:
    """Zero-padded random crop plus horizontal flip (p = 0.5) of a ``B×C×H×W`` batch.

    Equivalent in distribution to torchvision's ``RandomCrop(H, padding)`` followed by
    ``RandomHorizontalFlip()`` applied per image; the batch stays on its device.
    """
    dy, dx, flip = sample_views(x.shape[0], padding, generator, x.device)
    return crop_flip_views(x, dy, dx, flip, padding)


def _channel_tensor(values: Sequence[float] | Tensor, device: torch.device) -> Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)


def normalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """uint8 ``B×C×H×W`` → float32 ``(x/255 − mean) / std``, per channel, on ``x``'s device.

    Same values (to float rounding) as ``ToDtype(float32, scale=True)`` + ``Normalize``; written
    as one multiply-add so it is a single pass over the batch.
    """
    m = _channel_tensor(mean, x.device)
    s = _channel_tensor(std, x.device)
    return x.float().mul_(1.0 / (255.0 * s)).sub_(m / s)


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (NumPy's SeedSequence hashing).

    Plain ``seed + epoch`` would make (seed 0, epoch 1) and (seed 1, epoch 0) identical.
    """
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


MIXUP_STREAM = 2  # keeps MixUp's draws apart from the shuffle (0) and view (1) streams


class SeededMixUp:
    """MixUp of whole batches whose draws depend only on ``(seed, epoch, rank)`` and batch order.

    Both pipelines mix through this one object, so a run and its resumed twin (which restarts
    at an epoch boundary) draw the same λ and pairings, whatever the global RNG did meanwhile.
    """

    def __init__(self, alpha: float, num_classes: int, seed: int, rank: int = 0) -> None:
        if alpha <= 0:
            raise ValueError(f"mixup alpha must be > 0, got {alpha}")
        self.alpha, self.num_classes, self.seed, self.rank = alpha, num_classes, seed, rank
        self.epoch: int | None = None
        self._gen = torch.Generator()

    def start(self, epoch: int) -> None:
        """Reset the stream for ``epoch`` (called once per pass, before its first batch)."""
        self.epoch = int(epoch)
        self._gen.manual_seed(derive_seed(self.seed, MIXUP_STREAM, self.epoch, self.rank))

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.epoch is None:
            self.start(0)
        mixed, soft, _ = mixup(x, y, self.num_classes, self.alpha, self._gen)
        return mixed, soft


def mixup(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    alpha: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, float]:
    """MixUp (Zhang et al. 2018) with one λ ~ Beta(α, α) per batch and a random pairing.

    Returns ``(λ·x + (1−λ)·x[perm], λ·onehot(y) + (1−λ)·onehot(y[perm]), λ)``. Mixing the
    normalised images equals mixing the raw ones (normalisation is affine and the weights sum to
    one). λ is drawn with NumPy's Beta sampler seeded from ``generator`` (torch's Beta sampler
    takes no generator), so a seeded generator makes MixUp reproducible too; pass a CPU
    generator to avoid a device sync per batch.
    """
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    gdev = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gdev).item())
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=generator, device=gdev).to(x.device)
    mixed = x.mul(lam).add_(x[perm], alpha=1.0 - lam)
    onehot = F.one_hot(y, num_classes).to(x.dtype if x.is_floating_point() else torch.float32)
    soft = onehot.mul(lam).add_(onehot[perm], alpha=1.0 - lam)
    return mixed, soft, lam
