"""Fast steps: folded teacher in the running system, inference-mode teacher with a working
backward, vmap ensembles equal to the member loop, channels_last equal outputs, compile off."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from kdlab.distill.feature import FeatureKD
from kdlab.distill.logit import LogitKD
from kdlab.models.memory_format import resolve_channels_last
from kdlab.models.preresnet import preresnet20
from kdlab.systems import Distiller, fast
from kdlab.teachers import EnsembleTeacher, FrozenTeacher, StackedMembers

REPO_CONF = "conf/train.yaml"


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = preresnet20(num_classes=10)
    for m in net.modules():  # non-trivial BN statistics, so folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net


def _distiller(teacher, loss=None, **kw) -> Distiller:
    opt = partial(torch.optim.SGD, lr=0.1)
    return Distiller(_net(9), teacher, loss or LogitKD(0.5, 4.0), opt, grad_clip=1.0, **kw)


def test_fold_replaces_running_teacher_keeps_trained_members():
    teacher = FrozenTeacher(_net(1), channels_last=False)
    x = torch.randn(4, 3, 32, 32)
    ref = teacher(x)
    original = teacher.net
    system = _distiller(teacher)
    done = fast.prepare(system, "cpu", channels_last=False)
    assert done["teacher_fold_bn"] and not done["compile"] and not done["channels_last"]
    assert teacher.net is not original  # the folded copy runs
    assert teacher.members[0] is original  # trained weights kept for params / init proximity
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in teacher.net.modules())
    assert n_bn < sum(isinstance(m, nn.BatchNorm2d) for m in original.modules())
    torch.testing.assert_close(teacher(x), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("loss", ["logit", "feature"])
def test_inference_mode_teacher_trains(loss):
    """Teacher outputs made under inference_mode feed a loss whose backward works."""
    crit = LogitKD(0.5, 4.0) if loss == "logit" else FeatureKD(0.5, 0.5, ["layer2", "layer3"])
    system = _distiller(FrozenTeacher(_net(1)), crit)
    fast.prepare(system, "cpu")
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    _, terms = system.compute_losses(x, y)
    terms["loss"].backward()
    grads = [p.grad for p in system.net.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in system.teacher.parameters())
    t_logits = system.teacher.predict(x)
    assert not t_logits.is_inference() and not t_logits.requires_grad


def test_vmap_ensemble_equals_loop():
    nets = [_net(s) for s in range(3)]
    x = torch.randn(5, 3, 32, 32)
    loop = EnsembleTeacher(nets)
    with torch.no_grad():
        ref_members, ref = loop.forward_members(x), loop(x)
    torch.testing.assert_close(StackedMembers(nets)(x), ref_members, atol=1e-5, rtol=1e-5)
    system = _distiller(EnsembleTeacher([_net(s) for s in range(3)], vmap=True))
    done = fast.prepare(system, "cpu")
    assert done["teacher_vmap"] and isinstance(system.teacher.stacked, StackedMembers)
    with torch.inference_mode():
        torch.testing.assert_close(system.teacher(x), ref, atol=1e-4, rtol=1e-4)


def test_mixed_architectures_fall_back_to_loop():
    from kdlab.models.cnn import small_cnn

    ens = EnsembleTeacher([_net(0), small_cnn(num_classes=10)], fold_bn=False)
    assert ens.prepare("cpu")["vmap"] is False and ens.stacked is None


def test_channels_last_same_outputs_and_auto():
    assert resolve_channels_last("auto", "cuda") and not resolve_channels_last("auto", "cpu")
    with pytest.raises(ValueError, match="channels_last"):
        resolve_channels_last("yes", "cpu")
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    a = _distiller(FrozenTeacher(_net(1), channels_last=False))
    b = _distiller(FrozenTeacher(_net(1), channels_last=True))
    fast.prepare(a, "cpu", channels_last=False)
    fast.prepare(b, "cpu", channels_last=True)
    assert b.input_format == torch.channels_last
    assert b.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    la, ta = a.compute_losses(x, y)
    lb, tb = b.compute_losses(x.contiguous(memory_format=torch.channels_last), y)
    torch.testing.assert_close(lb, la, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tb["loss"], ta["loss"], atol=1e-4, rtol=1e-4)


def test_channels_last_auto_measures_once_and_keeps_the_network_unchanged(monkeypatch, tmp_path):
    from kdlab.models import memory_format

    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path))
    net, twin = _net(2), _net(3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    timings = iter([1.0, 0.5, 1.0, 2.0])  # NCHW, NHWC of two probes: faster, then slower
    monkeypatch.setattr(memory_format, "_seconds", lambda *a, **k: next(timings))
    assert memory_format.choose_channels_last("auto", net, "cpu") is True
    # the same network on the same machine: the remembered choice, not a new measurement
    assert memory_format.choose_channels_last("auto", twin, "cpu") is True
    assert memory_format.choose_channels_last("auto", net, "cpu", train=False) is False
    assert memory_format.choose_channels_last(False, net, "cuda") is False  # explicit wins
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())  # probed a copy
    assert torch.equal(torch.get_rng_state(), rng)
    assert net.conv1.weight.is_contiguous()  # left NCHW: the system converts if chosen


def test_config_defaults_fast_and_safe():
    cfg = OmegaConf.load(REPO_CONF)
    assert cfg.compile is False  # compiling is opt-in (minutes of compile time)
    assert cfg.fold_teacher_bn is True and cfg.channels_last == "auto"
    assert cfg.view_cache is False and cfg.ensemble_vmap is True


def test_a_resumed_run_keeps_the_memory_formats_of_its_checkpoint():
    first = _distiller(FrozenTeacher(_net(1), channels_last=True))
    saving = fast.FastSteps(channels_last=True)
    fast.prepare(first, "cpu", channels_last=True)
    ckpt = {"state_dict": first.state_dict()}
    saving.on_save_checkpoint(None, first, ckpt)
    assert ckpt[fast.FORMATS] == {"student": True, "teacher": True}
    # a relaunch whose own choice would differ (another measurement) follows the checkpoint
    again = _distiller(FrozenTeacher(_net(1), channels_last=False))
    fast.prepare(again, "cpu", channels_last=False)
    assert again.input_format == torch.contiguous_format and not again.teacher.channels_last
    fast.FastSteps(channels_last=False).on_load_checkpoint(None, again, ckpt)
    assert again.input_format == torch.channels_last and again.teacher.channels_last
    assert again.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert again.describe()["channels_last"] is True


def test_a_bad_memory_format_setting_fails_before_training():
    with pytest.raises(ValueError, match="channels_last"):
        fast.FastSteps(channels_last="sometimes")
