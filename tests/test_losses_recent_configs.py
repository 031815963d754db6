"""The NKD, WTTM, CTKD and SDD configs compose through Hydra (modifiers with any base from
``distill_base``), carry the published settings, and train one Distiller step on benchmark pairs:
finite loss, finite gradients on the student and on the method's own parameters, which the
optimiser holds; results record the wrapped loss and its settings."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from kdlab import CONF_DIR
from kdlab.distill.ctkd import CTKD
from kdlab.distill.dkd import DKD
from kdlab.distill.logit import LogitKD
from kdlab.distill.nkd import NKD
from kdlab.distill.sdd import SDD
from kdlab.models.zoo import build
from kdlab.systems import Distiller
from kdlab.teachers import FrozenTeacher
from kdlab.utils.method_params import label, loss_tree, params, tag

CASES = [
    ["distill=nkd"],
    ["distill=wttm"],
    ["distill=wttm", "distill.terms.wttm.weighted=false"],
    ["distill=ctkd"],
    ["distill=ctkd", "distill_base=dkd"],
    ["distill=ctkd", "distill_base=nkd", "distill.terms.ctkd.mode=instance"],
    ["distill=sdd"],
    ["distill=sdd", "distill_base=kd"],
    ["distill=sdd", "distill_base=nkd", "distill_base.standardize=true"],
]
PAIRS = [("resnet56", "resnet20"), ("wrn_40_2", "shufflev2")]


def build_loss(overrides: list[str]):
    from kdlab.utils.resolvers import register

    register()
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=["data=cifar100", *overrides])
    return instantiate(cfg.distill), cfg


@pytest.fixture(scope="module")
def teachers():
    torch.manual_seed(0)
    return {t: FrozenTeacher(build(t, 100)) for t, _ in PAIRS}


def test_modifiers_wrap_the_chosen_base_with_the_published_settings():
    ctkd, _ = build_loss(["distill=ctkd"])
    assert ctkd.weights == {"ce": 0.1, "ctkd": 0.9}
    term = ctkd.terms["ctkd"]
    assert isinstance(term, CTKD) and isinstance(term.base, LogitKD)
    assert (term.t_start, term.t_range, term.init, term.ramp) == (1.0, 20.0, 1.0, 10)
    over_dkd, cfg = build_loss(["distill=ctkd", "distill_base=dkd", "distill_base.beta=2"])
    assert isinstance(over_dkd.terms["ctkd"].base, DKD) and over_dkd.terms["ctkd"].base.beta == 2.0
    recorded = params(loss_tree(over_dkd))
    assert recorded["terms"]["ctkd"]["base"]["beta"] == 2.0 and recorded["terms"]["ctkd"]["mode"]
    json.dumps(recorded)
    assert tag(loss_tree(over_dkd), 0) != tag(loss_tree(build_loss(["distill=ctkd"])[0]), 0)
    assert label(loss_tree(over_dkd))
    sdd, _ = build_loss(["distill=sdd", "distill_base=nkd"])
    assert sdd.weights == {"ce": 1.0, "sdd": 1.0}
    assert isinstance(sdd.terms["sdd"], SDD) and isinstance(sdd.terms["sdd"].base, NKD)
    assert sdd.terms["sdd"].scales == [1, 2, 4] and sdd.terms["sdd"].complementary == 2.0
    nkd, _ = build_loss(["distill=nkd"])
    assert nkd.terms["nkd"].method_params() == {
        "gamma": 1.5,
        "temperature": 1.0,
        "standardize": False,
    }


@pytest.mark.parametrize(("teacher_arch", "student_arch"), PAIRS)
@pytest.mark.parametrize("overrides", CASES, ids=lambda o: "+".join(o))
def test_one_training_step_from_the_config(teachers, overrides, teacher_arch, student_arch):
    torch.manual_seed(0)
    loss, _ = build_loss(overrides)
    student = build(student_arch, 100)
    opt_factory = functools.partial(torch.optim.SGD, lr=0.01)
    system = Distiller(student, teachers[teacher_arch], loss, optimizer=opt_factory)
    loss.set_epoch(5)
    name = next(k for k in loss.terms if k != "ce")
    own = list(loss.terms[name].parameters())
    assert bool(own) == ("distill=ctkd" in overrides)
    opt = system.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in own)
    system.train()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 100, (8,))
    _, terms = system.compute_losses(x, y)
    assert torch.isfinite(terms["loss"]) and terms["loss"].item() > 0
    terms["loss"].backward()
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    for p in own:
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_the_benchmark_times_sd_dkd_on_resnet56_to_resnet20():
    """``python -m kdlab.bench``'s zoo row for SDD over DKD builds the published config on the
    benchmark pair and runs its training step (one step here, nothing timed)."""
    from kdlab.bench import steps as S

    assert "sdd" in S.ZOO_METHODS and S.ZOO_BASES["sdd"] == "dkd"
    assert S.ZOO_PAIRS["quick"] == ("resnet56", "resnet20")
    system = S.build_zoo_system("sdd", "quick", 128)
    assert isinstance(system.criterion.terms["sdd"], SDD)
    assert isinstance(system.criterion.terms["sdd"].base, DKD)
    device = torch.device("cpu")
    step = S.make_step(system, S.prepare(system, device), device, amp=False)
    images = torch.randint(0, 256, (128, 32, 32, 3), dtype=torch.uint8)
    loader = S.make_loader("device", images, torch.arange(128) % 100, 64, device, 0)
    before = [p.detach().clone() for p in system.net.parameters()]
    step(next(iter(loader)))
    assert any(not torch.equal(a, p) for a, p in zip(before, system.net.parameters(), strict=True))
