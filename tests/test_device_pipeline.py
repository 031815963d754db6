"""Device-resident pipeline: coverage per epoch, exact views, seeding, DDP shards, and the same
augmentation distribution as torchvision's per-sample DataLoader path."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from kdlab.data.augment import crop_flip_views, mixup, normalize, random_crop_flip, sample_views
from kdlab.data.device import DeviceLoader

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """uint8 N×H×W×3 (HWC, like load_split) with smooth structure plus noise, never all-zero."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(60, 200, size)
    base = ramp[None, :, None, None] + ramp[None, None, :, None] * 0.3  # varies along H and W
    noise = torch.randint(-40, 40, (n, size, size, 3), generator=g)
    return (base + noise).clamp(1, 255).to(torch.uint8)


def _loader(n: int = 37, **kw) -> DeviceLoader:
    """Labels are the image ids, so every yielded ``y`` says which images a batch holds."""
    args = dict(batch_size=8, mean=MEAN, std=STD, augment=True, shuffle=True, seed=0)
    args.update(kw)
    return DeviceLoader(_images(n), torch.arange(n), **args)


def _ids(loader: DeviceLoader) -> list[int]:
    return torch.cat([b.y for b in loader]).tolist()


@pytest.mark.parametrize("n", [37, 40])
def test_every_image_once_per_epoch(n):
    loader = _loader(n)
    assert len(loader) == -(-n // 8)
    for _ in range(2):  # two epochs, two different orders, each a permutation
        ids = _ids(loader)
        assert sorted(ids) == list(range(n))
    assert len(_loader(n, drop_last=True)) == n // 8


@pytest.mark.parametrize("n", [40, 41])
def test_ddp_shards_are_disjoint_and_cover_the_epoch(n):
    shards = [_ids(_loader(n, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == -(-n // 2)  # equal lengths avoid DDP hangs
    assert set(shards[0]) | set(shards[1]) == set(range(n))
    both = shards[0] + shards[1]
    assert len(both) - len(set(both)) == (-n) % 2  # only the DistributedSampler-style padding


def test_views_match_torchvision_pad_slice_flip():
    x = _images(24).permute(0, 3, 1, 2).contiguous()
    g = torch.Generator().manual_seed(3)
    dy, dx, flip = sample_views(24, 4, g)
    out = crop_flip_views(x, dy, dx, flip, padding=4)
    padded = TF.pad(x, [4])  # torchvision's zero fill on the uint8 image
    for i in range(24):
        ref = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        ref = TF.horizontal_flip(ref) if flip[i] else ref
        assert torch.equal(out[i], ref)
    # random_crop_flip is exactly sample_views + crop_flip_views from the same generator state
    same = random_crop_flip(x, 4, torch.Generator().manual_seed(3))
    assert torch.equal(same, out)


def test_view_offsets_in_bounds_and_flips_about_half():
    n = 4000
    dy, dx, flip = sample_views(n, 4, torch.Generator().manual_seed(0))
    for d in (dy, dx):
        assert d.min() == 0 and d.max() == 8
        assert torch.bincount(d, minlength=9).min() > n / 9 * 0.75  # all 9 offsets, ~uniform
    # Binomial(4000, 0.5): sd ≈ 31.6; 5 sd
    assert abs(int(flip.sum()) - n / 2) < 5 * (n * 0.25) ** 0.5


def test_loader_batches_are_the_planned_views():
    loader = _loader(20, batch_size=20)
    plan = loader.plan(0)
    batch = next(iter(loader))
    x, y = batch.x, batch.y
    assert torch.equal(y, plan.indices)
    raw = loader.images[plan.indices]
    expected = normalize(crop_flip_views(raw, plan.dy, plan.dx, plan.flip), MEAN, STD)
    assert torch.equal(x, expected)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    again = next(iter(_loader(20, batch_size=20)))
    y_i, idx = again.y, again.index
    assert torch.equal(idx, plan.indices) and torch.equal(y_i, idx)  # labels are the ids here


def test_same_seed_same_batches_other_epoch_other_order():
    a, b = _loader(), _loader()
    batches_a, batches_b = list(a), list(b)
    assert all(
        torch.equal(xa, xb) and torch.equal(ya, yb)
        for (xa, ya), (xb, yb) in (
            ((a_.x, a_.y), (b_.x, b_.y)) for a_, b_ in zip(batches_a, batches_b, strict=True)
        )
    )
    epoch1 = _ids(a)  # no set_epoch: a plain loop advances to epoch 1 by itself
    assert epoch1 != [int(i) for b in batches_a for i in b.y]
    a.set_epoch(0)  # an explicit epoch wins: replays epoch 0 exactly
    assert all(torch.equal(b.x, br.x) for b, br in zip(a, batches_a, strict=True))
    assert _ids(_loader(seed=1)) != _ids(_loader(seed=0))


def test_lightning_sets_the_epoch_through_the_sampler_hook():
    loader = _loader()
    _set_sampler_epoch(loader, 5)  # what Lightning's fit loop calls at every epoch start
    assert _ids(loader) == loader.plan(5).indices.tolist()
    assert loader.epoch == 5


def _torchvision_sample(x_chw: torch.Tensor, draws: int, padding_mode: str) -> torch.Tensor:
    tf = v2.Compose(
        [
            v2.RandomCrop(32, padding=4, padding_mode=padding_mode),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    torch.manual_seed(0)
    return torch.stack([tf(x_chw[i % len(x_chw)]) for i in range(draws)])


def test_augmentation_distribution_matches_torchvision():
    images = _images(8)
    draws = 4000
    loader = DeviceLoader(
        images.repeat(draws // 8, 1, 1, 1),
        torch.zeros(draws),
        1000,
        MEAN,
        STD,
        augment=True,
        shuffle=False,
        seed=0,
    )
    ours = torch.cat([b.x for b in loader])
    x_chw = images.permute(0, 3, 1, 2)
    ref = _torchvision_sample(x_chw, draws, "constant")
    # per-channel moments
    for dim_stat in (lambda t: t.mean(dim=(0, 2, 3)), lambda t: t.std(dim=(0, 2, 3))):
        assert torch.allclose(dim_stat(ours), dim_stat(ref), atol=0.02)
    # per-pixel mean map: zero padding drags the borders down the same way in both
    map_ours, map_ref = ours.mean(0), ref.mean(0)
    assert (map_ours - map_ref).abs().max() < 0.15
    assert (map_ours - map_ref).abs().mean() < 0.03
    # the comparison can tell padding modes apart (guards the test's own sensitivity)
    map_reflect = _torchvision_sample(x_chw, 1000, "reflect").mean(0)
    assert (map_ours - map_reflect)[:, 0, :].abs().mean() > 0.3


def test_mixup_mixes_images_and_labels_the_same_way():
    b = 16
    x = torch.randn(b, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(b)  # one class per image, so each soft row reveals the pairing
    mixed, soft, lam = mixup(x, y, b, alpha=1.0, generator=torch.Generator().manual_seed(1))
    assert 0.0 < lam < 1.0
    assert torch.allclose(soft.sum(1), torch.ones(b))
    for i in range(b):
        partners = [j for j in soft[i].nonzero().flatten().tolist() if j != i]
        j = partners[0] if partners else i
        assert soft[i, i] == pytest.approx(lam if j != i else 1.0, abs=1e-6)
        assert torch.allclose(mixed[i], lam * x[i] + (1 - lam) * x[j], atol=1e-6)
    again = mixup(x, y, b, alpha=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again[0], mixed) and again[2] == lam
    # one λ per batch from Beta(1, 1) = Uniform(0, 1): the mean over many batches is ≈ 0.5
    g = torch.Generator().manual_seed(2)
    lams = torch.tensor([mixup(x, y, b, 1.0, g)[2] for _ in range(1000)])
    assert abs(lams.mean().item() - 0.5) < 0.05


def test_loader_with_mixup_yields_soft_targets():
    loader = DeviceLoader(
        _images(20),
        torch.arange(20) % 10,
        8,
        MEAN,
        STD,
        augment=True,
        shuffle=True,
        seed=0,
        mixup_alpha=1.0,
        num_classes=10,
    )
    batch = next(iter(loader))
    x, y = batch.x, batch.y
    assert x.shape == (8, 3, 32, 32) and y.shape == (8, 10) and y.dtype == torch.float32
    assert torch.allclose(y.sum(1), torch.ones(8))
    with pytest.raises(ValueError, match="num_classes"):
        DeviceLoader(_images(4), torch.arange(4), 2, MEAN, STD, True, True, 0, mixup_alpha=1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_loader_keeps_everything_on_the_device_with_the_cpu_order():
    cpu, gpu = _loader(), _loader(device="cuda")
    batch = next(iter(gpu))
    x, y = batch.x, batch.y
    assert x.is_cuda and y.is_cuda and x.dtype == torch.float32
    # the epoch order comes from a CPU generator, so it does not depend on the device
    assert gpu.plan(3).indices.cpu().tolist() == cpu.plan(3).indices.tolist()
    assert sorted(_ids(gpu)) == list(range(37))


def test_lightning_trains_from_it_and_passes_the_epoch():
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self, loader: DeviceLoader) -> None:
            super().__init__()
            self.net = torch.nn.Linear(3 * 32 * 32, 4)
            self.loader, self.seen = loader, []

        def training_step(self, batch, _):
            x, y = batch.x, batch.y
            self.seen.append((self.current_epoch, self.loader.epoch, x.shape[0]))
            return torch.nn.functional.cross_entropy(self.net(x.flatten(1)), y % 4)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = _loader(20)
    loader.set_epoch(7)  # stale value: Lightning must overwrite it at every epoch start
    module = Tiny(loader)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=loader)
    assert [(e, le) for e, le, _ in module.seen] == [(0, 0)] * 3 + [(1, 1)] * 3
    assert sum(b for *_, b in module.seen) == 40
