"""The strong view (``data.strong_view``): RandAugment-style operations as PIL computes them,
a view fixed by (seed, epoch, index) on the device pipeline whatever the batch around it, the
same after a resume, a second view on the dataloader pipeline, and the option following the
loss that reads it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageEnhance, ImageOps

from kdlab.data.device import DeviceLoader
from kdlab.data.strong import OP_INDEX, apply_op, cutout, render_strong, sample_strong
from tests.helpers_sweep import REPO, make_world, results, run_train, tiny

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _images(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _loader(images, seed=0, batch=8, strong=True) -> DeviceLoader:
    labels = np.arange(len(images)) % 10
    return DeviceLoader(
        images, labels, batch, MEAN, STD, augment=True, shuffle=True, seed=seed, strong_view=strong
    )


def _by_index(loader: DeviceLoader) -> dict[int, torch.Tensor]:
    return {int(i): x for b in loader for i, x in zip(b.index, b.x_strong, strict=True)}


@pytest.mark.parametrize(
    ("name", "pil", "v"),
    [
        ("equalize", ImageOps.equalize, 0.0),
        ("posterize", lambda im: ImageOps.posterize(im, 5), 5.5),
        ("solarize", lambda im: ImageOps.solarize(im, 100), 100.0),
        ("autocontrast", ImageOps.autocontrast, 0.0),
        ("brightness", lambda im: ImageEnhance.Brightness(im).enhance(0.3), 0.3),
        ("color", lambda im: ImageEnhance.Color(im).enhance(0.3), 0.3),
        ("contrast", lambda im: ImageEnhance.Contrast(im).enhance(0.3), 0.3),
        ("sharpness", lambda im: ImageEnhance.Sharpness(im).enhance(0.3), 0.3),
    ],
)
def test_colour_operations_match_pil_to_one_grey_level(name, pil, v):
    a = (_images(1)[0] // 2 + 40).astype(np.uint8)  # not using the full range: autocontrast acts
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float()
    ours = apply_op(x, OP_INDEX[name], torch.tensor([v]))[0].permute(1, 2, 0).numpy()
    theirs = np.asarray(pil(Image.fromarray(a))).astype(np.float32)
    assert np.abs(ours - theirs).max() <= 1.0
    if name in ("equalize", "posterize", "solarize"):
        assert np.array_equal(ours, theirs)


def test_geometry_and_cutout_move_pixels_as_stated():
    x = torch.zeros(1, 3, 32, 32)
    x[..., 10, 12] = 200.0
    moved = apply_op(x, OP_INDEX["translate_x"], torch.tensor([0.125]))  # 4 pixels
    assert moved[0, 0].nonzero().tolist() == [[10, 16]]
    assert torch.equal(apply_op(x, OP_INDEX["rotate"], torch.tensor([0.0])), x)
    cut = cutout(torch.full((1, 3, 32, 32), 9.0), torch.tensor([[1.0, 0.5, 0.5]]))
    assert (cut == 127).sum().item() == 3 * 16 * 16  # side ½·32, centred, grey


def test_the_strong_view_of_an_image_depends_on_seed_epoch_and_index_only():
    images = _images()
    a, b = _loader(images, batch=8), _loader(images, batch=5)  # other batch compositions
    a.set_epoch(3)
    b.set_epoch(3)
    va, vb = _by_index(a), _by_index(b)
    assert va.keys() == vb.keys() == set(range(len(images)))
    assert all(torch.equal(va[i], vb[i]) for i in va)
    other = _loader(images)
    other.set_epoch(4)
    assert not all(torch.equal(va[i], v) for i, v in _by_index(other).items())
    reseeded = _loader(images, seed=1)
    reseeded.set_epoch(3)
    assert not all(torch.equal(va[i], v) for i, v in _by_index(reseeded).items())
    # what a batch holds is the planned view rendered alone
    plan = a.plan(3)
    pos = 7
    idx = int(plan.indices[pos])
    alone = render_strong(a.images[idx : idx + 1], plan.strong.select(slice(pos, pos + 1)))
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose((alone[0].float() / 255 - mean) / std, va[idx], atol=1e-6)


def test_a_resumed_loader_draws_the_same_strong_views():
    images = _images()
    straight = _loader(images)
    passes = [[b.x_strong for b in straight] for _ in range(3)]  # epochs 0, 1, 2
    resumed = _loader(images)
    resumed.set_epoch(2)  # what Lightning does after restoring at epoch 2
    again = [b.x_strong for b in resumed]
    assert all(torch.equal(p, q) for p, q in zip(passes[2], again, strict=True))
    assert not torch.equal(passes[1][0], again[0])


def test_strong_views_differ_from_the_weak_ones_and_only_train_batches_carry_them():
    images = _images()
    batch = next(iter(_loader(images)))
    assert batch.x_strong.shape == batch.x.shape and not torch.equal(batch.x_strong, batch.x)
    assert next(iter(_loader(images, strong=False))).x_strong is None
    with pytest.raises(ValueError, match="augment"):
        DeviceLoader(
            images,
            np.zeros(40),
            8,
            MEAN,
            STD,
            augment=False,
            shuffle=False,
            seed=0,
            strong_view=True,
        )
    views = sample_strong(1000, generator=torch.Generator().manual_seed(0))
    assert set(views.ops.unique().tolist()) == set(range(len(OP_INDEX)))  # every op drawn


def test_dataloader_pipeline_yields_a_second_view(tmp_path):
    from kdlab.data.cifar import CIFARDataModule
    from kdlab.data.synthetic import write_fake_cifar

    write_fake_cifar(tmp_path, "cifar10", n_train=40, n_test=10)
    dm = CIFARDataModule(
        root=str(tmp_path),
        val_size=8,
        batch_size=4,
        num_workers=0,
        pipeline="dataloader",
        strong_view=True,
        verify="structure",
    )
    batch = next(iter(dm.loader("train", train=True)))
    assert batch.x_strong.shape == (4, 3, 32, 32) and batch.x_strong.dtype == torch.float32
    assert next(iter(dm.loader("val"))).x_strong is None
    with pytest.raises(ValueError, match="MixUp"):
        CIFARDataModule(root=str(tmp_path), strong_view=True, mixup_alpha=1.0)


def test_the_option_follows_the_loss_that_reads_a_strong_view():
    from kdlab.utils.resolvers import strong_view

    def distill(name: str):
        root = OmegaConf.create({"label_smoothing": 0.0, "alpha": 0.5, "temperature": 4})
        root.distill = OmegaConf.load(REPO / "conf" / "distill" / f"{name}.yaml")
        return root.distill

    assert strong_view(distill("mlkd")) is True
    assert strong_view(distill("dkd")) is False and strong_view(distill("logit")) is False
    assert strong_view(None) is False


@pytest.mark.slow
def test_an_interrupted_mlkd_run_on_the_device_pipeline_resumes_exactly(tmp_path):
    world = make_world(tmp_path)
    args = [
        "+experiment=r56_cnn_logit",
        "teacher=cnn",
        "distill=mlkd",
        "method=mlkd",
        "data.pipeline=device",
        "data.augment=true",
        "teacher_cache=false",
        "name=strong",
        *tiny(world, epochs=2),
    ]
    full, part = tmp_path / "full", tmp_path / "part"
    run_train(tmp_path, *args, f"hydra.run.dir={full}")
    stop = "+callbacks.stopper._target_=helpers_resume.StopAfterEpochs"
    run_train(tmp_path, *args, stop, f"hydra.run.dir={part}")  # the stopper acts once
    run_train(tmp_path, *args, stop, f"hydra.run.dir={part}")  # same config: resumes
    a, b = results(full), results(part)
    assert a["recipe"]["strong_augmentation"] is True
    keys = ["val_acc_best", "test_acc_best", "test_acc_final", "test_nll", "test_kl"]
    assert {k: b[k] for k in keys} == {k: a[k] for k in keys}
    metrics = (full / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss_mlkd_ce_strong_epoch" in metrics.split(",")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_strong_views_render_like_the_cpu_under_deterministic_algorithms():
    """Every operation runs with deterministic algorithms on CUDA and renders the views the
    CPU renders from the same draws (the draws themselves come from a CUDA generator)."""
    images = torch.from_numpy(_images(64)).permute(0, 3, 1, 2).contiguous()
    views = sample_strong(64, generator=torch.Generator("cuda").manual_seed(0), device="cuda")
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        on_gpu = render_strong(images.cuda(), views).cpu()
        again = render_strong(images.cuda(), views).cpu()
    finally:
        torch.use_deterministic_algorithms(was)
    on_cpu = render_strong(images, views.to("cpu"))
    assert torch.equal(on_gpu, again)
    # float rounding: blends may differ by one level, a nearest-neighbour sample that falls on a
    # pixel boundary by a pixel
    assert ((on_gpu.int() - on_cpu.int()).abs() > 1).float().mean() < 1e-3
