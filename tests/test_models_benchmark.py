"""The CIFAR-100 benchmark zoo (CRD / RepDistiller models): sizes, names, stages, checkpoints.

The expected parameter counts and the parameter-name fingerprints below were measured on the
published model code (RepDistiller ``models/``; mdistiller's ``models/cifar`` gives the same) for
100 classes. A fingerprint is the first 16 hex digits of the SHA-256 of the sorted
``"name:shape"`` lines of the published model's ``state_dict()``: equal fingerprints mean a
released checkpoint has exactly the keys and shapes of the kdlab model, i.e. loads strictly.
"""

from __future__ import annotations

import hashlib
import io
from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kdlab.models import count_parameters, stage_shapes
from kdlab.models.resnet import resnet50
from kdlab.models.zoo import ZOO, build, to_kdlab_state, to_published_state
from kdlab.models.zoo.published import kdlab_arch
from kdlab.models.zoo.shufflenetv1 import channel_shuffle

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"

# arch: (parameters for 100 classes, fingerprint of the published state_dict's names and shapes)
PUBLISHED = {
    "resnet8": (83_892, "166d31a811b31c5f"),
    "resnet14": (181_108, "8525efa6fc491f19"),
    "resnet20": (278_324, "6db44f39e3bff21f"),
    "resnet32": (472_756, "325ee6108709f7b5"),
    "resnet44": (667_188, "f1263f7b0ed71e1a"),
    "resnet56": (861_620, "3977b81559d8630f"),
    "resnet110": (1_736_564, "7f8e5ac1814e480a"),
    "resnet8x4": (1_233_540, "5d5871b403f3a649"),
    "resnet32x4": (7_433_860, "610ad29043c56b33"),
    "wrn_16_1": (180_916, "f6cf46040022f13d"),
    "wrn_16_2": (703_284, "bdbc50a2b3205f84"),
    "wrn_40_1": (569_780, "deef22602ae7584b"),
    "wrn_40_2": (2_255_156, "bf5731c8e8e2b95f"),
    "vgg8": (3_965_028, "d9f8d7533423754e"),
    "vgg11": (9_277_284, "6592bd1869a5938f"),
    "vgg13": (9_462_180, "7bec65f1ca17a0bf"),
    "vgg16": (14_774_436, "b420ddff7e4306ec"),
    "vgg19": (20_086_692, "2d318270df30c723"),
    "mobilenetv2": (812_836, "10e9036e17013c38"),
    "shufflev1": (949_258, "eb3bcbc847930cce"),
    "shufflev2": (1_355_528, "b7e2c3e764687767"),
    "r50": (23_705_252, "d4a9e0738c8f8385"),  # published ResNet50 = kdlab r50
}
ARCHS = list(ZOO)
THIN = {"stem": (16, 32, 32), "layer1": (16, 32, 32), "layer2": (32, 16, 16)}
THIN |= {"layer3": (64, 8, 8), "pool": (64,)}
VGG = {"stem": (64, 32, 32), "block1": (128, 16, 16), "block2": (256, 8, 8)}
VGG |= {"block3": (512, 4, 4), "block4": (512, 4, 4), "pool": (512,)}
SHAPES = {
    **{f"resnet{d}": THIN for d in (8, 14, 20, 32, 44, 56, 110)},
    **{f"vgg{d}": VGG for d in (8, 11, 13, 16, 19)},
    "resnet8x4": {
        "stem": (32, 32, 32),
        "layer1": (64, 32, 32),
        "layer2": (128, 16, 16),
        "layer3": (256, 8, 8),
        "pool": (256,),
    },
    "resnet32x4": {
        "stem": (32, 32, 32),
        "layer1": (64, 32, 32),
        "layer2": (128, 16, 16),
        "layer3": (256, 8, 8),
        "pool": (256,),
    },
    "wrn_16_1": THIN,
    "wrn_40_1": THIN,
    "wrn_16_2": {
        "stem": (16, 32, 32),
        "layer1": (32, 32, 32),
        "layer2": (64, 16, 16),
        "layer3": (128, 8, 8),
        "pool": (128,),
    },
    "wrn_40_2": {
        "stem": (16, 32, 32),
        "layer1": (32, 32, 32),
        "layer2": (64, 16, 16),
        "layer3": (128, 8, 8),
        "pool": (128,),
    },
    "mobilenetv2": {
        "stem": (16, 16, 16),
        "block1": (12, 16, 16),
        "block2": (16, 8, 8),
        "block4": (48, 4, 4),
        "block6": (160, 2, 2),
        "pool": (1280,),
    },
    "shufflev1": {
        "stem": (24, 32, 32),
        "layer1": (240, 16, 16),
        "layer2": (480, 8, 8),
        "layer3": (960, 4, 4),
        "pool": (960,),
    },
    "shufflev2": {
        "stem": (24, 32, 32),
        "layer1": (116, 16, 16),
        "layer2": (232, 8, 8),
        "layer3": (464, 4, 4),
        "pool": (1024,),
    },
}


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics and affine parameters, so that loads are actually checked."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.25 + 0.5 * torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


@cache
def model(arch: str) -> torch.nn.Module:
    """One randomized eval-mode instance per arch, shared by the read-only tests."""
    torch.manual_seed(0)
    return randomize(resnet50(100) if arch == "r50" else build(arch))


@cache
def run(arch: str, preact: bool):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        kw = {"preact": True} if preact else {}  # kdlab's r50 has no preact argument
        return x, model(arch)(x), *model(arch).forward_stages(x, **kw)


def test_zoo_lists_every_benchmark_model():
    assert set(ZOO) == set(PUBLISHED) - {"r50"}


@pytest.mark.parametrize("arch", [*ARCHS, "r50"])
def test_parameter_count_and_names_equal_the_published_model(arch):
    count, published_fp = PUBLISHED[arch]
    net = model(arch)
    assert count_parameters(net) == count
    assert fingerprint(to_published_state(arch, net.state_dict())) == published_fp


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_stages_and_shapes(arch):
    net = model(arch)
    _, logits, logits2, feats = run(arch, False)
    assert net.arch == arch and net.num_classes == 100 and net.has_preact
    assert logits.shape == (2, 100)
    assert torch.equal(logits, logits2)
    assert tuple(feats) == net.stage_names
    assert net.stage_names[0] == "stem" and net.stage_names[-1] == "pool"
    assert stage_shapes(net) == SHAPES[arch]
    head = next(getattr(net, n) for n in ("fc", "classifier", "linear") if hasattr(net, n))
    with torch.no_grad():  # "pool" is the vector the classifier sees
        assert torch.equal(head(feats["pool"]), logits)


@pytest.mark.parametrize("arch", ARCHS)
def test_preact_features_match_the_published_relationship(arch):
    net = model(arch)
    _, _, logits_post, post = run(arch, False)
    _, _, logits_pre, pre = run(arch, True)
    assert torch.equal(logits_pre, logits_post)
    assert torch.equal(pre["stem"], post["stem"]) and torch.equal(pre["pool"], post["pool"])
    body = net.stage_names[1:-1]
    if arch == "mobilenetv2":  # linear bottleneck outputs: no ReLU follows, preact = post
        assert all(torch.equal(pre[s], post[s]) for s in body)
        return
    for i, s in enumerate(body):
        assert (pre[s] < 0).any(), f"{s}: pre-activation clipped (in-place ReLU?)"
        assert not torch.equal(pre[s], post[s])
        if arch.startswith("wrn"):  # the BN that follows the group, not yet the ReLU
            bns = (net.block2.layer[0].bn1, net.block3.layer[0].bn1, net.bn1)
            with torch.no_grad():
                torch.testing.assert_close(pre[s], bns[i](post[s]), rtol=0, atol=0)
        elif arch == "shufflev2":  # the published preact is taken before the channel shuffle
            assert torch.equal(channel_shuffle(F.relu(pre[s]), 2), post[s])
        else:
            assert torch.equal(F.relu(pre[s]), post[s])


def test_wrn_preact_does_not_update_batchnorm_statistics_twice():
    torch.manual_seed(0)
    a, b = build("wrn_16_1").train(), build("wrn_16_1").train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a(x)
        b.forward_stages(x, preact=True)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name


@pytest.mark.parametrize("arch", [*ARCHS, "r50"])
def test_published_checkpoint_loads_strictly_with_identical_logits(arch):
    src = model(arch)
    published = to_published_state(arch, src.state_dict())
    buf = io.BytesIO()
    torch.save({"model": published, "epoch": 240, "best_acc": 0.0}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    fresh = resnet50(100) if arch == "r50" else build(arch)
    fresh.load_state_dict(to_kdlab_state(arch, ckpt), strict=True)
    fresh.eval()
    x, logits, *_ = run(arch, False)
    with torch.no_grad():
        assert torch.equal(fresh(x), logits)


def test_resnet50_mapping_uses_the_published_names_and_inverts():
    sd = model("r50").state_dict()
    pub = to_published_state("r50", sd)
    assert pub["layer1.0.shortcut.0.weight"].shape == (256, 64, 1, 1)
    assert pub["layer4.0.shortcut.1.running_var"].shape == (2048,)
    assert pub["linear.weight"].shape == (100, 2048)
    assert not any(".downsample." in k or k.startswith("fc.") for k in pub)
    assert to_kdlab_state("ResNet50", pub).keys() == sd.keys()
    # a DataParallel checkpoint (module. prefix) and the bare state dict work too
    wrapped = {"model": {f"module.{k}": v for k, v in pub.items()}}
    assert to_kdlab_state("r50", wrapped).keys() == sd.keys()
    assert to_kdlab_state("vgg13_bn", {"a.b": torch.zeros(1)}).keys() == {"a.b"}


def test_parameter_names_of_released_checkpoints():
    r = model("resnet8x4").state_dict()
    assert r["layer1.0.conv1.weight"].shape == (64, 32, 3, 3)
    assert r["layer1.0.downsample.0.weight"].shape == (64, 32, 1, 1)
    assert r["fc.weight"].shape == (100, 256)
    w = list(model("wrn_40_2").state_dict())
    assert w[:3] == ["conv1.weight", "block1.layer.0.bn1.weight", "block1.layer.0.bn1.bias"]
    assert "block1.layer.0.convShortcut.weight" in w and "fc.bias" in w
    assert "block1.layer.0.convShortcut.weight" not in model("wrn_16_1").state_dict()
    v = model("vgg13").state_dict()
    assert v["classifier.weight"].shape == (100, 512)
    assert v["block0.3.weight"].shape == (64, 64, 3, 3) and "block0.3.bias" in v
    m = model("mobilenetv2").state_dict()
    assert m["classifier.0.weight"].shape == (100, 1280)
    assert m["blocks.1.0.conv.3.weight"].shape == (48, 1, 3, 3)
    assert model("shufflev1").state_dict()["linear.weight"].shape == (100, 960)
    assert model("shufflev2").state_dict()["layer1.0.conv5.weight"].shape == (58, 58, 1, 1)


def test_published_names_resolve_and_unknown_archs_raise():
    assert kdlab_arch("ResNet50") == "r50" and kdlab_arch("mobile_half") == "mobilenetv2"
    assert kdlab_arch("MobileNetV2") == "mobilenetv2" and kdlab_arch("vgg8_bn") == "vgg8"
    with pytest.raises(ValueError, match="resnet9"):
        to_kdlab_state("resnet9", {})
    with pytest.raises(ValueError, match="unknown zoo model"):
        build("resnet9")


@pytest.mark.parametrize("arch", ARCHS)
def test_model_config_builds_the_model(arch):
    cfg = OmegaConf.create(
        {
            "data": {"num_classes": 10, "image_size": 32},
            "model": OmegaConf.load(CONF / f"{arch}.yaml"),
        }
    )
    net = instantiate(cfg.model)
    assert net.arch == arch and net.num_classes == 10
    assert net.stage_names == model(arch).stage_names
