"""DKD and DIST: values by hand from the papers' formulas, DKD's warm-up and logit
standardisation, gradients, and bad settings."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kdlab.distill.dist import DIST
from kdlab.distill.dkd import DKD
from kdlab.distill.logit import kd_kl

# B = 2 samples, C = 3 classes
ZS = [[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]]
ZT = [[3.0, 0.0, -1.0], [-0.5, 0.5, 4.0]]
Y = [0, 2]


def softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def dkd_by_hand(zs, zt, y, alpha, beta, temperature):
    """Mean over the batch of T²·(α·KL(b_t‖b_s) + β·KL(q_t‖q_s)), from the DKD paper."""
    tckd = nckd = 0.0
    for rs, rt, c in zip(zs, zt, y, strict=True):
        ps = softmax([v / temperature for v in rs])
        pt = softmax([v / temperature for v in rt])
        tckd += kl([pt[c], 1 - pt[c]], [ps[c], 1 - ps[c]])
        qs = softmax([v / temperature for j, v in enumerate(rs) if j != c])
        qt = softmax([v / temperature for j, v in enumerate(rt) if j != c])
        nckd += kl(qt, qs)
    t2, b = temperature**2, len(zs)
    return t2 * tckd / b, t2 * nckd / b, t2 * (alpha * tckd + beta * nckd) / b


def zscore_by_hand(row: list[float]) -> list[float]:
    mean = sum(row) / len(row)
    std = math.sqrt(sum((v - mean) ** 2 for v in row) / (len(row) - 1))
    return [(v - mean) / (std + 1e-7) for v in row]


def _dkd(loss: DKD, zs=ZS, zt=ZT, y=Y, **kw):
    return loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(y), **kw)


def test_dkd_equals_the_formula_by_hand() -> None:
    loss = DKD(alpha=0.5, beta=2.0, temperature=2.0, warmup=0)
    out = _dkd(loss)
    tckd, nckd, total = dkd_by_hand(ZS, ZT, Y, 0.5, 2.0, 2.0)
    assert out["tckd"].item() == pytest.approx(tckd, rel=1e-5)
    assert out["nckd"].item() == pytest.approx(nckd, rel=1e-5)
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)
    assert total == pytest.approx(1.1670, abs=1e-3)  # worked out on paper as well
    assert set(out) == {"loss", "tckd", "nckd"} and out["loss"].dtype == torch.float32


def test_dkd_decomposes_classical_kd() -> None:
    """The DKD paper's identity KD = TCKD + (1 − p_t^teacher)·NCKD, per sample."""
    zs, zt = torch.tensor(ZS[:1]), torch.tensor(ZT[:1])
    out = DKD(alpha=1.0, beta=1.0, temperature=3.0, warmup=0)(zs, zt, torch.tensor(Y[:1]))
    p_target = torch.softmax(zt / 3.0, dim=1)[0, Y[0]].item()
    expected = out["tckd"] + (1 - p_target) * out["nckd"]
    assert kd_kl(zs, zt, 3.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_dkd_soft_targets_use_their_argmax() -> None:
    loss = DKD(alpha=1.0, beta=8.0, temperature=4.0, warmup=0)
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6]])  # MixUp: argmax = Y
    assert torch.equal(_dkd(loss)["loss"], loss(torch.tensor(ZS), torch.tensor(ZT), soft)["loss"])


def test_dkd_warmup_epoch_by_epoch() -> None:
    """Factor min((e + 1)/warmup, 1) for 0-based e = mdistiller's min(epoch/warmup, 1)."""
    loss = DKD(alpha=1.0, beta=8.0, temperature=4.0, warmup=4)
    full = dkd_by_hand(ZS, ZT, Y, 1.0, 8.0, 4.0)[2]
    expected = [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    for epoch, factor in enumerate(expected):
        loss.set_epoch(epoch)
        assert loss.warmup_weight == factor
        assert _dkd(loss)["loss"].item() == pytest.approx(factor * full, rel=1e-5)
    published = DKD(warmup=20)  # the benchmark's 20 epochs: 1/20 in the first, 1 from the 20th
    factors = []
    for epoch in (0, 1, 18, 19, 100):
        published.set_epoch(epoch)
        factors.append(published.warmup_weight)
    assert factors == [0.05, 0.1, 0.95, 1.0, 1.0]
    no_warmup = DKD(warmup=0)
    assert no_warmup.warmup_weight == 1.0


def test_dkd_standardize_z_scores_both_logits_before_the_temperature() -> None:
    loss = DKD(alpha=1.0, beta=8.0, temperature=2.0, warmup=0, standardize=True)
    zs = [zscore_by_hand(r) for r in ZS]
    zt = [zscore_by_hand(r) for r in ZT]
    tckd, nckd, total = dkd_by_hand(zs, zt, Y, 1.0, 8.0, 2.0)
    out = _dkd(loss)
    assert out["tckd"].item() == pytest.approx(tckd, rel=1e-5)
    assert out["nckd"].item() == pytest.approx(nckd, rel=1e-5)
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)
    plain = DKD(alpha=1.0, beta=8.0, temperature=2.0, warmup=0)
    assert _dkd(plain)["loss"].item() != pytest.approx(total, rel=1e-3)
    # standardised, the loss ignores each row's offset and scale; plain DKD does not
    moved = [[3.0 * v + 5.0 for v in r] for r in ZS]
    assert _dkd(loss, zs=moved)["loss"].item() == pytest.approx(total, rel=1e-4)
    assert _dkd(plain, zs=moved)["loss"].item() != pytest.approx(_dkd(plain)["loss"].item())


def test_dkd_gradients_reach_the_student_not_the_teacher() -> None:
    zs = torch.tensor(ZS, requires_grad=True)
    zt = torch.tensor(ZT, requires_grad=True)
    DKD(warmup=0)(zs, zt, torch.tensor(Y))["loss"].backward()
    assert zs.grad is not None and torch.isfinite(zs.grad).all() and zs.grad.abs().sum() > 0
    assert zt.grad is None


def pearson_by_hand(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum((x - ma) ** 2 for x in a))
    nb = math.sqrt(sum((y - mb) ** 2 for y in b))
    return num / (na * nb + 1e-8)


def dist_by_hand(zs, zt, beta, gamma, tau):
    ys = [softmax([v / tau for v in r]) for r in zs]
    yt = [softmax([v / tau for v in r]) for r in zt]
    rows = [pearson_by_hand(a, b) for a, b in zip(ys, yt, strict=True)]
    cols = [pearson_by_hand([r[c] for r in ys], [r[c] for r in yt]) for c in range(len(ys[0]))]
    inter = tau**2 * (1 - sum(rows) / len(rows))
    intra = tau**2 * (1 - sum(cols) / len(cols))
    return inter, intra, beta * inter + gamma * intra


DIST_ZS = [[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [0.0, 1.0, -2.0]]
DIST_ZT = [[3.0, 0.0, -1.0], [-0.5, 0.5, 4.0], [1.0, 2.0, 0.0]]


def test_dist_equals_the_formula_by_hand() -> None:
    loss = DIST(beta=2.0, gamma=3.0, temperature=2.0)
    out = loss(torch.tensor(DIST_ZS), torch.tensor(DIST_ZT), torch.tensor([0, 1, 2]))
    inter, intra, total = dist_by_hand(DIST_ZS, DIST_ZT, 2.0, 3.0, 2.0)
    assert out["inter"].item() == pytest.approx(inter, rel=1e-5)
    assert out["intra"].item() == pytest.approx(intra, rel=1e-5)
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)
    assert set(out) == {"loss", "inter", "intra"}


def test_dist_is_zero_for_a_linearly_related_student_and_ignores_targets() -> None:
    zt = torch.tensor(DIST_ZT)
    loss = DIST(beta=1.0, gamma=1.0, temperature=1.0)
    same = loss(zt.clone(), zt, torch.tensor([0, 0, 0]))
    assert same["loss"].item() == pytest.approx(0.0, abs=1e-5)
    a = loss(torch.tensor(DIST_ZS), zt, torch.tensor([0, 1, 2]))["loss"]
    b = loss(torch.tensor(DIST_ZS), zt, torch.tensor([[0.5, 0.5, 0.0]] * 3))["loss"]
    assert torch.equal(a, b)


def test_dist_gradients_reach_the_student_not_the_teacher() -> None:
    zs = torch.tensor(DIST_ZS, requires_grad=True)
    zt = torch.tensor(DIST_ZT, requires_grad=True)
    DIST(beta=2.0, gamma=2.0, temperature=4.0)(zs, zt, torch.tensor([0, 1, 2]))["loss"].backward()
    assert zs.grad is not None and torch.isfinite(zs.grad).all() and zs.grad.abs().sum() > 0
    assert zt.grad is None


def test_method_params_are_the_settings_used() -> None:
    dkd = DKD(alpha=1, beta=6, temperature=4, warmup=20, standardize=True)
    assert dkd.method_params() == {
        "alpha": 1.0,
        "beta": 6.0,
        "temperature": 4.0,
        "warmup": 20,
        "standardize": True,
    }
    dist = DIST(beta=2, gamma=2, temperature=4)
    assert dist.method_params() == {
        "beta": 2.0,
        "gamma": 2.0,
        "temperature": 4.0,
        "standardize": False,
    }
    json.dumps([dkd.method_params(), dist.method_params()])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": -1.0},
        {"alpha": True},
        {"beta": float("nan")},
        {"beta": "8"},
        {"temperature": 0},
        {"temperature": float("inf")},
        {"warmup": -1},
        {"warmup": 2.5},
        {"standardize": "yes"},
    ],
)
def test_dkd_bad_settings(kwargs) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        DKD(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"beta": -0.5}, {"gamma": "x"}, {"gamma": float("inf")}, {"temperature": -4}]
)
def test_dist_bad_settings(kwargs) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        DIST(**kwargs)


def test_mismatched_logits_raise() -> None:
    with pytest.raises(ValueError, match="same shape"):
        DKD()(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="same shape"):
        DIST()(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="teacher logits"):
        DKD()(torch.zeros(2, 3), None, torch.tensor([0, 1]))
