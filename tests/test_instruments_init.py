"""Initialisation proximity, shared initial weights (init_seed), MixUp and the cache's refusal."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from kdlab.data.batch import Batch
from kdlab.data.cifar import CIFARDataModule
from kdlab.distill.logit import LogitKD
from kdlab.models.cnn import small_cnn
from kdlab.models.init import interpolate_init, lr_scale, seeded_build, validate_lambda
from kdlab.models.preresnet import preresnet20
from kdlab.teachers.cache import check_cacheable


def _trained_like(seed: int):
    """A PreResNet-20 with non-trivial BN statistics (as a trained teacher has)."""
    torch.manual_seed(seed)
    net = preresnet20(num_classes=10)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 3, 32, 32) * 2 + 1)
    return net.eval()


def test_lambda_one_reproduces_teacher_weights_and_predictions():
    teacher = _trained_like(1)
    student = preresnet20(num_classes=10)
    interpolate_init(student, teacher, 1.0)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for k, v in t_state.items():
        if v.is_floating_point():  # parameters and BN running stats
            assert torch.equal(s_state[k], v), k
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(student.eval()(x), teacher(x))


def test_lambda_zero_is_the_random_init_and_bn_counter_kept():
    teacher = _trained_like(1)
    torch.manual_seed(5)
    student = preresnet20(num_classes=10)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    interpolate_init(student, teacher, 0.0)
    for k, v in student.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_lambda_half_interpolates_params_and_running_stats():
    teacher, student = _trained_like(1), preresnet20(num_classes=10)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    interpolate_init(student, teacher, 0.5)
    t = teacher.state_dict()
    for k, v in student.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.5 * t[k] + 0.5 * before[k], atol=1e-6), k
        else:  # num_batches_tracked: the student's own counter
            assert torch.equal(v, before[k]) and not torch.equal(v, t[k]), k


def test_interpolate_rejects_other_architecture_and_lambda_range():
    with pytest.raises(ValueError, match="same architecture"):
        interpolate_init(small_cnn(10), preresnet20(10), 0.5)
    with pytest.raises(ValueError, match="outside"):
        validate_lambda(1.5)
    with pytest.raises(ValueError, match="lambda=1"):
        validate_lambda(1.0)  # lr would be scaled to 0
    assert lr_scale(0.9) == pytest.approx(0.1) and lr_scale(None) == 1.0


def test_init_seed_fixes_weights_independently_of_data_seed():
    def build(data_seed: int, init_seed: int):
        torch.manual_seed(data_seed)  # what seed_everything(seed) does before the build
        net = seeded_build(lambda: small_cnn(10), init_seed)
        return net, torch.rand(1)  # the data-order stream after the build

    a, ra = build(0, 7)
    b, rb = build(1, 7)
    c, _ = build(0, 8)
    _, r_plain = build(0, 9)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.fc2.weight, c.fc2.weight)
    assert not torch.equal(ra, rb)  # the run seed still drives everything after the build
    assert torch.equal(ra, r_plain)  # and the build does not shift that stream


def _dm(tiny_root, **kw):
    dm = CIFARDataModule(root=str(tiny_root), val_size=50, batch_size=10, num_workers=0, **kw)
    dm.setup()
    return dm


def test_mixup_mixes_images_and_labels_consistently(tiny_cifar10):
    dm = _dm(tiny_cifar10, mixup_alpha=1.0)
    dm.trainer = types.SimpleNamespace(training=True, current_epoch=0, global_rank=0, world_size=1)
    x = torch.randn(10, 3, 32, 32)
    y = torch.arange(10)  # distinct labels: each soft row names its two sources
    torch.manual_seed(3)
    mixed = dm.on_after_batch_transfer(Batch(x, y), 0)
    xm, ym = mixed.x, mixed.y
    assert torch.allclose(ym.sum(-1), torch.ones(10))
    for i in range(10):
        lam = ym[i, i].item()
        partner = [j for j in range(10) if j != i and ym[i, j] > 0] or [i]
        expected = lam * x[i] + (1 - lam) * x[partner[0]] if partner[0] != i else x[i]
        assert torch.allclose(xm[i], expected, atol=1e-5)
    # the CE term consumes the mixed targets: λ·CE(y_a) + (1−λ)·CE(y_b)
    logits = torch.randn(10, 10)
    terms = LogitKD(alpha=0.0, temperature=4.0)(logits, logits, ym)
    hard = -(ym * F.log_softmax(logits, -1)).sum(-1).mean()
    assert torch.allclose(terms["ce"], hard, atol=1e-6)
    dm.trainer = types.SimpleNamespace(training=False)  # evaluation batches are never mixed
    assert dm.on_after_batch_transfer(Batch(x, y), 0).x is x


def test_logit_cache_refused_with_augmentation_or_mixup(tiny_cifar10):
    with pytest.raises(ValueError, match="data.augment on"):
        check_cacheable(_dm(tiny_cifar10, augment=True).train_split())
    with pytest.raises(ValueError, match="data.augment on"):  # a flip alone is augmentation
        check_cacheable(_dm(tiny_cifar10, augment={"crop_padding": 0, "flip": True}).train_split())
    with pytest.raises(ValueError, match="MixUp"):
        check_cacheable(_dm(tiny_cifar10, augment=False, mixup_alpha=1.0).train_split())
    check_cacheable(_dm(tiny_cifar10, augment=False).train_split())  # allowed
