"""The benchmark's relational methods (SP, CC, RKD, PKT): each loss against a value computed by
hand from its formula on a batch of 2–3 tiny feature vectors, gradients (student and own parts,
never the teacher), settings, stages and batches of one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from kdlab.distill.cc import CorrelationCongruence
from kdlab.distill.pkt import PKT
from kdlab.distill.rkd import RKD
from kdlab.distill.sp import SimilarityPreserving
from kdlab.models.base import StagedModel


class Toy(StagedModel):
    """A model whose stage outputs have the given shapes (only ``bind`` looks at it)."""

    def __init__(self, pool: int, last: tuple[int, ...] = (2, 2, 2)) -> None:
        super().__init__()
        self.arch, self.num_classes = "toy", 3
        self.shapes = {"stem": (1, 4, 4), "layer1": (2, 2, 2), "layer2": last, "pool": (pool,)}
        self.stage_names = tuple(self.shapes)
        self.w = nn.Parameter(torch.zeros(()))

    def forward_stages(self, x: Tensor):
        b = x.shape[0]
        return torch.zeros(b, 3), {k: torch.zeros(b, *s) + self.w for k, s in self.shapes.items()}


P = ["pool"]  # an explicit stage list: usable without bind (a role resolves in bind)


def t_(rows) -> Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def run(loss, fs: Tensor, ft: Tensor, stage: str = "pool") -> dict:
    b = fs.shape[0]
    return loss(
        torch.zeros(b, 3),
        torch.zeros(b, 3),
        torch.zeros(b, dtype=torch.long),
        {stage: fs},
        {stage: ft},
    )


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def check_gradients(loss, fs: Tensor, ft: Tensor, stage: str = "pool") -> None:
    fs, ft = fs.clone().requires_grad_(True), ft.clone().requires_grad_(True)
    run(loss, fs, ft, stage)["loss"].backward()
    assert fs.grad is not None and torch.isfinite(fs.grad).all() and fs.grad.abs().sum() > 0
    assert ft.grad is None, "teacher features must be detached"
    for p in loss.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


# -- SP ----------------------------------------------------------------------------------------
def test_sp_hand_computed():
    # student rows (1,0,0), (1,1,0): G_s = [[1,1],[1,2]] → rows (1,1)/√2, (1,2)/√5
    # teacher rows (1,0,1), (0,1,0) (as 1×1×3 maps): G_t = [[2,0],[0,1]] → rows (1,0), (0,1)
    fs = t_([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    ft = t_([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).view(2, 3, 1, 1)
    r2, r5 = math.sqrt(2), math.sqrt(5)
    frob = (1 / r2 - 1) ** 2 + (1 / r2) ** 2 + (1 / r5) ** 2 + (2 / r5 - 1) ** 2
    out = run(SimilarityPreserving(stages=P), fs, ft)
    assert out["loss"].item() == pytest.approx(frob / 4, rel=1e-6)
    check_gradients(SimilarityPreserving(stages=P), torch.randn(3, 4), torch.randn(3, 5))


def test_sp_defaults_to_the_last_map_and_sums_pairs():
    loss = SimilarityPreserving()
    loss.bind(Toy(4, last=(3, 2, 2)), Toy(6, last=(5, 1, 1)))
    assert loss.stage_pairs == (("layer2", "layer2"),)
    assert loss.method_params() == {"stages": "last"}
    both = SimilarityPreserving(stages=["layer1", "layer2"])
    torch.manual_seed(0)
    s = {"layer1": torch.randn(3, 2, 2, 2), "layer2": torch.randn(3, 3, 2, 2)}
    t = {"layer1": torch.randn(3, 4, 2, 2), "layer2": torch.randn(3, 5, 1, 1)}
    out = both(torch.zeros(3, 3), None, torch.zeros(3, dtype=torch.long), s, t)
    assert out["loss"].item() == pytest.approx(out["layer1"].item() + out["layer2"].item())


# -- CC ----------------------------------------------------------------------------------------
def test_cc_hand_computed_with_known_embeddings():
    loss = CorrelationCongruence(dim=2)
    loss.bind(Toy(3), Toy(2))
    assert loss.stage_pairs == (("pool", "pool"),)
    with torch.no_grad():
        loss.embed_s["pool"].weight.copy_(t_([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        loss.embed_t["pool"].weight.copy_(torch.eye(2))
        loss.embed_s["pool"].bias.zero_()
        loss.embed_t["pool"].bias.zero_()
    fs = t_([[1.0, 2.0, 9.0], [0.0, 1.0, 9.0], [2.0, 2.0, 9.0]])  # e_s = (1,2), (0,1), (2,2)
    ft = t_([[0.0, 0.0], [1.0, 1.0], [0.0, 3.0]])  # e_t
    # δ = (1,2), (1,0), (2,1); neighbours: 1·1 + 2·0 = 1, 1·2 + 0·1 = 2; mean = 1.5
    assert run(loss, fs, ft)["loss"].item() == pytest.approx(1.5)
    assert run(loss, fs[:1], ft[:1])["loss"].item() == 0.0  # no neighbour in a batch of one


def test_cc_gradients_settings_and_stages():
    loss = CorrelationCongruence(dim=5)
    loss.bind(Toy(3), Toy(4))
    assert (loss.embed_s["pool"].in_features, loss.embed_t["pool"].in_features) == (3, 4)
    torch.manual_seed(0)
    check_gradients(loss, torch.randn(4, 3), torch.randn(4, 4))  # both embeddings train
    assert loss.method_params() == {"dim": 5, "stages": "pool"}
    flat = CorrelationCongruence(stages="last")
    flat.bind(Toy(3, last=(2, 3, 3)), Toy(4, last=(1, 2, 2)))
    assert (flat.embed_s["layer2"].in_features, flat.embed_t["layer2"].in_features) == (18, 4)
    for bad in (0, 2.5, True, "128", None):
        with pytest.raises(ValueError, match="dim=.*integer >= 1"):
            CorrelationCongruence(dim=bad)
    with pytest.raises(RuntimeError, match="bind"):
        run(CorrelationCongruence(), torch.zeros(2, 3), torch.zeros(2, 3))


# -- RKD ---------------------------------------------------------------------------------------
S3 = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
T3 = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]


def rkd_by_hand() -> tuple[float, float]:
    """Distance and angle terms of S3 vs T3 (3 points in the plane)."""
    ds = {(0, 1): 1.0, (0, 2): 1.0, (1, 2): math.sqrt(2)}
    dt = {(0, 1): 1.0, (0, 2): 2.0, (1, 2): math.sqrt(5)}
    mu_s, mu_t = sum(ds.values()) / 3, sum(dt.values()) / 3  # mean over the pairs i ≠ j
    # 9 ordered pairs: the diagonal contributes 0, each unordered pair twice
    dist = 2 * sum(huber(ds[k] / mu_s - dt[k] / mu_t) for k in ds) / 9
    # cosine at each vertex: student 0, 1/√2, 1/√2; teacher 0, 1/√5, 2/√5. Of the 27 ordered
    # triples only (i, j, k) with j ≠ k, both ≠ i differ (two per vertex); j = k gives 1 vs 1
    cos_s = [0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)]
    cos_t = [0.0, 1 / math.sqrt(5), 2 / math.sqrt(5)]
    angle = 2 * sum(huber(a - b) for a, b in zip(cos_s, cos_t, strict=True)) / 27
    return dist, angle


def test_rkd_hand_computed_distance_and_angle():
    dist, angle = rkd_by_hand()
    out = run(RKD(stages=P), t_(S3), t_(T3))
    assert out["distance"].item() == pytest.approx(dist, rel=1e-5)
    assert out["angle"].item() == pytest.approx(angle, rel=1e-5)
    assert out["loss"].item() == pytest.approx(25 * dist + 50 * angle, rel=1e-5)
    only_d = run(RKD(distance_weight=2.0, angle_weight=0.0, stages=P), t_(S3), t_(T3))
    assert set(only_d) == {"loss", "distance"}
    assert only_d["loss"].item() == pytest.approx(2 * dist, rel=1e-5)
    # both potentials ignore the teacher's scale and position
    moved = run(RKD(stages=P), t_(S3), 7.0 * t_(T3) + 3.0)
    assert moved["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-4)


def test_rkd_gradients_settings_and_batch_of_one():
    torch.manual_seed(0)
    check_gradients(RKD(stages=P), torch.randn(4, 6), torch.randn(4, 3))
    one = run(RKD(stages=P), torch.randn(1, 6), torch.randn(1, 3))
    assert one["loss"].item() == 0.0 and torch.isfinite(one["loss"])
    loss = RKD()
    loss.bind(Toy(3), Toy(4))
    assert loss.stage_pairs == (("pool", "pool"),)
    assert loss.method_params() == {"distance_weight": 25.0, "angle_weight": 50.0, "stages": "pool"}
    for kwargs, match in [
        ({"distance_weight": -1}, "distance_weight=-1"),
        ({"angle_weight": float("nan")}, "angle_weight=nan"),
        ({"distance_weight": 0, "angle_weight": 0}, "at least one"),
    ]:
        with pytest.raises(ValueError, match=match):
            RKD(**kwargs)


# -- PKT ---------------------------------------------------------------------------------------
def test_pkt_hand_computed():
    # student (1,0), (1,1): cos = 1/√2 → K = [[1, a], [a, 1]], a = (1 + 1/√2)/2,
    #   P_s rows (1, a)/(1 + a)
    # teacher (1,0), (0,1): cos = 0 → K = [[1, ½], [½, 1]], P_t rows (2/3, 1/3)
    a = (1 + 1 / math.sqrt(2)) / 2
    ps_self, ps_other = 1 / (1 + a), a / (1 + a)
    row = 2 / 3 * math.log((2 / 3) / ps_self) + 1 / 3 * math.log((1 / 3) / ps_other)
    out = run(PKT(stages=P), t_([[1.0, 0.0], [1.0, 1.0]]), t_([[1.0, 0.0], [0.0, 1.0]]))
    assert out["loss"].item() == pytest.approx(2 * row / 4, rel=1e-5)
    same = run(PKT(stages=P), t_([[1.0, 0.0], [1.0, 1.0]]), t_([[2.0, 0.0], [3.0, 3.0]]))
    assert same["loss"].item() == pytest.approx(0.0, abs=1e-6)  # cosine ignores the scale


def test_pkt_gradients_and_stages():
    torch.manual_seed(0)
    check_gradients(PKT(stages=P), torch.randn(4, 6), torch.randn(4, 3))
    assert torch.isfinite(run(PKT(stages=P), torch.zeros(2, 3), torch.randn(2, 3))["loss"])
    loss = PKT()
    loss.bind(Toy(3), Toy(4))
    assert loss.stage_pairs == (("pool", "pool"),) and loss.method_params() == {"stages": "pool"}


# -- stages, every relational method --------------------------------------------------------------
@pytest.mark.parametrize("cls", [SimilarityPreserving, CorrelationCongruence, RKD, PKT])
def test_relational_methods_refuse_bad_stages(cls):
    with pytest.raises(ValueError, match="unknown stage.*available stages.*role"):
        cls(stages=["layer7"]).bind(Toy(3), Toy(4))
    with pytest.raises(ValueError, match=r"teacher: unknown stage\(s\) \['x'\]"):
        cls(stages="pool:x").bind(Toy(3), Toy(4))
    with pytest.raises(ValueError, match="stages=.*not allowed"):
        cls(stages={"pool": 1})
    with pytest.raises(ValueError, match="distinct"):
        cls(stages=[])
    plain = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="forward_stages"):
        cls().bind(plain, Toy(4))
    no_pool = Toy(3)
    no_pool.stage_names = ("stem", "layer1", "layer2")
    with pytest.raises(ValueError, match="pooled feature vector"):
        cls(stages="pool").bind(no_pool, Toy(4))
    with pytest.raises(RuntimeError, match="bind"):
        cls(stages="pool")(torch.zeros(2, 3), None, torch.zeros(2), {}, {})
