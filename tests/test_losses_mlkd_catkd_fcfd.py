"""MLKD, CAT-KD and FCFD equal their formulas computed by hand on tiny cases (NumPy, written out
term by term), read what they declare (a strong view, the networks), and train one step on the
benchmark pair resnet56 → resnet20 with finite loss and gradients on the student and on their own
modules."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from kdlab import CONF_DIR
from kdlab.distill.base import Networks, StrongLogits
from kdlab.distill.catkd import CATKD
from kdlab.distill.fcfd import FCFD
from kdlab.distill.mlkd import MLKD
from kdlab.models.zoo import build
from kdlab.systems import Distiller, fast
from kdlab.teachers import FrozenTeacher


def softmax(z: np.ndarray, t: float) -> np.ndarray:
    e = np.exp(z / t - (z / t).max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def kd(zs: np.ndarray, zt: np.ndarray, t: float) -> float:
    """T² · mean over the batch of Σ_c p_t (log p_t − log p_s)."""
    ps, pt = softmax(zs, t), softmax(zt, t)
    return float((pt * (np.log(pt) - np.log(ps))).sum(1).mean() * t * t)


def _logits(seed: int, b: int = 6, c: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 2, (b, c)) for _ in range(4)]


# -- MLKD ------------------------------------------------------------------------------------
def test_mlkd_equals_its_formula_by_hand():
    sw, tw, ss, ts = _logits(0)
    y = np.array([0, 1, 2, 3, 4, 0])
    temps = (4.0, 3.0, 5.0, 2.0, 6.0)
    conf = softmax(tw, 1).max(1)
    f_b = float((conf <= np.percentile(conf, 50)).mean())
    class_mass = softmax(tw, 1).sum(0)
    f_c = float((class_mass <= np.percentile(class_mass, 50)).mean())
    inst = cls = bat = 0.0
    for t in temps:
        strong = (sw, tw) if t in (2.0, 6.0) else (ss, ts)
        inst += f_b * kd(sw, tw, t) + kd(*strong, t)
        ps, pt = softmax(sw, t), softmax(tw, t)
        cls += f_c * ((pt.T @ pt - ps.T @ ps) ** 2).sum() / 5
        bat += f_b * ((pt @ pt.T - ps @ ps.T) ** 2).sum() / 6
    p = softmax(ss, 1)
    ce_strong = -np.log(p[np.arange(6), y]).mean()
    expected = 0.9 * (inst + cls + bat) + 0.1 * ce_strong

    t = [torch.tensor(a, dtype=torch.float32) for a in (sw, tw, ss, ts)]
    out = MLKD()(t[0], t[1], torch.tensor(y), strong=StrongLogits(t[2], t[3]))
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["instance"].item() == pytest.approx(inst, rel=1e-5)
    assert out["class"].item() == pytest.approx(cls, rel=1e-4)
    assert out["batch"].item() == pytest.approx(bat, rel=1e-4)
    assert 0 < f_b < 1 and 0 < f_c < 1  # the masks matter in this case


def test_mlkd_strong_terms_read_the_weak_view_at_temperatures_2_and_6():
    sw, tw, ss, ts = (torch.tensor(a, dtype=torch.float32) for a in _logits(1))
    y = torch.zeros(6, dtype=torch.long)
    loss = MLKD(temperatures=[2.0, 6.0], strong_ce=0.0)
    a = loss(sw, tw, y, strong=StrongLogits(ss, ts))["loss"]
    b = loss(sw, tw, y, strong=StrongLogits(ss * 3, ts - 1))["loss"]
    assert a.item() == b.item()  # the published code's quirk, kept
    c = MLKD(temperatures=[4.0], strong_ce=0.0)
    assert (
        c(sw, tw, y, strong=StrongLogits(ss, ts))["loss"]
        != c(sw, tw, y, strong=StrongLogits(ss * 3, ts))["loss"]
    )


def test_mlkd_needs_a_strong_view_and_says_so():
    sw, tw, _, _ = (torch.tensor(a, dtype=torch.float32) for a in _logits(2))
    assert MLKD().extra_inputs() == {"strong"}
    with pytest.raises(ValueError, match="strong view"):
        MLKD()(sw, tw, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        MLKD(temperatures=[4.0, -1.0])


def test_a_system_refuses_a_strong_view_loss_without_strong_views():
    teacher = FrozenTeacher(build("resnet14", 10))
    system = Distiller(build("resnet8", 10), teacher, MLKD(), partial(torch.optim.SGD, lr=0.1))
    with pytest.raises(ValueError, match="data.strong_view=true"):
        system.compute_losses(torch.randn(4, 3, 32, 32), torch.arange(4))


# -- CAT-KD ----------------------------------------------------------------------------------
def _head(weight: np.ndarray) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=torch.float32))
    return lin


@pytest.mark.parametrize("normalize", [False, True])
def test_catkd_equals_its_formula_by_hand(normalize):
    rng = np.random.default_rng(3)
    fs, ft = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 5, 8, 8))
    ws, wt = rng.normal(size=(4, 3)), rng.normal(size=(4, 5))

    def cams(f, w, r=2):  # the classifier at every position, then r × r average pooling
        cam = np.einsum("ck,bkhw->bchw", w, f)
        b, c, h, wd = cam.shape
        return cam.reshape(b, c, r, h // r, r, wd // r).mean(axis=(3, 5))

    cs, ct = cams(fs, ws), cams(ft, wt)
    if normalize:
        cs = cs / np.sqrt((cs**2).sum(axis=(2, 3), keepdims=True))
        ct = ct / np.sqrt((ct**2).sum(axis=(2, 3), keepdims=True))
    expected = ((cs - ct) ** 2).mean()

    head_s, head_t = _head(ws), _head(wt)
    nets = Networks(
        SimpleNamespace(classifier_head=lambda: head_s, pooled_map=lambda f: f),
        SimpleNamespace(classifier_head=lambda: head_t, pooled_map=lambda f: f),
    )
    loss = CATKD(resolution=2, normalize=normalize)
    loss.stage_pairs = (("last", "last"),)
    f_s = torch.tensor(fs, dtype=torch.float32, requires_grad=True)
    out = loss(
        torch.zeros(2, 4),
        torch.zeros(2, 4),
        torch.zeros(2, dtype=torch.long),
        {"last": f_s},
        {"last": torch.tensor(ft, dtype=torch.float32)},
        networks=nets,
    )
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    out["loss"].backward()
    assert f_s.grad.abs().sum() > 0 and head_s.weight.grad.abs().sum() > 0
    assert head_t.weight.grad is None  # the teacher's classifier is only read


def test_catkd_binds_to_the_maps_the_classifier_pools_and_refuses_others():
    loss = CATKD()
    loss.bind(build("resnet20"), FrozenTeacher(build("resnet56")))
    assert loss.stage_pairs == (("layer3", "layer3"),)
    vgg = CATKD()
    vgg.bind(build("vgg8"), FrozenTeacher(build("vgg13")))
    assert vgg.stage_pairs == (("block4", "block4"),)
    wrn = CATKD()
    wrn.bind(build("wrn_16_2"), FrozenTeacher(build("wrn_40_2")))
    assert wrn.stage_pairs == (("layer3", "layer3"),) and wrn.student_preact and wrn.teacher_preact
    with pytest.raises(ValueError, match="map_stage"):
        CATKD().bind(build("shufflev2"), FrozenTeacher(build("resnet32x4")))


@pytest.mark.parametrize("arch", ["resnet20", "wrn_16_2", "vgg8", "shufflev1", "r18"])
def test_the_pooled_map_is_what_the_classifier_pools(arch):
    from kdlab.models.base import stage_outputs
    from kdlab.models.resnet import resnet18

    net = (resnet18(100) if arch == "r18" else build(arch)).eval()
    x = torch.randn(2, 3, 32, 32)
    logits, feats = stage_outputs(net, x, net.map_preact)
    pooled = net.pooled_map(feats[net.map_stage]).mean(dim=(2, 3))
    assert torch.allclose(net.classifier_head()(pooled), logits, atol=1e-4)


# -- FCFD ------------------------------------------------------------------------------------
class _TwoStageTeacher:
    """A teacher whose later part is known in closed form: after stage ``a`` it doubles the map
    into stage ``b`` and its logits are the channel means of ``b``."""

    def forward_from(self, stage: str, x: torch.Tensor):
        assert stage == "a"
        b = 2 * x
        return b.mean(dim=(2, 3)), {"b": b, "pool": b.mean(dim=(2, 3))}


def test_fcfd_equals_its_formula_by_hand():
    rng = np.random.default_rng(4)
    fa, fb, ta, tb = (rng.normal(size=(3, 4, 2, 2)) for _ in range(4))
    zs, zt = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))

    def mse(x, y):
        return ((x - y) ** 2).mean()

    def gap_relu(x):
        return np.maximum(x, 0).mean(axis=(2, 3))

    # bridges are identities here: h^k = f_s^k; the path leaves after "a" (the last stage is b)
    path = kd((2 * fa).mean(axis=(2, 3)), zt, 4.0)
    l2 = mse(fa, ta) + mse(fb, tb) + mse(2 * fa, tb)
    l2 += mse(gap_relu(fb), gap_relu(tb)) + mse(gap_relu(2 * fa), gap_relu(tb))
    for epoch, w in ((0, 1 / 20), (30, 1.0)):
        expected = 1.0 * kd(zs, zt, 4.0) + 1.0 * path + 0.02 * w * l2
        loss = FCFD(stages=["a", "b"])
        loss.stage_pairs = (("a", "a"), ("b", "b"))
        loss.bridges = nn.ModuleDict({"a": nn.Identity(), "b": nn.Identity()})
        loss.set_epoch(epoch)
        t = {
            k: torch.tensor(v, dtype=torch.float32)
            for k, v in {"fa": fa, "fb": fb, "ta": ta, "tb": tb, "zs": zs, "zt": zt}.items()
        }
        out = loss(
            t["zs"],
            t["zt"],
            torch.zeros(3, dtype=torch.long),
            {"a": t["fa"], "b": t["fb"]},
            {"a": t["ta"], "b": t["tb"]},
            networks=Networks(None, _TwoStageTeacher()),
        )
        assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
        assert out["paths"].item() == pytest.approx(path, rel=1e-5)
        assert out["appearance"].item() == pytest.approx(l2, rel=1e-5)


def test_a_teacher_continues_from_a_stage_exactly_as_its_own_forward():
    torch.manual_seed(0)
    net = build("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    logits, feats = net.forward_stages(x)
    for stage in ("stem", "layer1", "layer2"):
        out, later = net.forward_from(stage, feats[stage])
        assert torch.allclose(out, logits, atol=1e-5)
        assert torch.allclose(later["layer3"], feats["layer3"], atol=1e-5)
    for arch, stages in (
        ("wrn_16_2", ("stem", "layer1", "layer2")),
        ("vgg8", ("stem", "block1", "block2", "block3")),
    ):
        other = build(arch).eval()
        logits_o, feats_o = other.forward_stages(x)
        for stage in stages:
            assert torch.allclose(other.forward_from(stage, feats_o[stage])[0], logits_o, atol=1e-5)
    with pytest.raises(ValueError, match="forward_from"):
        build("shufflev1").forward_from("layer1", feats["layer1"])
    # the frozen teacher runs its later stages with autograd: gradients reach the input
    teacher = FrozenTeacher(build("resnet56"))
    teacher.prepare("cpu")  # BN folded: still the same function
    h = torch.randn(2, 16, 32, 32, requires_grad=True)
    teacher.forward_from("layer1", h)[0].sum().backward()
    assert h.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_a_prepared_teacher_stays_usable_by_autograd(tmp_path, monkeypatch):
    """Measuring the memory format (channels_last=auto, nothing remembered yet) must not turn the
    teacher's weights into inference tensors: FCFD runs its later stages with autograd."""
    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path))
    monkeypatch.setattr("kdlab.models.memory_format.MARGIN", 0.0)  # measured, NCHW kept
    teacher = FrozenTeacher(build("resnet32x4"), channels_last="auto")
    teacher.prepare("cpu")
    assert not any(p.is_inference() for p in teacher.parameters())
    h = torch.randn(2, 64, 32, 32, requires_grad=True)
    teacher.forward_from("layer1", h)[0].sum().backward()
    assert h.grad is not None


def test_fcfd_bridges_follow_the_stage_shapes():
    loss = FCFD()
    loss.bind(build("resnet8x4"), FrozenTeacher(build("resnet32x4")))
    conv = loss.bridges["layer2"][0]
    assert (conv.in_channels, conv.out_channels, conv.stride) == (128, 128, (1, 1))
    assert isinstance(loss.bridges["layer2"][-1], nn.LeakyReLU)  # post-ReLU teacher stages
    wrn = FCFD()
    wrn.bind(build("wrn_16_2"), FrozenTeacher(build("wrn_40_2")))
    assert isinstance(wrn.bridges["layer1"][-1], nn.BatchNorm2d)  # raw pre-activation sums
    with pytest.raises(ValueError, match="unknown stage"):
        FCFD(stages=["layer9"]).bind(build("resnet8"), FrozenTeacher(build("resnet14")))


# -- one training step on the benchmark pair --------------------------------------------------
@pytest.mark.parametrize("method", ["mlkd", "catkd", "fcfd"])
def test_one_step_on_resnet56_resnet20_is_finite_with_gradients(method):
    torch.manual_seed(0)
    root = OmegaConf.create({"label_smoothing": 0.0})
    root.distill = OmegaConf.load(CONF_DIR / "distill" / f"{method}.yaml")
    loss = instantiate(root.distill)
    teacher = FrozenTeacher(build("resnet56", 100))
    system = Distiller(
        build("resnet20", 100), teacher, loss, partial(torch.optim.SGD, lr=0.05, momentum=0.9)
    )
    fast.prepare(system, "cpu")
    opt = system.optimizer_factory(params=system.trainable_parameters())
    x, xs = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    _, terms = system.compute_losses(x, torch.arange(8) % 100, torch.arange(8), None, xs)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    student = [p.grad for p in system.net.parameters()]
    own = [p.grad for p in system.criterion.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in student + own)
    assert sum(g.abs().sum() for g in student) > 0
    if method == "fcfd":
        assert own and sum(g.abs().sum() for g in own) > 0  # the bridges train
    assert all(p.grad is None for p in teacher.parameters())
    opt.step()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["mlkd", "catkd", "fcfd"])
def test_one_cuda_step_under_deterministic_algorithms_and_bf16(method):
    root = OmegaConf.create({"label_smoothing": 0.0})
    root.distill = OmegaConf.load(CONF_DIR / "distill" / f"{method}.yaml")
    system = Distiller(
        build("resnet20", 100),
        FrozenTeacher(build("resnet56", 100)),
        instantiate(root.distill),
        partial(torch.optim.SGD, lr=0.05),
    )
    fast.prepare(system, "cuda")
    system.cuda()
    x, xs = torch.randn(8, 3, 32, 32, device="cuda"), torch.randn(8, 3, 32, 32, device="cuda")
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, terms = system.compute_losses(x, torch.arange(8, device="cuda"), None, None, xs)
        terms["loss"].backward()
    finally:
        torch.use_deterministic_algorithms(was)
    assert torch.isfinite(terms["loss"])
    assert all(torch.isfinite(p.grad).all() for p in system.net.parameters())
