"""A strong view of each training image, batched on the device: crop + flip, RandAugment, Cutout.

Prediction-augmentation methods (MLKD) train on a weak view (the usual crop + flip) *and* a
strong view of the same image. The strong view follows the RandAugment variant the MLKD code
uses for CIFAR (FixMatch's list): its own crop and flip, then two operations drawn uniformly
with replacement from the 14 below, each with a magnitude drawn uniformly in its range, then a
Cutout square of side ``u·H/2`` (``u ~ U[0, 1)``) filled with grey (127).

As with crop + flip (``kdlab.data.augment``), choosing a view is separate from rendering it:
``sample_strong`` draws every random number of a batch from one generator, ``render_strong``
renders exactly those, so a view depends only on the generator's seed and the image's position
in the epoch plan, i.e. on (seed, epoch, index) — which keeps a resumed run exact.

Operations work on uint8 values like PIL's (rounded back to uint8 after each one); geometric
ones use one ``grid_sample`` (nearest, zero fill) per operation slot for the whole batch:

    ===========  ==============  =============================================
    op           magnitude range  effect
    ===========  ==============  =============================================
    AutoContrast  —              per-channel min/max stretched to [0, 255]
    Brightness   0.05 … 0.95     ``v·x``
    Color        0.05 … 0.95     ``g + v·(x − g)``, g the grey image
    Contrast     0.05 … 0.95     ``m + v·(x − m)``, m the mean grey level
    Equalize     —               per-channel histogram equalisation (PIL's)
    Identity     —               nothing
    Posterize    4 … 8 bits      keep the top ``int(v)`` bits
    Rotate       −30 … 30°       about the centre
    Sharpness    0.05 … 0.95     ``s + v·(x − s)``, s PIL's smoothed image
    ShearX/Y     −0.3 … 0.3      ``x' = x + v·y`` (resp. ``y' = y + v·x``)
    Solarize     0 … 256         ``x < v ? x : 255 − x``
    TranslateX/Y −0.3 … 0.3      shift by ``v·W`` (resp. ``v·H``) pixels
    ===========  ==============  =============================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.data.augment import crop_flip_views, sample_views

OPS: tuple[tuple[str, float, float], ...] = (
    ("autocontrast", 0.0, 1.0),
    ("brightness", 0.05, 0.95),
    ("color", 0.05, 0.95),
    ("contrast", 0.05, 0.95),
    ("equalize", 0.0, 1.0),
    ("identity", 0.0, 1.0),
    ("posterize", 4.0, 8.0),
    ("rotate", -30.0, 30.0),
    ("sharpness", 0.05, 0.95),
    ("shear_x", -0.3, 0.3),
    ("shear_y", -0.3, 0.3),
    ("solarize", 0.0, 256.0),
    ("translate_x", -0.3, 0.3),
    ("translate_y", -0.3, 0.3),
)
OP_INDEX = {name: i for i, (name, _, _) in enumerate(OPS)}
NUM_OPS = 2  # operations per image (RandAugment's N)
CUTOUT_MAX = 0.5  # Cutout side up to half the image side
CUTOUT_FILL = 127
_GREY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert("L")


@dataclass(frozen=True)
class StrongViews:
    """The random draws of ``n`` strong views (all tensors have ``n`` rows)."""

    dy: Tensor  # int64 crop row offsets
    dx: Tensor  # int64 crop column offsets
    flip: Tensor  # bool
    ops: Tensor  # int64 [n, NUM_OPS] indices into OPS
    level: Tensor  # float [n, NUM_OPS] in [0, 1): position in each op's magnitude range
    cut: Tensor  # float [n, 3] in [0, 1): Cutout side, centre row, centre column

    def to(self, device: torch.device | str) -> StrongViews:
        return StrongViews(
            *(t.to(device) for t in (self.dy, self.dx, self.flip, self.ops, self.level, self.cut))
        )

    def select(self, rows: slice | Tensor) -> StrongViews:
        return StrongViews(
            *(t[rows] for t in (self.dy, self.dx, self.flip, self.ops, self.level, self.cut))
        )


def sample_strong(
    n: int,
    padding: int = 4,
    generator: torch.Generator | None = None,
    device=None,
    flip: bool = True,
) -> StrongViews:
    """Draw ``n`` strong views from ``generator`` (on ``device``); no flips when ``flip`` is off."""
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    dy, dx, flip = sample_views(n, padding, generator, device, flip)
    ops = torch.randint(0, len(OPS), (n, NUM_OPS), generator=generator, device=device)
    level = torch.rand(n, NUM_OPS, generator=generator, device=device)
    cut = torch.rand(n, 3, generator=generator, device=device)
    return StrongViews(dy, dx, flip, ops, level, cut)


def render_strong(x: Tensor, views: StrongViews, padding: int = 4) -> Tensor:
    """The strong views of a uint8 ``B×3×H×W`` batch (uint8, same shape and device)."""
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"expected a uint8 B×C×H×W batch, got {x.dtype} {tuple(x.shape)}")
    out = crop_flip_views(x, views.dy, views.dx, views.flip, padding).float()
    ops = views.ops.cpu()  # one transfer per batch
    for slot in range(ops.shape[1]):
        out = _apply_slot(out, ops[:, slot], views.level[:, slot])
    return cutout(out, views.cut).to(torch.uint8)


def magnitude(op: int, level: Tensor) -> Tensor:
    _, lo, hi = OPS[op]
    return lo + (hi - lo) * level


def _apply_slot(x: Tensor, ops: Tensor, level: Tensor) -> Tensor:
    """One operation slot: each image gets its own op (a pass per op over its images).
    ``ops`` lives on the host, so choosing the rows costs no device synchronisation."""
    out = x.clone()
    for op in torch.unique(ops).tolist():
        rows = (ops == op).nonzero().squeeze(1).to(x.device)
        out[rows] = apply_op(x[rows], op, magnitude(op, level[rows]))
    return out


def apply_op(x: Tensor, op: int, v: Tensor) -> Tensor:
    """Operation ``OPS[op]`` with per-image magnitudes ``v`` [B] on float uint8-valued images."""
    name = OPS[op][0]
    if name == "identity":
        return x
    if name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
        return _affine(x, name, v)
    if name == "brightness":
        return _blend(torch.zeros_like(x), x, v)
    if name == "color":
        return _blend(_grey(x).expand_as(x), x, v)
    if name == "contrast":
        mean = _grey(x).round().mean(dim=(1, 2, 3), keepdim=True)
        return _blend(mean.expand_as(x), x, v)
    if name == "sharpness":
        return _blend(_smooth(x), x, v)
    if name == "posterize":
        drop = (8 - v.floor()).to(torch.int64).view(-1, 1, 1, 1)
        return ((x.to(torch.int64) >> drop) << drop).float()
    if name == "solarize":
        return torch.where(x < v.view(-1, 1, 1, 1), x, 255.0 - x)
    if name == "autocontrast":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        scale = 255.0 / (hi - lo).clamp_min(1.0)
        return torch.where(hi > lo, ((x - lo) * scale).round().clamp(0, 255), x)
    if name == "equalize":
        return equalize(x)
    raise ValueError(f"unknown operation {name!r}")


def _blend(degenerate: Tensor, x: Tensor, v: Tensor) -> Tensor:
    """PIL's ImageEnhance: ``degenerate + v·(x − degenerate)``, rounded and clipped."""
    return (degenerate + v.view(-1, 1, 1, 1) * (x - degenerate)).round().clamp(0, 255)


def _grey(x: Tensor) -> Tensor:
    w = torch.tensor(_GREY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _smooth(x: Tensor) -> Tensor:
    """PIL's SMOOTH filter (centre 5, neighbours 1, /13); the border keeps the original."""
    k = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    k[1, 1] = 5.0
    k = (k / 13.0).expand(x.shape[1], 1, 3, 3)
    inner = F.conv2d(x, k, groups=x.shape[1]).round()
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = inner
    return out


def equalize(x: Tensor) -> Tensor:
    """Per-channel histogram equalisation as PIL's ``ImageOps.equalize``.

    The cumulative histogram comes from sorting each channel and ``searchsorted`` (no atomic
    adds: deterministic on CUDA too).
    """
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h * w).to(torch.int64)
    ordered = flat.sort(dim=1).values
    levels = torch.arange(256, device=x.device).expand(b * c, 256).contiguous()
    below = torch.searchsorted(ordered, levels, right=False)  # pixels below each level
    upto = torch.searchsorted(ordered, levels, right=True)
    hist = upto - below
    last = ordered[:, -1:]  # the highest level used
    step = (h * w - hist.gather(1, last).squeeze(1)) // 255
    lut = ((below + (step // 2)[:, None]) // step.clamp_min(1)[:, None]).clamp(max=255)
    out = lut.gather(1, flat).float()
    keep = (step == 0)[:, None]  # a (nearly) constant channel is left as it is
    return torch.where(keep, flat.float(), out).reshape(b, c, h, w)


def _affine(x: Tensor, name: str, v: Tensor) -> Tensor:
    """Rotate / shear / translate about the image centre (nearest, zero fill)."""
    b, _, h, w = x.shape
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if name == "rotate":  # output pixel p samples the input at R(−angle)·p
        a = v * (math.pi / 180.0)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), -torch.sin(a)
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a), torch.cos(a)
    elif name == "shear_x":  # input x = x' + v·y' (normalised coordinates, square images)
        theta[:, 0, 1] = v * (h / w)
    elif name == "shear_y":
        theta[:, 1, 0] = v * (w / h)
    elif name == "translate_x":  # a shift of v·W pixels is 2·v in normalised units
        theta[:, 0, 2] = -2.0 * v
    elif name == "translate_y":
        theta[:, 1, 2] = -2.0 * v
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def cutout(x: Tensor, cut: Tensor) -> Tensor:
    """Grey squares of side ``cut[:, 0]·CUTOUT_MAX·H`` centred at ``cut[:, 1:]·(H, W)``."""
    b, _, h, w = x.shape
    side = (cut[:, 0] * CUTOUT_MAX * h).floor()
    cy, cx = (cut[:, 1] * h).floor(), (cut[:, 2] * w).floor()
    y0, x0 = (cy - side / 2).floor().clamp_min(0), (cx - side / 2).floor().clamp_min(0)
    y1, x1 = (y0 + side).clamp(max=h), (x0 + side).clamp(max=w)
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    inside = (
        (rows >= y0.view(-1, 1, 1))
        & (rows < y1.view(-1, 1, 1))
        & (cols >= x0.view(-1, 1, 1))
        & (cols < x1.view(-1, 1, 1))
    )
    return torch.where(inside[:, None], torch.full_like(x, CUTOUT_FILL), x)
