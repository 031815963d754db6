"""Logit KD and CE against the fixed definitions, hand-computed with math (not with the code under test)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdlab.distill import (
    CrossEntropy,
    FeatureKD,
    LogitKD,
    validate_alpha,
    validate_beta,
    validate_temperature,
)


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def _hand_kd(zs: list[list[float]], zt: list[list[float]], t: float) -> float:
    """T² · mean_b Σ_c p_t (log p_t − log p_s), written out with math only."""
    total = 0.0
    for s_row, t_row in zip(zs, zt, strict=True):
        ps, pt = _softmax(s_row, t), _softmax(t_row, t)
        total += sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt, strict=True))
    return t * t * total / len(zs)


def _hand_ce(zs: list[list[float]], y: list[int]) -> float:
    return sum(-math.log(_softmax(row, 1.0)[k]) for row, k in zip(zs, y, strict=True)) / len(y)


ZS = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
ZT = [[2.0, 0.5, -1.0], [1.0, 1.0, 2.0]]
Y = [1, 2]


def _run(alpha: float, t: float, zs=ZS, zt=ZT, y=Y) -> dict[str, torch.Tensor]:
    loss = LogitKD(alpha=alpha, temperature=t)
    return loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(y))


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_kd_term_matches_hand_computation(t: float) -> None:
    out = _run(0.5, t)
    assert out["kd"].item() == pytest.approx(_hand_kd(ZS, ZT, t), rel=1e-5)
    assert out["ce"].item() == pytest.approx(_hand_ce(ZS, Y), rel=1e-6)
    expected = 0.5 * _hand_kd(ZS, ZT, t) + 0.5 * _hand_ce(ZS, Y)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_temperature_squared_factor() -> None:
    kd1, kd2 = _run(1.0, 1.0)["kd"].item(), _run(1.0, 2.0)["kd"].item()
    # the T² factor: KD(T=2) = 4 · KL at T=2, not the bare KL
    bare_kl_t2 = _hand_kd(ZS, ZT, 2.0) / 4.0
    assert kd2 == pytest.approx(4.0 * bare_kl_t2, rel=1e-6)
    assert kd1 == pytest.approx(_hand_kd(ZS, ZT, 1.0), rel=1e-6)
    assert kd2 != pytest.approx(bare_kl_t2, rel=1e-3)


def test_alpha_zero_is_plain_cross_entropy_exactly() -> None:
    torch.manual_seed(0)
    zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    out = LogitKD(alpha=0.0, temperature=4.0)(zs, zt, y)
    assert torch.equal(out["loss"], F.cross_entropy(zs, y))
    assert torch.equal(CrossEntropy()(zs, None, y)["loss"], F.cross_entropy(zs, y))


def test_alpha_one_has_no_ce_term() -> None:
    torch.manual_seed(0)
    zs, zt = torch.randn(8, 10), torch.randn(8, 10)
    loss = LogitKD(alpha=1.0, temperature=3.0)
    a = loss(zs, zt, torch.zeros(8, dtype=torch.long))
    b = loss(zs, zt, torch.full((8,), 7, dtype=torch.long))
    assert torch.equal(a["loss"], b["loss"])
    assert not torch.equal(a["ce"], b["ce"])  # the targets did change, only CE saw them
    assert torch.equal(a["loss"], a["kd"])


def test_zero_kd_when_student_equals_teacher() -> None:
    z = torch.randn(4, 100) * 5
    out = LogitKD(alpha=0.7, temperature=4.0)(z, z.clone(), torch.zeros(4, dtype=torch.long))
    assert out["kd"].abs().item() < 1e-6


def test_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    zs = torch.randn(16, 100, dtype=torch.bfloat16, requires_grad=True)
    zt = torch.randn(16, 100, dtype=torch.bfloat16)
    y = torch.randint(0, 100, (16,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = LogitKD(alpha=0.5, temperature=4.0)(zs, zt, y)
    for term in out.values():
        assert term.dtype == torch.float32
        assert torch.isfinite(term)
    ref = LogitKD(alpha=0.5, temperature=4.0)(zs.detach().float(), zt.float(), y)
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-6)
    out["loss"].backward()
    assert zs.grad is not None and torch.isfinite(zs.grad).all()


@pytest.mark.parametrize("t", [1.0, 2.0, 5.0])
def test_gradient_matches_analytic_form(t: float) -> None:
    """∂L_kd/∂z_s = T·(softmax(z_s/T) − softmax(z_t/T))/B (see ``kd_kl``'s docstring)."""
    torch.manual_seed(1)
    b = 6
    zs = torch.randn(b, 5, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(b, 5, dtype=torch.float64)
    out = LogitKD(alpha=1.0, temperature=t)(zs, zt, torch.zeros(b, dtype=torch.long))
    out["loss"].backward()
    analytic = t * (torch.softmax(zs.detach() / t, -1) - torch.softmax(zt / t, -1)) / b
    torch.testing.assert_close(zs.grad, analytic, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: LogitKD(alpha=1.5, temperature=2.0), r"alpha=1\.5 is outside \[0, 1\]"),
        (lambda: LogitKD(alpha=-0.1, temperature=2.0), r"alpha=-0\.1 is outside"),
        (lambda: LogitKD(alpha=0.5, temperature=0), r"temperature=0 .*> 0"),
        (lambda: LogitKD(alpha=0.5, temperature=-1), r"temperature=-1 .*> 0"),
        (lambda: FeatureKD(alpha=0.5, beta=-1), r"beta=-1 .*>= 0"),
        (lambda: validate_alpha(True), "not a number"),
        (lambda: validate_alpha(None), "not a number"),
        (lambda: validate_temperature(float("nan")), "not a number"),
        (lambda: validate_beta(float("inf")), "beta=inf"),
        (lambda: validate_temperature("4"), "not a number"),
        (lambda: LogitKD(alpha=0.5, temperature=2.0, label_smoothing=1.0), "label_smoothing=1.0"),
    ],
)
def test_bad_hyper_parameters_are_rejected_clearly(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_validation_passes_good_values_through() -> None:
    assert validate_alpha(0) == 0.0 and validate_alpha(1) == 1.0
    assert validate_temperature(4) == 4.0
    assert validate_beta(0) == 0.0


def test_mismatched_class_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="same number of classes"):
        LogitKD(alpha=0.5, temperature=2.0)(torch.randn(2, 10), torch.randn(2, 100), torch.zeros(2))


def test_label_smoothing_applies_to_the_ce_term_only() -> None:
    torch.manual_seed(0)
    zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    plain = LogitKD(alpha=0.5, temperature=2.0)(zs, zt, y)
    smooth = LogitKD(alpha=0.5, temperature=2.0, label_smoothing=0.1)(zs, zt, y)
    torch.testing.assert_close(smooth["ce"], F.cross_entropy(zs, y, label_smoothing=0.1))
    torch.testing.assert_close(smooth["kd"], plain["kd"])
    smooth_ce = CrossEntropy(label_smoothing=0.1)(zs, None, y)["loss"]
    torch.testing.assert_close(smooth_ce, F.cross_entropy(zs, y, label_smoothing=0.1))
