"""View cache: exact logits of every crop/flip view, equal losses, keyed by the teacher file."""

from __future__ import annotations

import copy
import logging
from functools import partial

import pytest
import torch

from kdlab.data.augment import crop_flip_views, normalize
from kdlab.data.cifar import CIFARDataModule
from kdlab.data.synthetic import write_fake_cifar
from kdlab.distill.dist import DIST
from kdlab.distill.dkd import DKD
from kdlab.distill.feature import FeatureKD
from kdlab.distill.logit import LogitKD
from kdlab.models.cnn import small_cnn
from kdlab.models.export import sha256_file
from kdlab.systems import Distiller
from kdlab.teachers import FrozenTeacher
from kdlab.teachers import cache as vc


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vc")
    write_fake_cifar(root, "cifar10", n_train=30, n_test=10, seed=0)
    return root


def _dm(root, **kw) -> CIFARDataModule:
    kw = {"pipeline": "device", "batch_size": 8, **kw}
    dm = CIFARDataModule("cifar10", str(root), download=False, val_size=10, num_workers=0, **kw)
    dm.setup()
    return dm  # 20 training images


def _teacher(path, seed: int = 1) -> FrozenTeacher:
    torch.manual_seed(seed)
    net = small_cnn(num_classes=10, hidden=32)
    torch.save(net.state_dict(), path)
    return FrozenTeacher(net, [{"path": str(path), "sha256": sha256_file(path), "seed": 0}])


def test_view_ids_round_trip_and_match_device_loader(data_root):
    v = torch.arange(vc.num_views(4))
    assert vc.num_views(4) == 162
    torch.testing.assert_close(vc.view_id(*vc.view_params(v)), v)
    dm = _dm(data_root)
    loader = dm.loader("train", train=True)
    plan = loader.plan(0)
    batch = next(iter(loader))
    x, idx, view = batch.x, batch.index, batch.view
    dy, dx, flip = vc.view_params(view)
    assert torch.equal(idx, plan.indices[:8])
    assert torch.equal(dy, plan.dy[:8]) and torch.equal(dx, plan.dx[:8])
    assert torch.equal(flip, plan.flip[:8])
    raw = loader.images[idx]  # the batch is exactly these views rendered
    torch.testing.assert_close(x, normalize(crop_flip_views(raw, dy, dx, flip, 4), dm.mean, dm.std))


def test_cached_logits_equal_online_teacher(data_root, tmp_path):
    dm, teacher = _dm(data_root), _teacher(tmp_path / "t.ckpt")
    cache = vc.build_view_cache(teacher, dm.train_split(), progress=False)
    assert cache.views.shape == (20, 162, 10) and cache.views.dtype == torch.float16
    assert cache.path.parent == tmp_path and cache.path.is_file()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 20, (40,), generator=g)
    view = torch.randint(0, 162, (40,), generator=g)
    images = torch.from_numpy(dm.splits["train"][0]).permute(0, 3, 1, 2)[idx]
    x = normalize(crop_flip_views(images, *vc.view_params(view), 4), dm.mean, dm.std)
    with torch.no_grad():
        online = teacher(x)
    torch.testing.assert_close(cache.lookup(idx, view), online, atol=2e-3, rtol=1e-3)
    assert not torch.equal(cache.lookup(idx, view), cache.lookup(idx, (view + 1) % 162))
    # .logits (train-set fidelity) is the plain image: the centre crop without flip
    plain = normalize(torch.from_numpy(dm.splits["train"][0]).permute(0, 3, 1, 2), dm.mean, dm.std)
    with torch.no_grad():
        torch.testing.assert_close(cache.logits, teacher(plain), atol=2e-3, rtol=1e-3)


LOGIT_ONLY = {
    "kd": lambda: LogitKD(0.5, 4.0),
    "dkd": lambda: DKD(),
    "dist": lambda: DIST(),
}


@pytest.mark.parametrize("method", sorted(LOGIT_ONLY))
def test_logit_only_method_reads_the_view_cache_with_the_online_loss(
    data_root, tmp_path, caplog, method
):
    """Every loss that reads only the teacher's logits takes them from the cache on the device
    pipeline, and its loss equals the online teacher's on the same views."""
    dm, teacher = _dm(data_root), _teacher(tmp_path / "t.ckpt")
    torch.manual_seed(5)
    opt = partial(torch.optim.SGD, lr=0.1)
    online = Distiller(small_cnn(num_classes=10, hidden=32), teacher, LOGIT_ONLY[method](), opt)
    cached = copy.deepcopy(online)
    with caplog.at_level(logging.INFO, logger="kdlab.teachers.cache"):
        vc.attach(cached.teacher, cached.criterion, dm, logits=False, views=True, device="cpu")
    assert "teacher logits: from the view cache" in caplog.text
    assert cached.teacher.cache is not None and online.teacher.cache is None
    b = next(iter(dm.loader("train", train=True)))
    _, t_on = online.compute_losses(b.x, b.y, b.index, b.view)
    runs = []
    cached.teacher.register_forward_pre_hook(lambda module, args: runs.append(1))
    _, t_c = cached.compute_losses(b.x, b.y, b.index, b.view)
    assert runs == []  # the teacher never ran for the cached batch
    assert t_c["loss"] > 0
    torch.testing.assert_close(t_c["loss"], t_on["loss"], atol=1e-3, rtol=1e-3)


def test_view_cache_without_flips_holds_only_unflipped_views(data_root, tmp_path):
    dm = _dm(data_root, augment={"crop_padding": 2, "flip": False})
    teacher = _teacher(tmp_path / "t.ckpt")
    table = vc.build_view_cache(teacher, dm.train_split(), progress=False)
    assert table.views.shape == (20, 25, 10)  # 5 × 5 crops, no mirror images
    flipped = vc.build_view_cache(
        teacher, _dm(data_root, augment={"crop_padding": 2}).train_split(), progress=False
    )
    assert flipped.path != table.path and flipped.views.shape == (20, 50, 10)
    b = next(iter(dm.loader("train", train=True)))
    assert not vc.view_params(b.view)[2].any()
    images = torch.from_numpy(dm.train_split().images).permute(0, 3, 1, 2)[b.index]
    x = normalize(crop_flip_views(images, *vc.view_params(b.view, 2), 2), dm.mean, dm.std)
    with torch.no_grad():
        torch.testing.assert_close(table.lookup(b.index, b.view), teacher(x), atol=2e-3, rtol=1e-3)


def test_changed_teacher_file_gets_new_cache(data_root, tmp_path, monkeypatch):
    dm = _dm(data_root)
    first = vc.build_view_cache(
        _teacher(tmp_path / "t.ckpt", seed=1), dm.train_split(), progress=False
    )
    # same file again: reused from disk, not recomputed
    monkeypatch.setattr(vc, "compute_view_logits", lambda *a, **k: pytest.fail("recomputed"))
    again = vc.build_view_cache(
        _teacher(tmp_path / "t.ckpt", seed=1), dm.train_split(), progress=False
    )
    assert again.path == first.path and torch.equal(again.views, first.views)
    monkeypatch.undo()
    retrained = _teacher(tmp_path / "t.ckpt", seed=2)  # same path, different weights
    second = vc.build_view_cache(retrained, dm.train_split(), progress=False)
    assert second.path != first.path and second.path.is_file()
    assert not torch.equal(second.views, first.views)
    dm_pad = vc.cache_key([retrained.sources[0]["sha256"]], dm.train_split(), 2)
    assert dm_pad not in second.path.name  # padding is part of the key


@pytest.mark.parametrize(
    "setting",
    [{"pipeline": "dataloader"}, {"mixup_alpha": 1.0}, {"augment": False}, "feature"],
)
def test_falls_back_to_online_teacher_with_log(data_root, tmp_path, caplog, setting):
    teacher = _teacher(tmp_path / "t.ckpt")
    dm = _dm(data_root, **(setting if isinstance(setting, dict) else {}))
    loss = FeatureKD(0.5, 0.5, ["layer1"]) if setting == "feature" else LogitKD(0.5, 4.0)
    opt = partial(torch.optim.SGD, lr=0.1)
    system = Distiller(small_cnn(num_classes=10, hidden=32), teacher, loss, opt, view_cache=True)
    with caplog.at_level(logging.WARNING, logger="kdlab.teachers.cache"):
        vc.attach(system.teacher, loss, dm, logits=False, views=True, device="cpu")
    assert "teacher logits from the online teacher" in caplog.text
    assert system.teacher.cache is None
    assert not list(tmp_path.glob("viewcache-*"))
