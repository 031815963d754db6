"""DOT: with equal momenta it is SGD with momentum; with different momenta its task and
distillation buffers evolve apart (three steps written out by hand); the system hands it the
distillation gradient and back-propagates the task part; a run records the optimiser."""

from __future__ import annotations

import functools

import pytest
import torch

from kdlab.distill.base import CrossEntropy
from kdlab.distill.combine import Combined
from kdlab.distill.dkd import DKD
from kdlab.models.zoo import build
from kdlab.optim import DOT
from kdlab.systems import Distiller
from kdlab.teachers import FrozenTeacher

G_TASK = [torch.tensor([0.5, -1.0]), torch.tensor([0.2, 0.3]), torch.tensor([-0.4, 0.1])]
G_KD = [torch.tensor([1.0, 2.0]), torch.tensor([-0.5, 0.5]), torch.tensor([0.3, -0.2])]


def run_dot(momentum: float, delta: float, wd: float, lr: float = 0.1):
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = DOT([p], lr=lr, momentum=momentum, delta=delta, weight_decay=wd)
    trace = []
    for g_task, g_kd in zip(G_TASK, G_KD, strict=True):
        opt.set_distill_gradient([p], [g_kd])
        p.grad = g_task.clone()
        opt.step()
        state = opt.state[p]
        trace.append(
            (p.detach().clone(), state["task_buffer"].clone(), state["distill_buffer"].clone())
        )
    return trace


def test_equal_momenta_is_sgd_with_momentum():
    for wd in (0.0, 5e-4):
        q = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        sgd = torch.optim.SGD([q], lr=0.1, momentum=0.9, weight_decay=wd)
        for (p, _, _), g_task, g_kd in zip(run_dot(0.9, 0.0, wd), G_TASK, G_KD, strict=True):
            q.grad = g_task + g_kd
            sgd.step()
            assert torch.allclose(p, q, atol=1e-7)


def test_different_momenta_keep_two_buffers_three_steps_by_hand():
    mu, delta, wd, lr = 0.9, 0.075, 0.01, 0.1
    m_task, m_kd = mu - delta, mu + delta
    theta = [1.0, -2.0]
    b_task = b_kd = None
    trace = run_dot(mu, delta, wd, lr)
    for step, (g_task, g_kd) in enumerate(zip(G_TASK, G_KD, strict=True)):
        gt = [g + wd * th for g, th in zip(g_task.tolist(), theta, strict=True)]
        gk = g_kd.tolist()
        b_task = gt if b_task is None else [m_task * b + g for b, g in zip(b_task, gt, strict=True)]
        b_kd = gk if b_kd is None else [m_kd * b + g for b, g in zip(b_kd, gk, strict=True)]
        theta = [th - lr * (a + b) for th, a, b in zip(theta, b_task, b_kd, strict=True)]
        p, task_buf, kd_buf = trace[step]
        assert task_buf.tolist() == pytest.approx(b_task, abs=1e-6), step
        assert kd_buf.tolist() == pytest.approx(b_kd, abs=1e-6), step
        assert p.tolist() == pytest.approx(theta, abs=1e-6), step
    # the buffers really differ from what one SGD buffer would hold
    assert not torch.allclose(
        trace[2][1] + trace[2][2], run_dot(mu, 0.0, wd, lr)[2][1] + run_dot(mu, 0.0, wd, lr)[2][2]
    )


def test_a_parameter_only_one_loss_reaches_uses_the_plain_momentum():
    head = torch.nn.Parameter(torch.tensor([1.0]))  # only the distillation term sees it
    opt = DOT([head], lr=0.1, momentum=0.9, delta=0.075, weight_decay=0.5)
    for g in (1.0, 2.0):
        opt.set_distill_gradient([head], [torch.tensor([g])])
        opt.step()
    # step 1: b = 1 + 0.5·1 = 1.5, θ = 0.85; step 2: b = 0.9·1.5 + 2 + 0.5·0.85
    assert opt.state[head]["distill_buffer"].item() == pytest.approx(0.9 * 1.5 + 2 + 0.425)
    assert "task_buffer" not in opt.state[head]


def test_bad_momenta_are_refused():
    with pytest.raises(ValueError, match="momenta"):
        DOT([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.95, delta=0.075)


def test_the_system_hands_dot_the_distillation_gradient_and_backpropagates_the_task():
    torch.manual_seed(0)
    loss = Combined({"ce": CrossEntropy(), "dkd": DKD(beta=2.0, warmup=0)}, {"ce": 1.0, "dkd": 1.0})
    factory = functools.partial(DOT, lr=0.05, momentum=0.9, delta=0.075, weight_decay=0.0)
    system = Distiller(build("resnet8", 100), FrozenTeacher(build("resnet14", 100)), loss, factory)
    opt = system.configure_optimizers()["optimizer"]
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    _, terms = system.compute_losses(x, y)
    task = terms.pop("task")
    assert task.item() == pytest.approx(terms["ce"].item(), rel=1e-6)
    params = [p for p in system.trainable_parameters()]
    expected_kd = torch.autograd.grad(terms["loss"] - task, params, retain_graph=True)
    expected_task = torch.autograd.grad(task, params, retain_graph=True)
    out = system.backward_loss(terms["loss"], task, opt)
    assert out is task
    out.backward()
    before = [p.detach().clone() for p in params]
    for p, g in zip(params, expected_kd, strict=True):
        assert torch.allclose(opt.state[p]["distill_grad"], g)
    opt.step()
    for p, p0, gt, gk in zip(params, before, expected_task, expected_kd, strict=True):
        assert torch.allclose(p.detach(), p0 - 0.05 * (gt + gk), atol=1e-7)  # first step
    assert system.backward_loss(terms["loss"], task, None) is terms["loss"]  # plain optimisers


def test_dot_refuses_clipping_ddp_and_accumulation():
    factory = functools.partial(DOT, lr=0.05)
    loss = Combined({"ce": CrossEntropy(), "dkd": DKD()}, {"ce": 1.0, "dkd": 1.0})
    system = Distiller(
        build("resnet8", 10), FrozenTeacher(build("resnet8", 10)), loss, factory, grad_clip=1.0
    )
    with pytest.raises(ValueError, match="grad_clip=null"):
        system.configure_optimizers()
    from kdlab.systems.gradients import check_split_gradients

    with pytest.raises(ValueError, match="devices=1"):
        check_split_gradients("DOT", None, world_size=2)
    with pytest.raises(ValueError, match="accumulate_grad_batches=1"):
        check_split_gradients("DOT", None, accumulate=4)
    check_split_gradients("DOT", None)  # one device, no clipping, no accumulation: fine


@pytest.mark.slow
def test_a_dot_run_trains_and_records_the_optimiser(tmp_path):
    from tests.helpers_sweep import make_world, results, run_train, tiny

    world = make_world(tmp_path)
    out = tmp_path / "run"
    run_train(
        tmp_path,
        "+experiment=r56_cnn_logit",
        "teacher=cnn",
        "optim=dot",
        "grad_clip=null",
        *tiny(world),
        "trainer.limit_train_batches=2",
        f"hydra.run.dir={out}",
    )
    res = results(out)
    assert res["status"] == "finished"
    assert res["optimizer"] == {
        "name": "kdlab.optim.dot.DOT",
        "lr": 0.05,
        "momentum": 0.9,
        "delta": 0.075,
        "weight_decay": 5e-4,
    }
