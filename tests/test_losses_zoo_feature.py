"""The benchmark's feature-map methods (FitNets, AT, VID, NST, FT): hand-computed values on tiny
maps, gradients, settings and stage errors; and every zoo config of this family and of the
relational one (SP, CC, RKD, PKT) trains one step through the Distiller on benchmark pairs."""

from __future__ import annotations

import functools
import inspect
import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn

from kdlab.distill.at import AttentionTransfer
from kdlab.distill.fitnet import FitNet
from kdlab.distill.ft import FactorTransfer
from kdlab.distill.nst import NST
from kdlab.distill.vid import VID
from kdlab.models.base import StagedModel

CONF = Path(__file__).resolve().parents[1] / "conf" / "distill"
ZOO = ("fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "nst", "ft")


class Toy(StagedModel):
    """A model whose stage outputs have the given shapes (only ``bind`` looks at it)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], arch: str = "toy") -> None:
        super().__init__()
        self.arch, self.num_classes = arch, 3
        self.stage_names = tuple(shapes)
        self.shapes = shapes
        self.w = nn.Parameter(torch.zeros(()))

    def forward_stages(self, x: Tensor):
        b = x.shape[0]
        return torch.zeros(b, 3), {k: torch.zeros(b, *s) + self.w for k, s in self.shapes.items()}


def toy(l1=(1, 1, 2), l2=(1, 1, 2), pool=(4,), arch="toy") -> Toy:
    return Toy({"stem": (1, 4, 4), "layer1": l1, "layer2": l2, "pool": pool}, arch)


def t_(*rows) -> Tensor:
    return torch.tensor(rows[0] if len(rows) == 1 else rows, dtype=torch.float32)


def run(loss, s_feats: dict, t_feats: dict) -> dict:
    return loss(
        torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), s_feats, t_feats
    )


def grads_of(loss, s_feats: dict, t_feats: dict) -> dict:
    """Back-propagate the loss from leaf features; return the features' gradients."""
    s = {k: v.clone().requires_grad_(True) for k, v in s_feats.items()}
    t = {k: v.clone().requires_grad_(True) for k, v in t_feats.items()}
    run(loss, s, t)["loss"].backward()
    return {"s": {k: v.grad for k, v in s.items()}, "t": {k: v.grad for k, v in t.items()}}


def assert_reaches_student_not_teacher(g: dict) -> None:
    assert all(
        v is not None and torch.isfinite(v).all() and v.abs().sum() > 0 for v in g["s"].values()
    )
    assert all(v is None for v in g["t"].values()), "teacher features must be detached"


# -- AT ----------------------------------------------------------------------------------------
def test_at_hand_computed_p2_and_p1_with_pooling():
    # student [1, C=2, 1, 2]: channel maps (1, 2) and (3, 0); teacher one channel (0, 1)
    fs, ft = t_([[[1.0, 2.0]], [[3.0, 0.0]]]).unsqueeze(0), t_([[[0.0, 1.0]]]).unsqueeze(0)
    # p = 2: v_s = ((1+9)/2, (4+0)/2) = (5, 2) → (5, 2)/√29; v_t = (0, 1)
    expected = ((5 / math.sqrt(29)) ** 2 + (2 / math.sqrt(29) - 1) ** 2) / 2
    out = run(AttentionTransfer(p=2, stages=["layer1"]), {"layer1": fs}, {"layer1": ft})
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    # p = 1 uses |A|: student (−3, 4) → (3, 4)/5; teacher 1×4 map (1, 1, 2, 2) pooled to 1×2
    fs, ft = t_([[[-3.0, 4.0]]]).unsqueeze(0), t_([[[1.0, 1.0, 2.0, 2.0]]]).unsqueeze(0)
    expected = ((0.6 - 1 / math.sqrt(5)) ** 2 + (0.8 - 2 / math.sqrt(5)) ** 2) / 2
    out = run(AttentionTransfer(p=1, stages="layer1"), {"layer1": fs}, {"layer1": ft})
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_at_sums_body_stages_and_gradients():
    loss = AttentionTransfer()
    loss.bind(toy(l1=(2, 2, 2), l2=(3, 1, 1)), toy(l1=(4, 4, 4), l2=(5, 1, 1)))
    assert loss.stage_pairs == (("layer1", "layer1"), ("layer2", "layer2"))
    torch.manual_seed(0)
    s = {"layer1": torch.randn(2, 2, 2, 2), "layer2": torch.randn(2, 3, 1, 1)}
    t = {"layer1": torch.randn(2, 4, 4, 4), "layer2": torch.randn(2, 5, 1, 1)}
    out = run(loss, s, t)
    assert set(out) == {"loss", "layer1", "layer2"}
    assert out["loss"].item() == pytest.approx(out["layer1"].item() + out["layer2"].item())
    one = AttentionTransfer(stages=["layer1"])
    g = grads_of(one, {"layer1": s["layer1"]}, {"layer1": t["layer1"]})
    assert_reaches_student_not_teacher(g)
    assert loss.method_params() == {"p": 2.0, "stages": "body"}


# -- FitNet ------------------------------------------------------------------------------------
def test_fitnet_hand_computed_with_a_known_regressor():
    loss = FitNet()  # hint=1 of "body": layer2; student 1 channel, teacher 2 channels, 1×2
    loss.bind(toy(l2=(1, 1, 2)), toy(l2=(2, 1, 2)))
    assert loss.stage_pairs == (("layer2", "layer2"),)
    reg = loss.regressors["layer2"]
    assert isinstance(reg.conv, nn.Conv2d) and reg.conv.kernel_size == (1, 1)
    with torch.no_grad():
        reg.conv.weight.copy_(t_([[[[2.0]]], [[[-1.0]]]]))
        reg.conv.bias.copy_(t_(0.5, 0.0))
    loss.eval()  # BatchNorm with its initial statistics: y = x / √(1 + 1e-5)
    fs = t_([[[1.0, -2.0]]]).unsqueeze(0)
    ft = t_([[[1.0, 0.0]], [[0.0, 3.0]]]).unsqueeze(0)
    r = math.sqrt(1 + 1e-5)
    # channel 0: relu(2·(1, −2) + 0.5) = (2.5, 0); channel 1: relu(−(1, −2)) = (0, 2); then / r
    expected = ((2.5 / r - 1) ** 2 + 0 + 0 + (2 / r - 3) ** 2) / 4
    out = run(loss, {"layer2": fs}, {"layer2": ft})
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_fitnet_regressor_follows_the_map_sizes_and_gradients():
    cases = [
        ((3, 8, 8), (5, 4, 4), nn.Conv2d, (3, 3), (2, 2)),  # twice: 3×3 stride 2
        ((3, 4, 4), (5, 8, 8), nn.ConvTranspose2d, (4, 4), (2, 2)),  # half: 4×4 up
        ((3, 6, 6), (5, 4, 4), nn.Conv2d, (3, 3), (1, 1)),
    ]  # larger: (1 + 6 − 4) kernel
    for ss, ts, kind, kernel, stride in cases:
        loss = FitNet(stages=["layer1"], hint=None)
        loss.bind(toy(l1=ss), toy(l1=ts))
        conv = loss.regressors["layer1"].conv
        assert type(conv) is kind and conv.kernel_size == kernel and conv.stride == stride
        torch.manual_seed(0)
        g = grads_of(loss, {"layer1": torch.randn(4, *ss)}, {"layer1": torch.rand(4, *ts)})
        assert_reaches_student_not_teacher(g)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
    with pytest.raises(ValueError, match="cannot regress"):
        FitNet(stages=["layer1"], hint=0).bind(toy(l1=(3, 3, 3)), toy(l1=(5, 8, 8)))


def test_fitnet_hint_is_the_published_second_intermediate_map():
    from kdlab.models.zoo.mobilenetv2 import mobilenetv2
    from kdlab.models.zoo.vgg import vgg13

    loss = FitNet()
    loss.bind(mobilenetv2(100), vgg13(100))  # published hint_layer = 2 → feat[2]
    assert loss.stage_pairs == (("block2", "block2"),)
    assert loss.regressors["block2"].conv.in_channels == 16
    assert loss.regressors["block2"].conv.out_channels == 256
    with pytest.raises(ValueError, match=r"hint=5 is out of range.*hint=null"):
        FitNet(hint=5).bind(toy(), toy())
    with pytest.raises(ValueError, match="hint=2 is out of range"):
        FitNet(stages=["layer1", "layer2"], hint=2)
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="hint="):
            FitNet(hint=bad)


# -- VID ---------------------------------------------------------------------------------------
def test_vid_hand_computed_gaussian_nll():
    loss = VID(init_pred_var=5.0, eps=1e-5, stages=["layer1"])
    loss.bind(toy(), toy())
    assert loss.variance("layer1").item() == pytest.approx(5.0, rel=1e-6)
    with torch.no_grad():  # μ(s) = 2·relu(relu(s))
        for conv, w in zip(loss.regressors["layer1"][::2], (1.0, 1.0, 2.0), strict=True):
            conv.weight.fill_(w)
    fs, ft = t_([[[1.0, -1.0]]]).unsqueeze(0), t_([[[1.0, 2.0]]]).unsqueeze(0)
    # μ = (2, 0); NLL = ½((2−1)²/5 + ln 5), ½((0−2)²/5 + ln 5); mean
    expected = (0.5 * (1 / 5 + math.log(5)) + 0.5 * (4 / 5 + math.log(5))) / 2
    out = run(loss, {"layer1": fs}, {"layer1": ft})
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_vid_gradients_and_settings():
    loss = VID()
    loss.bind(toy(l1=(2, 4, 4), l2=(3, 2, 2)), toy(l1=(4, 2, 2), l2=(6, 2, 2)))
    assert [m[0].in_channels for m in loss.regressors.values()] == [2, 3]
    assert [p.numel() for p in loss.log_scales.values()] == [4, 6]
    torch.manual_seed(0)
    s = {"layer1": torch.randn(2, 2, 4, 4), "layer2": torch.randn(2, 3, 2, 2)}
    t = {"layer1": torch.randn(2, 4, 2, 2), "layer2": torch.randn(2, 6, 2, 2)}
    assert_reaches_student_not_teacher(grads_of(loss, s, t))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
    assert loss.method_params() == {"init_pred_var": 5.0, "eps": 1e-5, "stages": "body"}
    for kwargs, match in [
        ({"init_pred_var": 0}, "init_pred_var=0"),
        ({"init_pred_var": 1e-6}, "larger than eps"),
        ({"eps": -1.0}, "eps=-1.0"),
        ({"eps": float("nan")}, "eps=nan"),
    ]:
        with pytest.raises(ValueError, match=match):
            VID(**kwargs)


# -- NST ---------------------------------------------------------------------------------------
def test_nst_hand_computed_mmd():
    # sample 1: student channels (3, 0), (1, 1) → e1, (1, 1)/√2; teacher (0, 2) → e2
    #   k(s,s) mean = (1 + ½ + ½ + 1)/4 = 3/4, k(t,t) = 1, k(s,t) mean = (0 + ½)/2 = 1/4
    #   MMD² = 1 + 3/4 − 2·1/4 = 1.25
    # sample 2: student e1, e2; teacher (1, 1)/√2 → 1 + 1/2 − 2·1/2 = 0.5
    fs = t_([[[3.0, 0.0]], [[1.0, 1.0]]], [[[1.0, 0.0]], [[0.0, 1.0]]])  # [B=2, C=2, 1, 2]
    ft = t_([[[0.0, 2.0]]], [[[1.0, 1.0]]])  # [B=2, C=1, 1, 2]
    out = run(NST(stages=["layer1"]), {"layer1": fs}, {"layer1": ft})
    assert out["loss"].item() == pytest.approx((1.25 + 0.5) / 2, rel=1e-6)
    same = run(NST(stages=["layer1"]), {"layer1": ft}, {"layer1": ft})
    assert same["loss"].item() == pytest.approx(0.0, abs=1e-6)


def test_nst_gradients_and_pooling():
    loss = NST()
    loss.bind(toy(l1=(2, 4, 4), l2=(3, 2, 2)), toy(l1=(4, 2, 2), l2=(6, 4, 4)))
    torch.manual_seed(0)
    s = {"layer1": torch.randn(2, 2, 4, 4), "layer2": torch.randn(2, 3, 2, 2)}
    t = {"layer1": torch.randn(2, 4, 2, 2), "layer2": torch.randn(2, 6, 4, 4)}
    assert_reaches_student_not_teacher(grads_of(loss, s, t))
    assert list(loss.parameters()) == []


# -- FT ----------------------------------------------------------------------------------------
class Scale(nn.Module):
    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: Tensor) -> Tensor:
        return self.c * x


def test_ft_hand_computed_reconstruction_then_factor_distance():
    loss = FactorTransfer(rec_weight=0.5, init_epochs=3, stages=["layer1"])
    loss.bind(toy(l1=(1, 1, 2)), toy(l1=(2, 1, 2)))
    para = loss.paraphrasers["layer1"]
    assert para.encoder[0].in_channels == 2 and para.encoder[-2].out_channels == 1  # ⌊0.5·2⌋
    para.encoder, para.decoder = nn.Identity(), Scale(2.0)  # rebuilt = 2·A_t
    loss.translators["layer1"] = nn.Identity()
    fs = t_([[[-3.0, 4.0]]]).unsqueeze(0)
    ft = t_([[[1.0, 3.0]], [[1.0, 1.0]]]).unsqueeze(0)
    out = run(loss, {"layer1": fs}, {"layer1": ft})  # epoch 0 < 3: L_rec = mean(A_t²) = 3
    assert out["rec"].item() == pytest.approx(3.0)
    assert out["loss"].item() == pytest.approx(1.5)
    loss.set_epoch(3)
    # a(F_s) = (9, 16)/√337; a(F_t) = ((1+1)/2, (9+1)/2) = (1, 5)/√26; q = 1: mean |·|
    a_s, a_t = (9 / math.sqrt(337), 16 / math.sqrt(337)), (1 / math.sqrt(26), 5 / math.sqrt(26))
    out = run(loss, {"layer1": fs}, {"layer1": ft})
    expected = (abs(a_s[0] - a_t[0]) + abs(a_s[1] - a_t[1])) / 2
    assert set(out) == {"loss"} and out["loss"].item() == pytest.approx(expected, rel=1e-6)
    loss.q = 2.0
    expected = ((a_s[0] - a_t[0]) ** 2 + (a_s[1] - a_t[1]) ** 2) / 2
    assert run(loss, {"layer1": fs}, {"layer1": ft})["loss"].item() == pytest.approx(expected)


def test_ft_phases_train_the_paraphraser_then_the_translator():
    loss = FactorTransfer(init_epochs=1)
    loss.bind(toy(l2=(3, 4, 4)), toy(l2=(4, 2, 2)))
    assert loss.stage_pairs == (("layer2", "layer2"),)
    torch.manual_seed(0)
    s, t = {"layer2": torch.randn(2, 3, 4, 4)}, {"layer2": torch.randn(2, 4, 2, 2)}
    para, trans = loss.paraphrasers["layer2"], loss.translators["layer2"]
    g = grads_of(loss, s, t)  # epoch 0: reconstruction only
    assert g["s"]["layer2"] is None and g["t"]["layer2"] is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in para.parameters())
    assert all(p.grad is None for p in trans.parameters())
    loss.zero_grad(set_to_none=True)
    loss.set_epoch(1)  # factor transfer: student + translator, paraphraser frozen
    assert_reaches_student_not_teacher(grads_of(loss, s, t))
    assert all(p.grad is None for p in para.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trans.parameters())
    assert sum(p.grad.abs().sum() for p in trans.parameters()) > 0
    assert loss.method_params() == {
        "rate": 0.5,
        "p": 2.0,
        "q": 1.0,
        "init_epochs": 1,
        "rec_weight": 1.0,
        "stages": "last",
    }
    for kwargs, match in [
        ({"rate": 0}, "rate=0"),
        ({"p": -2}, "p=-2"),
        ({"q": None}, "q=None"),
        ({"init_epochs": -1}, "init_epochs=-1"),
        ({"init_epochs": 2.5}, "init_epochs=2.5"),
        ({"rec_weight": -1.0}, "rec_weight=-1.0"),
    ]:
        with pytest.raises(ValueError, match=match):
            FactorTransfer(**kwargs)
    with pytest.raises(ValueError, match="factor channels"):
        FactorTransfer(rate=0.1).bind(toy(), toy(l2=(4, 2, 2)))


# -- settings and stages, every map method -------------------------------------------------------
MAP_METHODS = [AttentionTransfer, FitNet, VID, NST, FactorTransfer]


def make(cls, **kwargs):
    """The method with explicit stages (FitNet: every listed stage is a hint)."""
    return cls(**kwargs, **({"hint": None} if cls is FitNet and "stages" in kwargs else {}))


@pytest.mark.parametrize("cls", MAP_METHODS)
def test_map_methods_refuse_bad_stages(cls):
    with pytest.raises(ValueError, match="unknown stage.*available stages.*role"):
        make(cls, stages=["layer9"]).bind(toy(), toy())
    with pytest.raises(ValueError, match=r"teacher: unknown stage\(s\) \['nope'\]"):
        make(cls, stages=["layer1:nope"]).bind(toy(), toy())
    with pytest.raises(ValueError, match="needs .*feature maps"):
        make(cls, stages="pool").bind(toy(), toy())
    with pytest.raises(ValueError, match="stages=3 is not allowed"):
        make(cls, stages=3)
    with pytest.raises(ValueError, match="distinct"):
        make(cls, stages=["layer1", "layer1"])
    bigger = Toy({"stem": (1, 4, 4), "a": (1, 2, 2), "b": (1, 2, 2), "c": (1, 1, 1), "pool": (1,)})
    if cls is not FactorTransfer:  # FT defaults to the last map, which always pairs
        with pytest.raises(ValueError, match="pairs every intermediate stage"):
            cls().bind(toy(), bigger)
    with pytest.raises(ValueError, match="forward_stages"):
        cls().bind(toy(), nn.Linear(2, 2))


@pytest.mark.parametrize("cls", MAP_METHODS)
def test_map_methods_need_bind_and_features(cls):
    with pytest.raises(RuntimeError, match="bind"):  # a role resolves only in bind
        run(cls(), {"layer2": torch.zeros(1, 1, 1, 2)}, {"layer2": torch.zeros(1, 1, 1, 2)})
    loss = make(cls, stages=["layer1"])
    loss.bind(toy(), toy(l1=(2, 1, 2)))
    with pytest.raises(ValueError, match="missing"):
        run(loss, {"layer2": torch.zeros(1, 1, 1, 2)}, {"layer1": torch.zeros(1, 1, 1, 2)})
    with pytest.raises(ValueError, match="needs student and teacher"):
        run(loss, None, None)


def test_at_settings():
    for bad in (0, -1.0, float("inf"), float("nan"), True, "2", None):
        with pytest.raises(ValueError, match=r"p=.*AT's attention exponent"):
            AttentionTransfer(p=bad)


# -- every zoo config: one training step through the Distiller --------------------------------
@pytest.fixture(scope="module")
def teacher_net():
    from kdlab.models.zoo.resnet import resnet32x4

    torch.manual_seed(0)
    return resnet32x4(100)


def build_loss(method: str):
    cfg = OmegaConf.create(
        {"label_smoothing": 0.0, "distill": OmegaConf.load(CONF / f"{method}.yaml")}
    )
    return instantiate(cfg.distill)


def own_parameters(term) -> list[nn.Parameter]:
    if isinstance(term, FactorTransfer):  # the phase decides which network trains
        nets = term.paraphrasers if term.initialising else term.translators
        return list(nets.parameters())
    return list(term.parameters())


@pytest.mark.parametrize("student", ["resnet8x4", "shufflev1"])
@pytest.mark.parametrize("method", ZOO)
def test_zoo_config_trains_one_distiller_step(method, student, teacher_net):
    from kdlab.models.zoo import ZOO as MODELS
    from kdlab.systems import Distiller
    from kdlab.teachers import FrozenTeacher

    loss = build_loss(method)
    assert loss.weights["ce"] == 1.0 and loss.weights["kd"] == 0.0 and loss.weights[method] > 0
    torch.manual_seed(1)
    net = MODELS[student](100)
    system = Distiller(
        net, FrozenTeacher(teacher_net), loss, functools.partial(torch.optim.SGD, lr=0.01)
    )
    term = loss.terms[method]
    assert term.stage_pairs and loss.uses_features and not loss.student_preact
    phases = [0, term.init_epochs] if isinstance(term, FactorTransfer) else [0]
    opt = system.configure_optimizers()["optimizer"]
    for epoch in phases:
        loss.set_epoch(epoch)
        opt.zero_grad(set_to_none=True)
        x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4,))
        _, parts = system.compute_losses(x, y, torch.arange(4))
        assert torch.isfinite(parts["loss"]) and torch.isfinite(parts[method])
        assert parts["loss"].item() == pytest.approx(
            parts["ce"].item() + loss.weights[method] * parts[method].item(), rel=1e-4
        )
        parts["loss"].backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0
        own = own_parameters(term)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in own)
        assert (not own and method in ("at", "sp", "rkd", "pkt", "nst")) or sum(
            p.grad.abs().sum() for p in own
        ) > 0
        assert not any(p.grad is not None for p in teacher_net.parameters())
        opt.step()
        # the method's own term alone (CE off) reaches the student, except while FT's
        # paraphraser initialises (which must leave the student untouched)
        opt.zero_grad(set_to_none=True)
        loss.weights["ce"] = 0.0
        system.compute_losses(x, y, torch.arange(4))[1]["loss"].backward()
        loss.weights["ce"] = 1.0
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if isinstance(term, FactorTransfer) and term.initialising:
            assert grads == []
        else:
            assert grads and all(torch.isfinite(g).all() for g in grads)
            assert sum(g.abs().sum() for g in grads) > 0
    params = loss.method_params()
    json.dumps(params)
    signature = inspect.signature(type(term).__init__).parameters
    assert set(params["terms"][method]) == set(signature) - {"self"}
    assert params["weights"][method] == loss.weights[method]
