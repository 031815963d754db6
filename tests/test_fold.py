"""BatchNorm folding: the folded teacher computes the same function as the original in eval mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlab.models.fold import fold_batchnorm
from kdlab.models.preresnet import preresnet20
from kdlab.models.resnet import resnet18, resnet50


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running stats and affine params, so that folding them wrong shows up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return model.eval()


def _bn_names(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def _assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = b.abs().max().clamp_min(1e-6)
    assert ((a - b).abs().max() / scale).item() < 1e-4


BUILDS = {"resnet18": (resnet18, 10), "resnet50": (resnet50, 10), "preresnet20": (preresnet20, 100)}


@pytest.fixture(scope="module", params=list(BUILDS))
def pair(request) -> tuple[nn.Module, nn.Module, int]:
    """(original with random BN stats, folded copy, num_classes), built once per architecture."""
    build, num_classes = BUILDS[request.param]
    torch.manual_seed(0)
    model = _randomise_bn(build(num_classes=num_classes))
    return model, fold_batchnorm(model), num_classes


def test_folded_outputs_equal_unfolded(pair):
    model, folded, num_classes = pair
    # 16×16 keeps the ResNet-50 forward cheap on CPU; every stage still has spatial extent
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, feats = model.forward_stages(x)
        f_logits, f_feats = folded.forward_stages(x)
    assert f_logits.shape == (2, num_classes)
    _assert_close(f_logits, logits)
    assert f_feats.keys() == feats.keys()
    for name in feats:
        _assert_close(f_feats[name], feats[name])
    assert not folded.training
    assert not any(p.requires_grad for p in folded.parameters())


def _expected_bns_left(arch: str) -> set[str]:
    if arch != "preresnet20":
        return set()  # post-activation ResNets: every BN directly follows a conv
    # pre-activation: each block's bn1 reads the block input (shared with the residual path)
    # and the final bn reads the last residual sum, so only each block's bn2 can be folded
    blocks = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    return {f"{b}.bn1" for b in blocks} | {"bn"}


def test_only_unfoldable_batchnorms_are_left(pair):
    model, folded, _ = pair
    assert len(_bn_names(model)) > len(_expected_bns_left(model.arch))  # something was folded
    assert _bn_names(folded) == _expected_bns_left(model.arch)


def test_original_model_is_unchanged():
    model = _randomise_bn(resnet18()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    assert len(_bn_names(model)) == 20


class _Untraceable(nn.Module):
    """Data-dependent control flow defeats torch.fx; the Sequential pairs must still fold."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head_bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.head_bn(y) if y.sum() > 0 else -self.head_bn(y)


def test_untraceable_model_folds_sequential_pairs_only():
    model = _randomise_bn(_Untraceable())
    folded = fold_batchnorm(model)
    assert _bn_names(folded) == {"head_bn"}
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _assert_close(folded(x), model(x))
