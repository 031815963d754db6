"""NKD, WTTM and TTM against their papers' formulas, computed by hand with math on a tiny case;
logit standardisation composes with them as "z-score the rows first"."""

from __future__ import annotations

import math

import pytest
import torch

from kdlab.distill.dist import DIST
from kdlab.distill.dkd import DKD
from kdlab.distill.logit import LogitKD
from kdlab.distill.nkd import NKD
from kdlab.distill.wttm import WTTM

ZS = [[1.0, -0.5, 2.0, 0.3], [0.2, 0.1, -1.0, 1.5]]
ZT = [[2.5, -1.0, 0.5, 0.0], [-0.3, 0.8, 0.4, 2.2]]
Y = [0, 3]


def softmax(z: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def hand_nkd(zs, zt, y, gamma: float, t: float) -> float:
    """−p^t_y·log p^s_y − γ·T²·Σ_{c≠y} q^t_c log q^s_c, batch mean."""
    total = 0.0
    for s, tt, k in zip(zs, zt, y, strict=True):
        ps, pt = softmax(s), softmax(tt)
        target = -pt[k] * math.log(ps[k])
        qs = softmax([v for i, v in enumerate(s) if i != k], t)
        qt = softmax([v for i, v in enumerate(tt) if i != k], t)
        non = -sum(a * math.log(b) for a, b in zip(qt, qs, strict=True))
        total += target + gamma * t * t * non
    return total / len(zs)


def hand_wttm(zs, zt, gamma: float, weighted: bool) -> float:
    """U·KL(p^γ/Σp^γ ‖ softmax(z_s)) with U = Σ p^γ (TTM: U = 1), batch mean."""
    total = 0.0
    for s, tt in zip(zs, zt, strict=True):
        pt = softmax(tt)
        powered = [p**gamma for p in pt]
        u = sum(powered)
        tilde = [p / u for p in powered]
        ps = softmax(s)
        kl = sum(a * math.log(a / b) for a, b in zip(tilde, ps, strict=True))
        total += (u if weighted else 1.0) * kl
    return total / len(zs)


def zscore_rows(z: list[list[float]]) -> list[list[float]]:
    out = []
    for row in z:
        m = sum(row) / len(row)
        sd = math.sqrt(sum((v - m) ** 2 for v in row) / (len(row) - 1))
        out.append([(v - m) / (sd + 1e-7) for v in row])
    return out


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64).float()


@pytest.mark.parametrize(("gamma", "temp"), [(1.5, 1.0), (2.0, 3.0)])
def test_nkd_is_the_target_soft_ce_plus_the_normalised_non_target_ce(gamma, temp):
    out = NKD(gamma=gamma, temperature=temp)(t(ZS), t(ZT), torch.tensor(Y))
    assert out["loss"].item() == pytest.approx(hand_nkd(ZS, ZT, Y, gamma, temp), rel=1e-5)
    target_only = NKD(gamma=0.0, temperature=temp)(t(ZS), t(ZT), torch.tensor(Y))
    assert out["target"].item() == pytest.approx(target_only["loss"].item(), rel=1e-6)


def test_nkd_takes_the_argmax_of_soft_targets():
    soft = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.0, 0.2, 0.2, 0.6]])
    out = NKD()(t(ZS), t(ZT), soft)
    assert out["loss"].item() == pytest.approx(hand_nkd(ZS, ZT, Y, 1.5, 1.0), rel=1e-5)


@pytest.mark.parametrize("gamma", [0.2, 0.5])
@pytest.mark.parametrize("weighted", [True, False])
def test_wttm_and_ttm_match_the_power_transformed_teacher(gamma, weighted):
    out = WTTM(gamma=gamma, weighted=weighted)(t(ZS), t(ZT), torch.tensor(Y))
    assert out["loss"].item() == pytest.approx(hand_wttm(ZS, ZT, gamma, weighted), rel=1e-5)
    assert WTTM(gamma=gamma).temperature == pytest.approx(1 / gamma)


def test_wttm_weight_is_larger_for_a_smoother_teacher():
    sharp, smooth = [[9.0, 0.0, 0.0, 0.0]], [[1.0, 0.5, 0.2, 0.0]]
    zs = [[0.0, 0.0, 0.0, 0.0]]
    w_sharp = WTTM(gamma=0.2)(t(zs), t(sharp), torch.tensor([0]))["weight"].item()
    w_smooth = WTTM(gamma=0.2)(t(zs), t(smooth), torch.tensor([0]))["weight"].item()
    assert 1.0 < w_sharp < w_smooth < 4.0  # U ∈ [1, C^(1−γ)]


@pytest.mark.parametrize(
    "make",
    [
        lambda ls: NKD(gamma=1.5, temperature=2.0, standardize=ls),
        lambda ls: WTTM(gamma=0.3, standardize=ls),
        lambda ls: DKD(beta=2.0, temperature=2.0, warmup=0, standardize=ls),
        lambda ls: LogitKD(alpha=1.0, temperature=2.0, standardize=ls),
        lambda ls: DIST(beta=2.0, gamma=2.0, temperature=2.0, standardize=ls),
    ],
)
def test_logit_standardisation_is_the_loss_on_z_scored_rows(make):
    """ "X + LS" for every logit loss: the same loss on rows z-scored before the temperature."""
    with_ls = make(True)(t(ZS), t(ZT), torch.tensor(Y))["loss"].item()
    by_hand = make(False)(t(zscore_rows(ZS)), t(zscore_rows(ZT)), torch.tensor(Y))["loss"].item()
    plain = make(False)(t(ZS), t(ZT), torch.tensor(Y))["loss"].item()
    assert with_ls == pytest.approx(by_hand, rel=1e-5) and with_ls != pytest.approx(plain)


def test_sample_losses_average_to_the_loss_for_every_logit_loss():
    losses = [NKD(), WTTM(), DKD(warmup=0), LogitKD(alpha=0.7, temperature=3.0)]
    for loss in losses:
        rows = loss.sample_losses(t(ZS), t(ZT), torch.tensor(Y))
        full = loss(t(ZS), t(ZT), torch.tensor(Y))["loss"]
        assert rows.shape == (2,) and rows.mean().item() == pytest.approx(full.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (lambda: NKD(gamma=-1), "gamma"),
        (lambda: NKD(temperature=0), "temperature"),
        (lambda: WTTM(gamma=0), "gamma"),
        (lambda: WTTM(weighted="yes"), "weighted"),
        (lambda: NKD(standardize=1), "standardize"),
    ],
)
def test_bad_settings_are_named(make, bad):
    with pytest.raises(ValueError, match=bad):
        make()
