"""Ensemble teacher logits = log of the mean of the members' softmax (the "Does KD really work?" replication)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.distill import LogitKD
from kdlab.teachers import ensemble_logits


def test_three_members_match_numpy() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=(3, 4, 5))
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    expected = np.log(p.mean(0))
    got = ensemble_logits(torch.tensor(z, dtype=torch.float32))
    assert got.dtype == torch.float32 and got.shape == (4, 5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    # it is a log-distribution: probabilities sum to one
    np.testing.assert_allclose(got.exp().sum(-1).numpy(), 1.0, rtol=1e-6)


def test_single_member_is_its_log_softmax() -> None:
    z = torch.randn(1, 6, 10) * 4
    torch.testing.assert_close(ensemble_logits(z), torch.log_softmax(z[0], -1))


def test_confident_members_stay_finite() -> None:
    """Large logits underflow a naive log(mean(softmax)); the log-space form must not."""
    z = torch.tensor([[[200.0, -200.0]], [[-200.0, 200.0]], [[200.0, -200.0]]])
    out = ensemble_logits(z)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.exp(), torch.tensor([[2 / 3, 1 / 3]]))


def test_ensemble_is_a_valid_teacher_for_logit_kd() -> None:
    """Softmax of the ensemble log-probabilities is the mean of the members' softmax."""
    z = torch.randn(3, 4, 5)
    mean_p = torch.softmax(z, -1).mean(0)
    s = torch.randn(4, 5)
    out = LogitKD(alpha=1.0, temperature=1.0)(
        s, ensemble_logits(z), torch.zeros(4, dtype=torch.long)
    )
    expected = (mean_p * (mean_p.log() - torch.log_softmax(s, -1))).sum(-1).mean()
    assert out["kd"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("shape", [(4, 5), (0, 4, 5), (2, 3, 4, 5)])
def test_bad_shapes_are_rejected(shape) -> None:
    with pytest.raises(ValueError, match=r"\[M, B, C\]"):
        ensemble_logits(torch.zeros(shape))
