"""CTKD and SDD wrap any logit loss: with the temperature frozen CTKD is its base at that
temperature, with one scale SDD is its base, gradient reversal flips and scales the temperature's
gradient by the curriculum λ, and SDD's region weights follow the paper on a case worked by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from kdlab.distill.ctkd import CTKD, cosine_ramp
from kdlab.distill.dkd import DKD
from kdlab.distill.logit import LogitKD
from kdlab.distill.nkd import NKD
from kdlab.distill.sdd import SDD
from kdlab.distill.wttm import WTTM
from kdlab.models.zoo import build
from kdlab.teachers import FrozenTeacher

BASES = {
    "kd": lambda: LogitKD(alpha=1.0, temperature=4.0),
    "dkd": lambda: DKD(alpha=1.0, beta=2.0, temperature=4.0, warmup=0),
    "nkd": lambda: NKD(gamma=1.5, temperature=1.0),
    "wttm": lambda: WTTM(gamma=0.25),
}


def logits(seed: int = 0, b: int = 6, c: int = 10) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g) * 2, torch.randn(b, c, generator=g) * 3, torch.arange(b)


def theta_for(temperature: float, t_start: float = 1.0, t_range: float = 20.0) -> float:
    """θ with t_start + t_range·sigmoid(θ) = temperature."""
    p = (temperature - t_start) / t_range
    return math.log(p / (1 - p))


@pytest.mark.parametrize("base", ["kd", "dkd", "nkd", "wttm"])
@pytest.mark.parametrize("temperature", [2.0, 7.0])
def test_ctkd_with_a_frozen_temperature_is_its_base_at_that_temperature(base, temperature):
    zs, zt, y = logits()
    ctkd = CTKD(BASES[base](), init=theta_for(temperature))
    ctkd.theta.requires_grad_(False)
    out = ctkd(zs, zt, y)
    expected = BASES[base]().sample_losses(zs, zt, y, temperature).mean()
    assert out["temperature"].item() == pytest.approx(temperature, rel=1e-5)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    if base == "kd":  # and that is the plain loss built with that temperature
        plain = LogitKD(alpha=1.0, temperature=temperature)(zs, zt, y)["loss"]
        assert out["loss"].item() == pytest.approx(plain.item(), rel=1e-5)
    if base == "dkd":
        plain = DKD(alpha=1.0, beta=2.0, temperature=temperature, warmup=0)(zs, zt, y)["loss"]
        assert out["loss"].item() == pytest.approx(plain.item(), rel=1e-5)


def test_the_curriculum_is_the_published_cosine_from_0_to_1_over_ten_epochs():
    # zhengli97/CTKD CosineDecay(max 0, min -1, loops 10) at their epoch e+1, negated
    published = [-(((math.cos(min(e + 1, 10) * math.pi / 10) + 1) / 2) * 1 - 1) for e in range(14)]
    ours = [cosine_ramp(e, 10, 0.0, 1.0) for e in range(14)]
    assert ours == pytest.approx(published, abs=1e-12)
    assert ours[0] == pytest.approx(0.02447, abs=1e-4) and ours[9:] == [1.0] * 5


@pytest.mark.parametrize("base", ["kd", "dkd"])
@pytest.mark.parametrize("epoch", [0, 3, 12])
def test_gradient_reversal_flips_the_temperature_gradient_scaled_by_lambda(base, epoch):
    zs, zt, y = logits(1)
    ctkd = CTKD(BASES[base](), init=0.3)
    ctkd.set_epoch(epoch)
    lam = cosine_ramp(epoch, 10, 0.0, 1.0)
    ctkd(zs, zt, y)["loss"].backward()
    reversed_grad = ctkd.theta.grad.item()
    # the same loss as a plain function of θ, differentiated without any reversal
    theta = torch.tensor(0.3, requires_grad=True)
    tau = 1.0 + 20.0 * torch.sigmoid(theta)
    BASES[base]().sample_losses(zs, zt, y, tau).mean().backward()
    plain_grad = theta.grad.item()
    assert plain_grad != 0.0
    assert reversed_grad == pytest.approx(-lam * plain_grad, rel=1e-5)
    assert math.copysign(1, reversed_grad) == -math.copysign(1, plain_grad)


def test_the_student_still_descends_the_loss_under_ctkd():
    zs, zt, y = logits(2)
    zs.requires_grad_(True)
    ctkd = CTKD(BASES["kd"](), init=0.0)
    ctkd(zs, zt, y)["loss"].backward()
    zs2 = zs.detach().clone().requires_grad_(True)
    BASES["kd"]().sample_losses(zs2, zt, y, 11.0).mean().backward()  # τ(0) = 1 + 20·0.5
    assert torch.allclose(zs.grad, zs2.grad, rtol=1e-5)


def test_instance_temperatures_come_one_per_sample_from_the_mlp():
    zs, zt, y = logits(3)
    ctkd = CTKD(BASES["dkd"](), mode="instance", hidden=8)
    ctkd.bind(build("resnet8", 10), None)
    tau = ctkd.temperatures(zs, zt)
    assert tau.shape == (6, 1) and bool(((tau > 1) & (tau < 21)).all())
    ctkd.set_epoch(20)
    ctkd(zs, zt, y)["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ctkd.mlp.parameters())


def test_ctkd_records_its_base_and_refuses_a_non_logit_base():
    params = CTKD(BASES["dkd"]()).method_params()
    assert params["base"] == {
        "alpha": 1.0,
        "beta": 2.0,
        "temperature": 4.0,
        "warmup": 0,
        "standardize": False,
    }
    assert params["mode"] == "global" and params["ramp"] == 10
    from kdlab.distill.base import CrossEntropy

    with pytest.raises(ValueError, match="logit loss"):
        CTKD(CrossEntropy())
    with pytest.raises(ValueError, match="mode"):
        CTKD(BASES["kd"](), mode="batch")


# -- SDD ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    teacher = FrozenTeacher(build("resnet14", 10))
    return build("resnet8", 10), teacher


def features(student, teacher, seed: int = 0):
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    s_logits, s_feats = student.forward_stages(x)
    t_logits, t_feats = teacher.predict(x, stages=True)
    return s_logits, t_logits, s_feats, t_feats


@pytest.mark.parametrize("base", ["kd", "dkd", "nkd"])
def test_sdd_with_one_scale_is_its_base_loss(pair, base):
    student, teacher = pair
    s_logits, t_logits, s_feats, t_feats = features(student, teacher)
    y = torch.tensor([0, 1, 2, 3])
    sdd = SDD(BASES[base](), scales=[1])
    sdd.bind(student, teacher)
    out = sdd(s_logits, t_logits, y, s_feats, t_feats)
    plain = BASES[base]()(s_logits, t_logits, y)["loss"]
    assert out["loss"].item() == pytest.approx(plain.item(), rel=1e-5)


class TinyHead(nn.Module):
    """A 'model' whose last map is given and whose classifier is a fixed linear map."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data.copy_(weight)

    def head_map(self, last: Tensor) -> Tensor:
        return last

    def classify(self, pooled: Tensor) -> Tensor:
        return self.linear(pooled)


def test_sdd_weights_complementary_regions_by_hand():
    """One image, a 2×2 map with 2 channels, 3 classes: regions 1×1 (global) and the four
    cells. Teacher classifier = identity on (channel 0, channel 1, 0)."""
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    t_map = torch.tensor([[[[4.0, 0.0], [1.0, 0.0]], [[0.0, 3.0], [0.0, 1.0]]]])  # [1, 2, 2, 2]
    s_map = torch.tensor([[[[1.0, 1.0], [0.0, 2.0]], [[0.5, 0.0], [1.0, 1.0]]]])
    y = torch.tensor([0])
    base = LogitKD(alpha=1.0, temperature=2.0)
    sdd = SDD(base, scales=[1, 2], complementary=2.0, stages=["s:t"])
    sdd.stage_pairs = (("s", "t"),)
    sdd._heads = {
        "student": (lambda m: m, TinyHead(w).classify),
        "teacher": (lambda m: m, TinyHead(w).classify),
    }
    out = sdd(torch.zeros(1, 3), torch.zeros(1, 3), y, {"s": s_map}, {"t": t_map})

    def region(m: Tensor, i: int | None) -> Tensor:  # logits of the global region / cell i
        v = m[0].mean(dim=(1, 2)) if i is None else m[0].flatten(1)[:, i]
        return torch.cat([v, torch.zeros(1)])[None]

    # teacher: global (1.25, 1.0, 0) → class 0 = label (right); cells: (4,0) right,
    # (0,3) wrong, (1,0) right, (0,1) wrong → weights 1, 1, 2, 1, 2
    weights = [1.0, 1.0, 2.0, 1.0, 2.0]
    regions = [None, 0, 1, 2, 3]
    kd = [base.sample_losses(region(s_map, i), region(t_map, i), y).item() for i in regions]
    expected = sum(wi * k for wi, k in zip(weights, kd, strict=True)) / 5
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["complementary_frac"].item() == pytest.approx(2 / 5)


def test_sdd_regions_use_the_models_own_classifier(pair):
    """The global region of the last map, through the model's head, is the model's logits."""
    student, teacher = pair
    s_logits, t_logits, s_feats, t_feats = features(student, teacher, 1)
    sdd = SDD(BASES["kd"](), scales=[1, 2, 4])
    sdd.bind(student, teacher)
    assert sdd.stage_pairs == (("layer3", "layer3"),)
    from kdlab.distill.sdd import region_logits

    regions = region_logits(student.head_map(s_feats["layer3"]), [1, 2, 4], student.classify)
    assert regions.shape == (21 * 4, 10)
    assert torch.allclose(regions[:4], s_logits, atol=1e-5)


@pytest.mark.parametrize("arch", ["wrn_16_2", "shufflev2", "mobilenetv2", "vgg8", "shufflev1"])
def test_every_zoo_head_reproduces_the_forward_and_leaves_bn_statistics_alone(arch):
    torch.manual_seed(0)
    net = build(arch, 10).train()
    x = torch.randn(4, 3, 32, 32)
    logits, feats = net.forward_stages(x)
    last = [s for s in net.stage_names if s not in ("stem", "pool")][-1]
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    pooled = net.head_map(feats[last]).mean(dim=(2, 3))
    assert torch.allclose(net.classify(pooled), logits, atol=1e-5)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())


def test_sdd_refuses_bad_scales_and_non_logit_bases():
    with pytest.raises(ValueError, match="scales"):
        SDD(BASES["kd"](), scales=[2, 4])
    with pytest.raises(ValueError, match="logit loss"):
        SDD(nn.Module())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: NKD(),
        lambda: WTTM(),
        lambda: CTKD(BASES["dkd"]()),
        lambda: CTKD(BASES["nkd"](), mode="instance"),
    ],
)
def test_the_losses_stay_float32_and_finite_under_bf16_autocast(make):
    loss = make()
    if isinstance(loss, CTKD):
        loss.bind(build("resnet8", 10), None)
    zs, zt, y = logits(4)
    zs = (zs * 20).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(zs, (zt * 20).bfloat16(), y)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(zs.grad.float()).all()
