"""The CRD, DKD, DIST and ReviewKD configs build from their yaml, bind to benchmark pairs
(resnet32x4 → resnet8x4 and a cross-architecture pair) and train one step through the
Distiller: finite loss, finite non-zero gradients on the student and on the method's own
parameters, JSON-serialisable settings."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kdlab.distill.combine import Combined
from kdlab.models.zoo import build
from kdlab.systems import Distiller
from kdlab.teachers import FrozenTeacher
from kdlab.utils.method_params import label, loss_tree, tag

CONF = Path(__file__).resolve().parents[1] / "conf" / "distill"
N_TRAIN = 200  # training rows of the memory bank (2 per class)
PAIRS = {  # method → (teacher, student) pairs, the benchmark's and a cross-architecture one
    "crd": [("resnet32x4", "resnet8x4"), ("resnet32x4", "shufflev1")],
    "dkd": [("resnet32x4", "resnet8x4"), ("vgg13", "mobilenetv2")],
    "dist": [("resnet32x4", "resnet8x4"), ("vgg13", "mobilenetv2")],
    "reviewkd": [("resnet32x4", "resnet8x4"), ("vgg13", "mobilenetv2")],
}
CASES = [(m, t, s) for m, pairs in PAIRS.items() for t, s in pairs]


@pytest.fixture(scope="module")
def teachers() -> dict[str, FrozenTeacher]:
    torch.manual_seed(0)
    return {arch: FrozenTeacher(build(arch, 100)) for arch in ("resnet32x4", "vgg13")}


def build_loss(method: str) -> Combined:
    root = OmegaConf.create(
        {"label_smoothing": 0.0, "distill": OmegaConf.load(CONF / f"{method}.yaml")}
    )
    if method == "crd":
        root.distill.terms.crd.nce_k = 16  # small for speed (published 16384)
    return instantiate(root.distill)


def test_configs_carry_the_published_weights() -> None:
    weights = {m: dict(build_loss(m).weights) for m in PAIRS}
    assert weights == {
        "crd": {"ce": 1.0, "kd": 0.0, "crd": 0.8},
        "dkd": {"ce": 1.0, "kd": 0.0, "dkd": 1.0},
        "dist": {"ce": 1.0, "kd": 0.0, "dist": 1.0},
        "reviewkd": {"ce": 1.0, "kd": 0.0, "reviewkd": 5.0},
    }
    dkd = build_loss("dkd").terms["dkd"].method_params()
    assert dkd == {
        "alpha": 1.0,
        "beta": 8.0,
        "temperature": 4.0,
        "warmup": 20,
        "standardize": False,
    }
    crd = build_loss("crd").terms["crd"].method_params()
    assert crd == {"feat_dim": 128, "nce_k": 16, "nce_t": 0.07, "nce_m": 0.5, "stages": "pool"}


@pytest.mark.parametrize(("method", "teacher_arch", "student_arch"), CASES)
def test_one_training_step_from_the_config(teachers, method, teacher_arch, student_arch) -> None:
    torch.manual_seed(0)
    loss = build_loss(method)
    student = build(student_arch, 100)
    system = Distiller(
        student, teachers[teacher_arch], loss, optimizer=functools.partial(torch.optim.SGD, lr=0.01)
    )
    loss.bind_data(torch.arange(N_TRAIN) % 100)
    loss.set_epoch(0)
    own = list(loss.terms[method].parameters())
    assert bool(own) == (method in ("crd", "reviewkd"))
    opt = system.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in own)

    system.train()
    x = torch.randn(4, 3, 32, 32)
    index = torch.tensor([3, 50, 101, 177])
    _, terms = system.compute_losses(x, index % 100, index)
    assert torch.isfinite(terms["loss"]) and method in terms
    opt.zero_grad()
    terms["loss"].backward()
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    for p in own:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in system.teacher.parameters())
    before = [p.detach().clone() for p in own]
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, own, strict=True))

    params = loss.method_params()
    json.dumps(params)
    tree = loss_tree(loss)
    assert tag(tree) and label(tree)
    if method == "crd":  # the bank travels with the system's checkpoint
        assert "criterion.terms.crd.memory_s" in system.state_dict()
