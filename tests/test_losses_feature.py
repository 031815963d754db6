"""Feature KD: supported pairs, hand-computed terms, errors, and the clipping bug."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from kdlab.distill import FeatureKD
from kdlab.models.base import StagedModel
from kdlab.models.preresnet import PreResNet, preresnet20
from kdlab.models.resnet import resnet18, resnet34, resnet50, resnet101

BASIC = (64, 128, 256, 512)  # BasicBlock ResNet stage widths
BOTTLENECK = (256, 512, 1024, 2048)  # Bottleneck ResNet stage widths (expansion 4)
STAGES = ("layer1", "layer2", "layer3", "layer4")


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "r18": resnet18(),
        "r34": resnet34(),
        "r50": resnet50().eval(),
        "r101": resnet101().eval(),  # built once for the module
    }


def _distil_step(loss: FeatureKD, student: nn.Module, teacher: nn.Module, batch: int = 2):
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    s_logits, s_feats = student.forward_stages(x)
    t_logits, t_feats = teacher.forward_stages(x)  # with autograd on: the loss must detach
    out = loss(s_logits, t_logits, y, s_feats, t_feats)
    out["loss"].backward()
    return out


@pytest.mark.parametrize(
    ("t", "s", "t_ch", "s_ch"),
    [
        ("r34", "r18", BASIC, BASIC),
        ("r50", "r18", BOTTLENECK, BASIC),
        ("r50", "r34", BOTTLENECK, BASIC),
        ("r101", "r34", BOTTLENECK, BASIC),
    ],
)
def test_supported_resnet_pairs(nets, t, s, t_ch, s_ch) -> None:
    student, teacher = nets[s], nets[t]
    student.zero_grad(set_to_none=True)
    loss = FeatureKD(alpha=0.5, beta=0.5)
    loss.bind(student, teacher)
    assert set(loss.projections) == set(STAGES)
    for name, cin, cout in zip(STAGES, s_ch, t_ch, strict=True):
        conv = loss.projections[name]
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (cin, cout, (1, 1))
        assert conv.bias is None
    out = _distil_step(loss, student, teacher)
    assert set(out) == {"loss", "ce", "kd", "mse", "cos", "task"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.values())
    assert out["task"].item() == pytest.approx(0.5 * out["ce"].item(), rel=1e-6)
    assert out["kd"].item() == pytest.approx(out["mse"].item() + 0.5 * out["cos"].item(), rel=1e-5)
    assert all(p.grad is not None for p in loss.parameters())
    assert all(p.grad is None for p in teacher.parameters())  # teacher features are detached


def test_preresnet20_self_distillation_and_subsets() -> None:
    torch.manual_seed(0)
    student, teacher = preresnet20(), preresnet20().eval()
    loss = FeatureKD(alpha=1.0, beta=0.0, stages=["layer1", "layer2", "layer3"])
    loss.bind(student, teacher)
    assert [loss.projections[n].out_channels for n in loss.stages] == [16, 32, 64]
    out = _distil_step(loss, student, teacher)
    assert torch.equal(out["loss"], out["kd"])
    assert out["kd"].item() == pytest.approx(out["mse"].item(), rel=1e-6)  # β = 0
    subset = FeatureKD(alpha=0.5, stages=("layer3",))
    subset.bind(student, teacher)
    assert list(subset.projections) == ["layer3"] and subset.stages == ("layer3",)
    assert set(_distil_step(subset, student, teacher)) == {"loss", "ce", "kd", "mse", "cos", "task"}


class Probe(StagedModel):
    """A model whose stage outputs have fixed, chosen shapes (for ``bind``'s dry run)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.arch, self.num_classes = "probe", 3
        self.stage_names = tuple(shapes)
        self.shapes = shapes

    def forward_stages(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        b = x.shape[0]
        return torch.zeros(b, 3), {n: torch.zeros(b, *s) for n, s in self.shapes.items()}


def _np_pool(f: np.ndarray, out: int) -> np.ndarray:
    """Adaptive average pooling over H and W written out (bins floor(i·n/o) .. ceil((i+1)·n/o))."""
    n = f.shape[-1]
    bins = [(i * n // out, -(-(i + 1) * n // out)) for i in range(out)]
    return np.stack(
        [np.stack([f[..., a:b, c:d].mean(axis=(-2, -1)) for c, d in bins], -1) for a, b in bins], -2
    )


def test_terms_match_hand_computation() -> None:
    s_shapes = {"a": (2, 4, 4), "b": (3, 2, 2), "c": (1, 3, 3)}
    t_shapes = {"a": (3, 2, 2), "b": (2, 2, 2), "c": (2, 2, 2)}  # pool 4→2, equal, 3→2
    loss = FeatureKD(alpha=0.25, beta=0.7, stages=("a", "b", "c"))
    loss.bind(Probe(s_shapes), Probe(t_shapes))
    rng = np.random.default_rng(0)
    mse, cos, s_feats, t_feats = [], [], {}, {}
    for name in ("a", "b", "c"):
        (cs, hs, _), (ct, ht, _) = s_shapes[name], t_shapes[name]
        w = rng.normal(size=(ct, cs))
        fs, ft = rng.normal(size=(2, cs, hs, hs)), rng.normal(size=(2, ct, ht, ht))
        with torch.no_grad():
            loss.projections[name].weight.copy_(torch.tensor(w)[:, :, None, None])
        s_feats[name], t_feats[name] = torch.tensor(fs).float(), torch.tensor(ft).float()
        proj = np.einsum("oc,bchw->bohw", w, _np_pool(fs, min(hs, ht)))
        mse.append(((proj - ft) ** 2).mean())
        gs, gt = proj.mean(axis=(2, 3)), ft.mean(axis=(2, 3))
        c = (gs * gt).sum(1) / (np.linalg.norm(gs, axis=1) * np.linalg.norm(gt, axis=1))
        cos.append((1 - c).mean())
    logits, y = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]), torch.tensor([0, 2])
    out = loss(logits, None, y, s_feats, t_feats)
    kd = np.mean(mse) + 0.7 * np.mean(cos)
    ce = torch.nn.functional.cross_entropy(logits, y).item()
    assert out["mse"].item() == pytest.approx(np.mean(mse), rel=1e-5)
    assert out["cos"].item() == pytest.approx(np.mean(cos), rel=1e-5)
    assert out["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.25 * kd + 0.75 * ce, rel=1e-5)


def test_unknown_stage_and_impossible_pairings_are_clear_errors() -> None:
    student, teacher = preresnet20(), preresnet20()
    with pytest.raises(ValueError, match=r"student.*'layer4'.*available stages.*layer3"):
        FeatureKD(alpha=0.5).bind(student, teacher)  # default stages include layer4
    with pytest.raises(ValueError, match="teacher.*unknown stage"):
        FeatureKD(alpha=0.5, stages=("a",)).bind(Probe({"a": (2, 4, 4)}), teacher)
    with pytest.raises(ValueError, match="feature KD needs a single teacher"):
        FeatureKD(alpha=0.5, stages=("layer1",)).bind(student, nn.ModuleList([teacher]))
    with pytest.raises(ValueError, match="cannot be aligned"):
        FeatureKD(alpha=0.5, stages=("a",)).bind(Probe({"a": (2, 4, 4)}), Probe({"a": (8,)}))
    with pytest.raises(RuntimeError, match="bind"):
        FeatureKD(alpha=0.5)(torch.zeros(1, 3), None, torch.zeros(1, dtype=torch.long), {}, {})


def test_clipping_must_cover_projections_regression() -> None:
    """The studies' bug: clipping the student alone leaves the projections unclipped.

    The projections are trained parameters of the loss, not of the student. If clipping only
    sees ``student.parameters()``, the projection gradients (large early in training, since
    teacher features are far from projected student features) keep their full size and the
    projections take steps far beyond max_norm = 1.0, which changed the Feature-KD vs Logit-KD
    comparison. Clipping the union bounds every trained parameter's step together.
    """
    torch.manual_seed(0)
    student = preresnet20()
    teacher = PreResNet(widths=(32, 64, 128)).eval()
    loss = FeatureKD(alpha=0.5, beta=0.5, stages=("layer1", "layer2", "layer3"))
    loss.bind(student, teacher)
    x = torch.randn(4, 3, 32, 32)
    s_logits, s_feats = student.forward_stages(x)
    t_logits, t_feats = teacher.forward_stages(x)
    (
        loss(s_logits, t_logits, torch.zeros(4, dtype=torch.long), s_feats, t_feats)["loss"] * 1e3
    ).backward()
    proj, stud = list(loss.parameters()), list(student.parameters())

    def norm(params) -> float:
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item()

    assert norm(proj) > 10.0  # far above the clip norm
    saved = [p.grad.clone() for p in stud + proj]

    torch.nn.utils.clip_grad_norm_(stud + proj, 1.0)  # the fix: clip the union
    assert norm(stud + proj) <= 1.0 + 1e-6

    for p, g in zip(stud + proj, saved, strict=True):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(stud, 1.0)  # the published bug: student only
    assert norm(stud) <= 1.0 + 1e-6
    assert norm(proj) > 1.0
