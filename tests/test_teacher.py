"""Teacher loading is strict, errors are actionable, teachers stay frozen; ensembles."""

from __future__ import annotations

import pytest
import torch

from kdlab.models.export import export_weights, load_exported
from kdlab.models.resnet import resnet18, resnet34
from kdlab.teachers import (
    EnsembleTeacher,
    FrozenTeacher,
    build_teacher,
    ensemble_logits,
    store_path,
)

R18 = {"_target_": "kdlab.models.resnet.resnet18", "num_classes": 10}


def _store(tmp_path, seed=0, net=None, **meta):
    net = net or resnet18(10)
    path = store_path(tmp_path, "cifar10", "r18", seed)
    export_weights(net, path, R18, dataset="cifar10", seed=seed, **meta)
    return net, path


def build(tmp_path, **kw):
    kw = {
        "model": lambda: resnet18(10),
        "arch": "r18",
        "dataset": "cifar10",
        "num_classes": 10,
        "store": str(tmp_path),
    } | kw
    return build_teacher(**kw)


def test_store_teacher_loads_exactly_and_is_frozen(tmp_path):
    net, path = _store(tmp_path)
    teacher = build(tmp_path)
    assert isinstance(teacher, FrozenTeacher)
    for (k, v), v2 in zip(net.state_dict().items(), teacher.net.state_dict().values(), strict=True):
        assert torch.equal(v, v2), k
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # what Lightning does to the whole system every epoch
    assert not teacher.training and not teacher.net.training
    assert teacher.sources[0]["path"] == str(path) and len(teacher.sources[0]["sha256"]) == 64


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("missing", "file not found"),
        ("garbage", "unreadable"),
        ("arch", "trained as 'r34'"),
        ("classes", "has 100 classes"),
        ("keys", "does not match the 'r18' architecture"),
        ("dataset", "trained on cifar100"),
    ],
)
def test_bad_teacher_checkpoints_name_path_and_command(tmp_path, setup, match):
    path = store_path(tmp_path, "cifar10", "r18", 0)
    path.parent.mkdir(parents=True)
    if setup == "garbage":
        path.write_bytes(b"\x00garbage")
    elif setup == "arch":
        export_weights(resnet34(10), path, {}, dataset="cifar10")
    elif setup == "classes":
        export_weights(resnet18(100), path, {}, dataset="cifar10")
    elif setup == "keys":
        sd = resnet18(10).state_dict()
        sd.pop("layer4.1.bn2.weight")
        torch.save(sd, path)
    elif setup == "dataset":
        export_weights(resnet18(10), path, {}, dataset="cifar100")
    with pytest.raises(ValueError, match=match) as err:
        build(tmp_path)
    assert str(path) in str(err.value)
    assert "python -m kdlab.train +experiment=teacher_r18 data=cifar10 seed=0" in str(err.value)


def test_lightning_checkpoint_and_plain_state_dict_are_accepted(tmp_path):
    net = resnet18(10)
    ckpt = tmp_path / "lightning.ckpt"
    torch.save(
        {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, ckpt
    )
    plain = tmp_path / "plain.pt"
    torch.save(net.state_dict(), plain)
    x = torch.randn(2, 3, 32, 32)
    ref = net.eval()(x)
    for path in (ckpt, plain):
        t = build(tmp_path, ckpt=str(path))
        assert torch.allclose(t(x), ref)


def test_ensemble_of_store_seeds_is_log_mean_softmax_and_frozen(tmp_path):
    nets = [_store(tmp_path, seed=s, net=resnet18(10))[0].eval() for s in (0, 1, 2)]
    teacher = build(tmp_path, seeds=[0, 1, 2])
    assert isinstance(teacher, EnsembleTeacher) and teacher.label == "ens3_r18"
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = torch.stack([n(x) for n in nets]).softmax(-1).mean(0).log()
        assert torch.allclose(teacher(x), expected, atol=1e-5)
        assert torch.allclose(teacher(x), ensemble_logits(torch.stack([n(x) for n in nets])))
    teacher.train()
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert [s["seed"] for s in teacher.sources] == [0, 1, 2]


def test_exported_weights_rebuild_from_their_own_config(tmp_path):
    net, path = _store(tmp_path, val_acc_best=50.0)
    again = load_exported(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(again(x), net.eval()(x))


def test_published_benchmark_teachers_load_strictly_and_wrong_ones_say_what_differs(tmp_path):
    """A released teacher (weights under "model", the published parameter names) loads with
    teacher.ckpt=; a file of another architecture names the file and its first mismatches."""
    from kdlab.models.resnet import resnet50
    from kdlab.models.zoo.published import to_published_state
    from kdlab.models.zoo.resnet import resnet8, resnet8x4, resnet32x4

    torch.manual_seed(0)
    net = resnet32x4(100).eval()
    good = tmp_path / "resnet32x4_vanilla" / "ckpt_epoch_240.pth"
    good.parent.mkdir()
    torch.save({"epoch": 240, "model": net.state_dict(), "accuracy": 79.4}, good)
    kw = {"arch": "resnet32x4", "dataset": "cifar100", "num_classes": 100, "store": str(tmp_path)}
    teacher = build_teacher(model=lambda: resnet32x4(100), ckpt=str(good), **kw)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(teacher(x), net(x))
    # the benchmark's ResNet50 is kdlab's r50 under other names (shortcut → downsample, linear → fc)
    r50 = resnet50(100).eval()
    published = tmp_path / "ResNet50.pth"
    torch.save({"model": to_published_state("r50", r50.state_dict())}, published)
    kw50 = kw | {"arch": "r50"}
    assert torch.allclose(
        build_teacher(model=lambda: resnet50(100), ckpt=str(published), **kw50)(x),
        r50(x),
        atol=1e-6,
    )
    with pytest.raises(ValueError) as err:  # deeper: keys the smaller network does not have
        build_teacher(model=lambda: resnet8x4(100), ckpt=str(good), **kw | {"arch": "resnet8x4"})
    message = str(err.value)
    assert str(good) in message and "does not match the 'resnet8x4' architecture" in message
    assert "144 unexpected: layer1.1.conv1.weight" in message
    assert "python -m kdlab.train +experiment=teacher model=resnet8x4 data=cifar100" in message
    narrow = tmp_path / "resnet8x4.pth"  # same names, 4× the widths of resnet8
    torch.save({"model": resnet8x4(100).state_dict()}, narrow)
    with pytest.raises(ValueError, match=r"shape: conv1.weight \(32, 3, 3, 3\) ≠ \(16, 3, 3, 3\)"):
        build_teacher(model=lambda: resnet8(100), ckpt=str(narrow), **kw | {"arch": "resnet8"})
