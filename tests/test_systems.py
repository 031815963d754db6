"""The systems: what the optimiser, clipping, hparams and checkpoints see of the teacher."""

from __future__ import annotations

import functools

import pytest
import torch

from kdlab.distill.base import CrossEntropy
from kdlab.distill.feature import FeatureKD
from kdlab.distill.logit import LogitKD
from kdlab.models.preresnet import preresnet20
from kdlab.systems import Classifier, Distiller
from kdlab.teachers import FrozenTeacher

SGD = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)


def distiller(criterion=None, **kw) -> Distiller:
    torch.manual_seed(0)
    teacher = FrozenTeacher(preresnet20(10))
    sys_ = Distiller(
        preresnet20(10), teacher, criterion or LogitKD(0.5, 4.0), SGD, grad_clip=1.0, **kw
    )
    sys_.log = lambda *a, **k: None  # logging needs a Trainer; these tests call hooks directly
    return sys_


def test_teacher_outside_optimizer_hparams_and_train_mode():
    s = distiller(FeatureKD(0.5, 0.5, stages=["layer1", "layer3"]))
    opt = s.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in s.teacher.parameters())
    assert all(id(p) in in_opt for p in s.net.parameters())
    assert all(id(p) in in_opt for p in s.criterion.parameters())  # projections are trained
    assert not any("teacher" in k or "net" in k for k in s.hparams)
    s.train()
    assert s.net.training and not s.teacher.training


def test_teacher_is_not_saved_in_checkpoints_but_loads_back():
    s = distiller()
    ckpt = {"state_dict": s.state_dict()}
    s.on_save_checkpoint(ckpt)
    assert ckpt["state_dict"] and not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    s.on_load_checkpoint(ckpt)
    s.load_state_dict(ckpt["state_dict"], strict=True)


def _fill_grads(s: Distiller, student: float, proj: float) -> None:
    for p in s.net.parameters():
        p.grad = torch.full_like(p, student)
    for p in s.criterion.parameters():
        p.grad = torch.full_like(p, proj)


def _norm(params) -> float:
    return torch.nn.utils.get_total_norm([p.grad for p in params]).item()


def test_clipping_covers_student_and_projection_layers():
    s = distiller(FeatureKD(0.5, 0.5, stages=["layer1", "layer2", "layer3"]))
    _fill_grads(s, student=1e-3, proj=10.0)
    s.configure_gradient_clipping(s.configure_optimizers()["optimizer"])
    assert _norm(list(s.net.parameters()) + list(s.criterion.parameters())) <= 1.0 + 1e-5


def test_bug_ablation_clips_the_student_only():
    s = distiller(FeatureKD(0.5, 0.5, stages=["layer1", "layer2", "layer3"]), clip_scope="student")
    _fill_grads(s, student=1.0, proj=10.0)
    before = _norm(s.criterion.parameters())
    s.configure_gradient_clipping(s.configure_optimizers()["optimizer"])
    assert _norm(s.net.parameters()) <= 1.0 + 1e-5
    assert _norm(s.criterion.parameters()) == pytest.approx(before)  # projections escape
    with pytest.raises(ValueError, match="clip_scope"):
        distiller(clip_scope="projections")


def test_grad_norm_is_logged_before_clipping():
    s = distiller(FeatureKD(0.5, 0.5, stages=["layer3"]))
    logged = {}
    s.log = lambda name, value, **k: logged.__setitem__(name, float(value))
    _fill_grads(s, student=0.5, proj=2.0)
    expected = _norm(list(s.net.parameters()) + list(s.criterion.parameters()))
    s.configure_gradient_clipping(s.configure_optimizers()["optimizer"])
    assert logged["train/grad_norm"] == pytest.approx(expected, rel=1e-5) and expected > 1


def test_loss_terms_come_from_the_criterion():
    s = distiller(FeatureKD(0.5, 0.5, stages=["layer2"]))
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    logits, terms = s.compute_losses(x, y)
    assert logits.shape == (4, 10) and {"loss", "ce", "kd", "mse", "cos"} <= set(terms)
    c = Classifier(preresnet20(10), SGD, criterion=CrossEntropy())
    _, terms = c.compute_losses(x, y)
    assert set(terms) == {"loss", "ce", "task"}  # plain CE: the whole loss is the task part
    assert terms["task"] is terms["loss"]


def test_lr_scale_and_bad_clip_values():
    c = Classifier(preresnet20(10), SGD, lr_scale=0.25)
    assert c.configure_optimizers()["optimizer"].param_groups[0]["lr"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match="grad_clip"):
        Classifier(preresnet20(10), SGD, grad_clip=0.0)


def test_epoch_metrics_do_not_depend_on_how_often_steps_are_logged(tmp_path):
    """Per-step values reach the loggers only every log_every_n_steps; the epoch means and the
    accuracy are accumulated on the device and equal Lightning's own epoch reduction: the mean
    of the per-step values weighted by batch size."""
    import csv

    import lightning as L

    from kdlab.data.cifar import CIFARDataModule
    from kdlab.data.synthetic import write_fake_cifar
    from kdlab.utils.csv_logger import AppendingCSVLogger

    write_fake_cifar(tmp_path / "data", "cifar10", n_train=120, n_test=20)
    rows = {}
    for every in (1, 50):
        torch.manual_seed(0)
        dm = CIFARDataModule(
            root=str(tmp_path / "data"),
            val_size=20,
            batch_size=32,
            num_workers=0,
            pipeline="device",
        )
        teacher = FrozenTeacher(preresnet20(10), channels_last=False)
        system = Distiller(preresnet20(10), teacher, LogitKD(0.5, 4.0), SGD, grad_clip=1.0)
        log = AppendingCSVLogger(tmp_path / f"every{every}", name="csv", version="")
        L.Trainer(
            max_epochs=2,
            log_every_n_steps=every,
            logger=log,
            accelerator="cpu",
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            deterministic=True,
        ).fit(system, datamodule=dm)
        rows[every] = list(csv.DictReader(open(tmp_path / f"every{every}" / "csv" / "metrics.csv")))
    keys = ["train/loss_epoch", "train/loss_kd_epoch", "train/acc", "val/acc", "val/loss"]

    def by_epoch(rs, key):
        return {r["epoch"]: float(r[key]) for r in rs if r.get(key)}

    for key in keys:
        assert by_epoch(rows[1], key) == pytest.approx(by_epoch(rows[50], key), rel=1e-6), key
    steps = [r for r in rows[1] if r.get("train/loss_step")]
    sizes = [32, 32, 32, 4]  # 100 training images in batches of 32
    for epoch in ("0", "1"):
        values = [float(r["train/loss_step"]) for r in steps if r["epoch"] == epoch]
        mean = sum(v * n for v, n in zip(values, sizes, strict=True)) / sum(sizes)
        assert by_epoch(rows[1], "train/loss_epoch")[epoch] == pytest.approx(mean, rel=1e-6)
    assert not any(r.get("train/loss_step") for r in rows[50])  # no step reached a logger
    assert any(r.get("train/grad_norm") for r in rows[1])
