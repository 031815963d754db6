"""timm adapter (the cross-architecture study): tiny random-weight ViTs distil to/from ResNets; local weights; Resized."""

from __future__ import annotations

import functools

import pytest
import torch

from kdlab.distill.logit import LogitKD
from kdlab.models.cnn import small_cnn
from kdlab.models.export import export_weights
from kdlab.models.resnet import resnet18
from kdlab.models.timm_adapter import Resized, TimmModel
from kdlab.systems import Distiller
from kdlab.teachers import build_teacher
from kdlab.train import train
from tests.test_instruments_train import compose_cfg, export_teacher_net

TINY = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
TINY_OVERRIDES = [f"+KEY.kwargs.{k}={v}" for k, v in TINY.items() if k != "img_size"]


def tiny_vit(num_classes: int = 10, **kw) -> TimmModel:
    return TimmModel("vit_tiny_patch16_224", num_classes, "vit_tiny", 32, kwargs=TINY, **kw)


def test_vit_stages_are_block_maps_and_logits_match_forward():
    torch.manual_seed(0)
    net = tiny_vit().eval()
    x = torch.randn(2, 3, 32, 32)
    logits, feats = net.forward_stages(x)
    assert net.stage_names == ("blocks_0", "blocks_1")
    assert all(f.shape == (2, 32, 4, 4) for f in feats.values())  # tokens → 4×4 maps
    assert torch.allclose(logits, net(x), atol=1e-5)


def test_input_adapter_upsamples_to_model_size():
    net = TimmModel("resnet18", 10, "timm_r18", input_size=64).eval()
    _, feats = net.forward_stages(torch.randn(1, 3, 32, 32))
    assert feats["layer1"].shape[-1] == 16  # 64 / 4: the model ran at 64×64


def test_pretrained_local_file_loads_drops_head_and_rejects_wrong_files(tmp_path):
    torch.manual_seed(0)
    src = tiny_vit(num_classes=10)
    path = tmp_path / "vit.pt"
    torch.save(src.model.state_dict(), path)
    same = tiny_vit(num_classes=10, pretrained=str(path))
    assert all(torch.equal(a, b) for a, b in zip(src.parameters(), same.parameters(), strict=True))
    other = tiny_vit(num_classes=100, pretrained=str(path))  # head dropped, body loaded
    assert torch.equal(other.model.blocks[1].mlp.fc1.weight, src.model.blocks[1].mlp.fc1.weight)
    assert other.model.head.weight.shape == (100, 32)
    wrong = tmp_path / "r18.pt"
    torch.save(resnet18().state_dict(), wrong)
    with pytest.raises(ValueError, match=r"r18\.pt do not match"):
        tiny_vit(pretrained=str(wrong))
    with pytest.raises(ValueError, match="not found"):
        tiny_vit(pretrained=str(tmp_path / "missing.pt"))


def _vit(prefix: str) -> list[str]:
    return [f"{prefix}=vit_tiny", f"{prefix.replace('teacher', 'teacher.model')}.input_size=32"] + [
        o.replace("KEY", prefix.replace("teacher", "teacher.model")) for o in TINY_OVERRIDES
    ]


@pytest.mark.parametrize("direction", ["vit_to_resnet", "resnet_to_vit"])
def test_cross_architecture_distillation_runs(tiny_cifar10, tmp_path, direction):
    out = tmp_path / "run"
    if direction == "vit_to_resnet":
        pair, arch = [*_vit("teacher"), "model=preresnet20"], "vit_tiny"
        cka = "cka.stages=[layer3:blocks_1]"
    else:
        pair, arch = [*_vit("model"), "teacher=preresnet20"], "preresnet20"
        cka = "cka.stages=[blocks_1:layer3]"
    cfg = compose_cfg(
        tiny_cifar10,
        out,
        "+experiment=vitb_vitt_logit",
        "data=cifar10",
        f"data.root={tiny_cifar10}",
        *pair,
        "cka.enabled=true",
        cka,
    )
    export_teacher_net(cfg, arch=arch)
    res = train(cfg)
    assert res["teacher"] == arch and res["compression_ratio"] > 0
    assert res["test_acc_best"] is not None and 0.0 <= res["train_agreement"] <= 100.0
    assert any(k.startswith("test_cka_") for k in res)


def test_upsampled_native_teacher_distils_into_32px_student(tmp_path):
    factory = functools.partial(
        Resized, functools.partial(resnet18, num_classes=10, stem="imagenet"), 64
    )
    net = factory()
    assert net.arch == "r18_64"
    bare = tmp_path / "bare.ckpt"  # weights of the unwrapped network load too
    export_weights(net.net, bare, {}, arch="r18_64", dataset="cifar10")
    teacher = build_teacher(factory, "r18_64", "cifar10", 10, str(tmp_path), ckpt=str(bare))
    sizes = []
    inner = teacher.net.net.forward_stages
    teacher.net.net.forward_stages = lambda x: (sizes.append(x.shape[-1]), inner(x))[1]
    system = Distiller(
        small_cnn(10),
        teacher,
        LogitKD(alpha=0.5, temperature=4.0),
        optimizer=functools.partial(torch.optim.SGD, lr=0.01),
    )
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    logits, terms = system.compute_losses(x, y)
    assert sizes == [64] and logits.shape == (4, 10) and torch.isfinite(terms["loss"])
