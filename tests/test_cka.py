"""Linear CKA accumulated over a set, checked against the Gram-matrix (HSIC) form in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.metrics import LinearCKA


def _hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels and centring H."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float((k * l_).sum() / np.sqrt((k * k).sum() * (l_ * l_).sum()))


def _cka(x: torch.Tensor, y: torch.Tensor, reduce: str = "gap") -> float:
    m = LinearCKA(reduce=reduce)
    m.update(x, y)
    return m.compute().item()


@pytest.fixture
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 8, generator=g)
    y = x @ torch.randn(8, 5, generator=g) + 0.5 * torch.randn(60, 5, generator=g)
    return x, y


def test_matches_gram_form(xy) -> None:
    x, y = xy
    assert _cka(x, y) == pytest.approx(_hsic_cka(x.double().numpy(), y.double().numpy()), rel=1e-9)


def test_identical_features_give_one(xy) -> None:
    assert _cka(xy[0], xy[0]) == pytest.approx(1.0, abs=1e-12)


def test_invariant_to_orthogonal_transform_and_isotropic_scaling(xy) -> None:
    x, y = xy
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))
    base = _cka(x, y)
    assert _cka(x @ q, y) == pytest.approx(base, rel=1e-6)
    assert _cka(3.7 * x, 0.01 * y) == pytest.approx(base, rel=1e-6)
    # a generic (non-orthogonal) linear map does change it, so the checks above have teeth
    skew = torch.diag(torch.tensor([10.0, 1, 1, 1, 1, 1, 1, 0.1]))
    assert abs(_cka(x @ skew, y) - base) > 1e-3


def test_symmetric(xy) -> None:
    x, y = xy
    assert _cka(x, y) == pytest.approx(_cka(y, x), rel=1e-12)


def test_independent_features_near_zero() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(20000, 6, generator=g), torch.randn(20000, 6, generator=g)
    assert _cka(x, y) < 0.01


def test_accumulated_equals_concatenated_and_handles_offsets() -> None:
    g = torch.Generator().manual_seed(3)
    # a large common offset: centring from float64 sums must still be exact enough
    x = torch.randn(50, 4, 3, 3, generator=g) + 1000.0
    y = torch.randn(50, 6, 3, 3, generator=g) * 2 - 1000.0
    y[:, :4] += x
    m = LinearCKA()
    for lo, hi in [(0, 7), (7, 20), (20, 50)]:
        m.update(x[lo:hi], y[lo:hi])
    once = _cka(x, y)
    assert m.compute().item() == pytest.approx(
        once, rel=1e-7
    )  # offset 1e3: float64 cancellation ~1e-9
    ref = _hsic_cka(x.double().mean((2, 3)).numpy(), y.double().mean((2, 3)).numpy())
    assert once == pytest.approx(ref, rel=1e-6)
    # the mean of per-batch CKAs is a different (wrong) quantity
    per_batch = np.mean([_cka(x[a:b], y[a:b]) for a, b in [(0, 7), (7, 20), (20, 50)]])
    assert abs(per_batch - once) > 1e-4


def test_forward_and_reset_accumulate_correctly(xy) -> None:
    x, y = xy
    m = LinearCKA()
    m(x[:30], y[:30])
    m(x[30:], y[30:])
    assert m.compute().item() == pytest.approx(_cka(x, y), rel=1e-9)
    m.reset()
    m.update(x, x)
    assert m.compute().item() == pytest.approx(1.0)


def test_gap_and_flatten_reductions() -> None:
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(40, 3, 2, 2, generator=g), torch.randn(40, 5, 2, 2, generator=g)
    gap, flat = _cka(x, y, "gap"), _cka(x, y, "flatten")
    assert gap == pytest.approx(_cka(x.mean((2, 3)), y.mean((2, 3))), rel=1e-6)
    assert flat == pytest.approx(_cka(x.flatten(1), y.flatten(1)), rel=1e-12)
    assert abs(gap - flat) > 1e-3
    m = LinearCKA(reduce="flatten")
    m.update(x, y)
    assert m.xx.shape == (12, 12)  # D = C·H·W for "flatten"; C for "gap"
    m = LinearCKA()
    m.update(x, y)
    assert m.xx.shape == (3, 3) and m.yx.shape == (5, 3)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="reduce="):
        LinearCKA(reduce="mean")
    with pytest.raises(ValueError, match="cannot use x"):
        LinearCKA().update(torch.zeros(4, 3, 5), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="same inputs"):
        LinearCKA().update(torch.zeros(4, 3), torch.zeros(5, 3))
    m = LinearCKA()
    m.update(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="widths changed"):
        m.update(torch.randn(4, 5), torch.randn(4, 2))
