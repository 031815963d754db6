"""CRD and ReviewKD: values by hand from the papers' formulas, CRD's memory bank (update step by
step, negatives, bind_data, checkpointing), ReviewKD's ABF/HCL and channel settings,
gradients, and bad settings."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor, nn

from kdlab.distill.crd import CRD
from kdlab.distill.reviewkd import ABF, ReviewKD, hcl
from kdlab.models.base import StagedModel
from kdlab.models.zoo import resnet8x4, resnet32x4, shufflev1

# -- a stub pair whose pooled vectors are given directly ---------------------------------------


class Stub(StagedModel):
    """A staged model with a ``pool`` vector of ``dim`` features (only its shape matters)."""

    def __init__(self, dim: int, arch: str) -> None:
        super().__init__()
        self.arch, self.num_classes, self.stage_names = arch, 2, ("stem", "pool")
        self.head = nn.Linear(3, dim)

    def forward_stages(self, x: Tensor, preact: bool = False):
        pooled = self.head(x.mean(dim=(2, 3)))
        return pooled[:, :2], {"stem": x, "pool": pooled}


def normalize(v: list[float]) -> list[float]:
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


W_T = [[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]]  # the teacher head, bias B_T
B_T = [0.0, 0.5]
MEM_S = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]]
MEM_T = [[0.0, 1.0], [0.8, 0.6], [1.0, 0.0], [-0.6, 0.8]]
LABELS = [0, 0, 1, 1]
F_S = [[3.0, 4.0], [1.0, -1.0]]
F_T = [[1.0, 1.0, 1.0], [0.0, -1.0, 2.0]]
INDEX = [1, 2]


def small_crd() -> CRD:
    """feat_dim 2, K 2, τ 0.5, μ 0.5 on 4 training rows, heads and banks set by hand."""
    crd = CRD(feat_dim=2, nce_k=2, nce_t=0.5, nce_m=0.5)
    crd.bind(Stub(2, "s"), Stub(3, "t"))
    crd.bind_data(torch.tensor(LABELS))
    with torch.no_grad():
        crd.embed_s.linear.weight.copy_(torch.eye(2))
        crd.embed_s.linear.bias.zero_()
        crd.embed_t.linear.weight.copy_(torch.tensor(W_T))
        crd.embed_t.linear.bias.copy_(torch.tensor(B_T))
        crd.memory_s.copy_(torch.tensor(MEM_S))
        crd.memory_t.copy_(torch.tensor(MEM_T))
    return crd


def _crd_step(crd: CRD, f_s=F_S, f_t=F_T, index=INDEX):
    fs = torch.tensor(f_s, requires_grad=True)
    ft = torch.tensor(f_t, requires_grad=True)
    out = crd(
        fs.sum(1, keepdim=True),
        None,
        torch.tensor([0, 1]),
        {"pool": fs},
        {"pool": ft},
        index=torch.tensor(index),
    )
    return out, fs, ft


def crd_by_hand():
    """The CRD loss and the updated bank rows of the small case, from the paper's formulas."""
    v_s = [normalize(f) for f in F_S]
    v_t = [normalize([dot(w, f) + b for w, b in zip(W_T, B_T, strict=True)]) for f in F_T]
    n, k, tau, m = 4, 2, 0.5, 0.5
    # contrast sets: own row first, then the K = 2 rows of the other class (without
    # replacement: both of them; the NCE sum does not depend on their order)
    sets = [[1, 2, 3], [2, 0, 1]]

    def nce(anchors, bank):
        scores = [
            [math.exp(dot(bank[j], v) / tau) for j in rows]
            for v, rows in zip(anchors, sets, strict=True)
        ]
        z = n * sum(sum(r) for r in scores) / (len(scores) * len(scores[0]))
        noise = k / n
        total = 0.0
        for r in scores:
            p = [s / z for s in r]
            total += math.log(p[0] / (p[0] + noise + 1e-7))
            total += sum(math.log(noise / (q + noise + 1e-7)) for q in p[1:])
        return -total / len(scores), z

    nce_s, z_s = nce(v_s, MEM_T)  # student anchors against the teacher bank
    nce_t, z_t = nce(v_t, MEM_S)  # teacher anchors against the student bank

    def update(bank, vs):
        new = [row[:] for row in bank]
        for i, v in zip(INDEX, vs, strict=True):
            new[i] = normalize([m * a + (1 - m) * b for a, b in zip(bank[i], v, strict=True)])
        return new

    return nce_s, nce_t, (z_s, z_t), update(MEM_S, v_s), update(MEM_T, v_t)


def test_crd_loss_and_bank_update_by_hand() -> None:
    crd = small_crd()
    out, _, _ = _crd_step(crd)
    nce_s, nce_t, z, mem_s, mem_t = crd_by_hand()
    assert out["nce_s"].item() == pytest.approx(nce_s, rel=1e-5)
    assert out["nce_t"].item() == pytest.approx(nce_t, rel=1e-5)
    assert out["loss"].item() == pytest.approx(nce_s + nce_t, rel=1e-5)
    assert crd.z_norm.tolist() == pytest.approx(list(z), rel=1e-5)
    # rows 1 and 2 moved by the momentum update and re-normalised, rows 0 and 3 unchanged
    assert crd.memory_s.tolist() == [pytest.approx(r, abs=1e-6) for r in mem_s]
    assert crd.memory_t.tolist() == [pytest.approx(r, abs=1e-6) for r in mem_t]
    assert torch.equal(crd.memory_s[[0, 3]], torch.tensor(MEM_S)[[0, 3]])
    assert torch.equal(crd.memory_t[[0, 3]], torch.tensor(MEM_T)[[0, 3]])
    assert torch.allclose(crd.memory_s.norm(dim=1)[[1, 2]], torch.ones(2))
    # Z is fixed by the first batch and kept afterwards
    _crd_step(crd, f_s=[[0.1, 0.2], [5.0, 1.0]])
    assert crd.z_norm.tolist() == pytest.approx(list(z), rel=1e-5)


def test_crd_bank_is_not_updated_in_eval_mode() -> None:
    crd = small_crd().eval()
    _crd_step(crd)
    assert torch.equal(crd.memory_s, torch.tensor(MEM_S))
    assert torch.equal(crd.memory_t, torch.tensor(MEM_T))


def test_crd_negatives_are_drawn_as_documented() -> None:
    labels = torch.arange(40) % 4  # 10 rows per class: 30 rows of other classes each
    crd = CRD(feat_dim=4, nce_k=8)
    crd.bind_data(labels)
    index = torch.tensor([0, 5, 10, 39])
    torch.manual_seed(7)
    rows = crd.contrast_rows(index)
    torch.manual_seed(7)  # documented: multinomial over the other-class rows, no replacement
    allowed = (labels[None, :] != labels[index][:, None]).float()
    assert torch.equal(rows[:, 1:], torch.multinomial(allowed, 8, replacement=False))
    assert rows.shape == (4, 9) and torch.equal(rows[:, 0], index)  # own row is the positive
    assert (labels[rows[:, 1:]] != labels[index][:, None]).all()
    assert all(len(set(r.tolist())) == 8 for r in rows[:, 1:])  # no repeats
    torch.manual_seed(7)
    assert torch.equal(crd.contrast_rows(index), rows)  # deterministic given torch's RNG
    many = CRD(feat_dim=4, nce_k=50)  # more negatives than other-class rows: with replacement
    many.bind_data(labels)
    assert many.replacement and not crd.replacement
    drawn = many.contrast_rows(index)
    assert drawn.shape == (4, 51) and (labels[drawn[:, 1:]] != labels[index][:, None]).all()


def test_crd_needs_bind_data_and_index() -> None:
    crd = CRD(feat_dim=2, nce_k=2)
    crd.bind(Stub(2, "s"), Stub(3, "t"))
    with pytest.raises(RuntimeError, match="bind_data"):
        _crd_step(crd)
    crd.bind_data(torch.tensor(LABELS))
    fs, ft = torch.tensor(F_S), torch.tensor(F_T)
    with pytest.raises(ValueError, match="index"):
        crd(fs, None, torch.tensor([0, 1]), {"pool": fs}, {"pool": ft})
    with pytest.raises(RuntimeError, match="bind"):
        CRD()(fs, None, torch.tensor([0, 1]), {"pool": fs}, {"pool": ft}, index=torch.tensor([0]))


def test_crd_bank_is_checkpointed_and_restores() -> None:
    torch.manual_seed(0)
    crd = small_crd()
    _crd_step(crd)
    state = crd.state_dict()
    assert {"memory_s", "memory_t", "z_norm"} <= set(state) and "bank_labels" not in state
    torch.manual_seed(1)
    fresh = CRD(feat_dim=2, nce_k=2, nce_t=0.5, nce_m=0.5)
    fresh.bind(Stub(2, "s"), Stub(3, "t"))
    fresh.bind_data(torch.tensor(LABELS))  # set-up, then the checkpoint is restored
    assert not torch.equal(fresh.memory_s, crd.memory_s)
    fresh.load_state_dict(state)
    for name in ("memory_s", "memory_t", "z_norm"):
        assert torch.equal(getattr(fresh, name), getattr(crd, name))
    torch.manual_seed(3)
    a = _crd_step(crd)[0]["loss"]
    torch.manual_seed(3)
    b = _crd_step(fresh)[0]["loss"]
    assert torch.equal(a, b) and torch.equal(fresh.memory_s, crd.memory_s)
    # bind_data again with the same labels keeps the bank (a later set-up erases nothing)
    before = crd.memory_s.clone()
    crd.bind_data(torch.tensor(LABELS))
    assert torch.equal(crd.memory_s, before)
    crd.bind_data(torch.tensor([0, 1, 0, 1, 1]))  # another split: a new bank of its size
    assert crd.memory_s.shape == (5, 2)


def test_crd_gradients_reach_student_and_heads_not_teacher() -> None:
    crd = small_crd()
    out, fs, ft = _crd_step(crd)
    out["loss"].backward()
    assert fs.grad is not None and torch.isfinite(fs.grad).all() and fs.grad.abs().sum() > 0
    assert ft.grad is None
    for name, p in crd.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert not any(b.requires_grad for b in crd.buffers())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"feat_dim": 0}, "feat_dim"),
        ({"feat_dim": 1.5}, "feat_dim"),
        ({"nce_k": True}, "nce_k"),
        ({"nce_k": -3}, "nce_k"),
        ({"nce_t": 0.0}, "nce_t"),
        ({"nce_t": float("nan")}, "nce_t"),
        ({"nce_m": 1.0}, "nce_m"),
        ({"nce_m": -0.1}, "nce_m"),
        ({"stages": ["layer1", "layer2"]}, "stages"),
    ],
)
def test_crd_bad_settings(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        CRD(**kwargs)


def test_crd_bad_data_and_stages() -> None:
    with pytest.raises(ValueError, match="single class"):
        CRD().bind_data(torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="stage"):
        CRD(stages="body").bind(resnet8x4(), resnet8x4())
    with pytest.raises(ValueError, match="available"):
        CRD(stages="layer9").bind(resnet8x4(), resnet8x4())


def test_crd_method_params() -> None:
    crd = CRD(feat_dim=64, nce_k=4096, nce_t=0.1, nce_m=0.9)
    params = crd.method_params()
    assert params == {"feat_dim": 64, "nce_k": 4096, "nce_t": 0.1, "nce_m": 0.9, "stages": "pool"}
    json.dumps(params)


# -- ReviewKD ----------------------------------------------------------------------------------

S = 1.0 / math.sqrt(1.0 + 1e-5)  # an eval-mode BatchNorm with fresh statistics: x·S


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_abf_fusion_by_hand() -> None:
    """1 channel everywhere: reduce ×2, attention weights [[1, 0], [0, −1]] + bias [0, 0.5],
    expand a centred 3×3 kernel of 3 (both followed by a fresh eval-mode BN)."""
    abf = ABF(1, 1, 1, fuse=True).eval()
    with torch.no_grad():
        abf.reduce[0].weight.fill_(2.0)
        abf.attention[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]])[:, :, None, None])
        abf.attention[0].bias.copy_(torch.tensor([0.0, 0.5]))
        abf.expand[0].weight.zero_()
        abf.expand[0].weight[0, 0, 1, 1] = 3.0
    x = [[1.0, -1.0], [0.5, 2.0]]
    r = 0.7  # the deeper level's residual, 1×1, resized to 2×2 (nearest)
    out, fused = abf(torch.tensor(x)[None, None], torch.full((1, 1, 1, 1), r), (2, 2))
    for i in range(2):
        for j in range(2):
            xr = 2.0 * x[i][j] * S
            f = xr * sigmoid(xr) + r * sigmoid(-r + 0.5)
            assert fused[0, 0, i, j].item() == pytest.approx(f, rel=1e-5)
            assert out[0, 0, i, j].item() == pytest.approx(3.0 * f * S, rel=1e-5)
    # a larger teacher map: the fused map is resized (nearest) before the 3×3 conv
    out4, fused4 = abf(torch.tensor(x)[None, None], torch.full((1, 1, 1, 1), r), (4, 4))
    assert out4.shape == fused4.shape == (1, 1, 4, 4)
    assert torch.equal(fused4[0, 0, :2, :2], fused[0, 0, 0, 0].expand(2, 2))


def test_hcl_by_hand() -> None:
    """A 4×4 level (pyramid 2×2 and 1×1, weights 1, ½, ¼ over 1.75) + a 1×1 level (MSE)."""
    fs = [float(v) for v in range(16)]  # row-major 4×4
    ft = [0.0] * 16
    full = sum((a - b) ** 2 for a, b in zip(fs, ft, strict=True)) / 16
    blocks = [
        [fs[4 * (2 * i + a) + 2 * j + b] for a in (0, 1) for b in (0, 1)]
        for i in (0, 1)
        for j in (0, 1)
    ]
    two = sum((sum(blk) / 4) ** 2 for blk in blocks) / 4
    one = (sum(fs) / 16) ** 2
    level_a = (full + 0.5 * two + 0.25 * one) / 1.75
    level_b = (3.0 - 1.0) ** 2  # 1×1: no pyramid
    got = hcl(
        [torch.tensor(fs).view(1, 1, 4, 4), torch.full((1, 1, 1, 1), 3.0)],
        [torch.tensor(ft).view(1, 1, 4, 4), torch.full((1, 1, 1, 1), 1.0)],
    )
    assert got.item() == pytest.approx(level_a + level_b, rel=1e-6)


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    torch.manual_seed(0)
    return resnet32x4(100).eval()


def test_reviewkd_channels_and_shapes_follow_the_published_settings(teacher) -> None:
    torch.manual_seed(0)
    student = resnet8x4(100)
    loss = ReviewKD()
    loss.bind(student, teacher)
    assert loss.stage_pairs == (("layer1",) * 2, ("layer2",) * 2, ("layer3",) * 2, ("pool",) * 2)
    convs = [
        (a.reduce[0].in_channels, a.reduce[0].out_channels, a.expand[0].out_channels)
        for a in loss.abfs
    ]
    # ReviewKD build_review_kd for 'x4': in = out = [64, 128, 256, 256], mid = min(512, 256)
    assert convs == [(64, 256, 64), (128, 256, 128), (256, 256, 256), (256, 256, 256)]
    assert [a.attention is not None for a in loss.abfs] == [True, True, True, False]
    x = torch.randn(2, 3, 32, 32)
    _, s_feats = student.forward_stages(x, preact=True)
    with torch.no_grad():
        _, t_feats = teacher.forward_stages(x, preact=True)
    maps = [
        s_feats[s] if s != "pool" else s_feats[s][:, :, None, None] for s, _ in loss.stage_pairs
    ]
    outs = loss.fuse(maps, [(32, 32), (16, 16), (8, 8), (1, 1)])
    assert [tuple(o.shape[1:]) for o in outs] == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (256, 1, 1),
    ]
    cross = ReviewKD()
    cross.bind(shufflev1(100), teacher)  # published: in [240, 480, 960, 960], out x4's, mid 512
    assert [
        (a.reduce[0].in_channels, a.reduce[0].out_channels, a.expand[0].out_channels)
        for a in cross.abfs
    ] == [(240, 512, 64), (480, 512, 128), (960, 512, 256), (960, 512, 256)]


def test_reviewkd_warmup_gradients_and_teacher_untouched(teacher) -> None:
    torch.manual_seed(0)
    student = resnet8x4(100)
    loss = ReviewKD(warmup=3)
    loss.bind(student, teacher)
    x = torch.randn(2, 3, 32, 32)
    logits, s_feats = student.forward_stages(x, preact=True)
    t_logits, t_feats = teacher.forward_stages(x, preact=True)  # autograd on: must be detached
    factors = []
    for epoch in range(5):
        loss.set_epoch(epoch)
        out = loss(logits, t_logits, torch.tensor([0, 1]), s_feats, t_feats)
        factors.append(out["loss"].item() / out["hcl"].item())
    assert factors == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0], rel=1e-6)
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    for name, p in loss.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    conv = student.layer1[0].conv1.weight
    assert conv.grad is not None and conv.grad.abs().sum() > 0
    assert set(out) == {"loss", "hcl"} and loss.teacher_preact and not loss.student_preact


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"warmup": -1}, "warmup"),
        ({"warmup": "20"}, "warmup"),
        ({"max_mid_channels": 0}, "max_mid_channels"),
        ({"max_mid_channels": 2.5}, "max_mid_channels"),
        ({"stages": []}, "stages"),
    ],
)
def test_reviewkd_bad_settings(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        ReviewKD(**kwargs)


def test_reviewkd_bad_stages_and_use_before_bind(teacher) -> None:
    from kdlab.models.zoo import vgg8

    with pytest.raises(ValueError, match="stage"):  # 4 body stages against 3
        ReviewKD().bind(vgg8(100), teacher)
    with pytest.raises(ValueError, match="twice"):
        ReviewKD(stages=["body", "layer3"]).bind(resnet8x4(100), teacher)
    with pytest.raises(RuntimeError, match="bind"):
        ReviewKD()(torch.zeros(1, 2), None, torch.zeros(1), {}, {})
    loss = ReviewKD(stages=["layer2", "layer3:layer3", "pool"], warmup=0)
    loss.bind(resnet8x4(100), teacher)
    assert len(loss.abfs) == 3
    assert json.dumps(loss.method_params()) and loss.method_params()["stages"] == [
        "layer2",
        "layer3:layer3",
        "pool",
    ]
