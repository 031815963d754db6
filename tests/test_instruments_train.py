"""The replication studies' instruments through the real ``train(cfg)`` in-process (no
subprocess start-up cost).

Each run composes ``conf/`` with Hydra's compose API, trains a tiny CNN for a few batches and
reads what results.json would hold: per-stage CKA, train-set fidelity, compression ratio, the
teacher-logit cache (same losses as the teacher forward) and early stopping.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kdlab.models.export import export_weights
from kdlab.teachers import store_path
from kdlab.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_cfg(data_root: Path, out: Path, *overrides: str):
    """The run config of ``python -m kdlab.train OVERRIDES`` with tiny-run settings."""
    base = [
        f"data.root={data_root}",
        "data.val_size=50",
        "data.batch_size=16",
        "data.eval_batch_size=50",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.log_every_n_steps=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        f"paths.root={out}",
        f"paths.output_dir={out}",
        f"paths.teachers={out.parent / 'teachers'}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*base, *overrides])


def export_teacher_net(cfg, arch: str = "cnn", seed: int = 0) -> Path:
    """A random-weights teacher in the store (enough for pipeline tests: no training needed)."""
    from hydra.utils import instantiate

    model_cfg = OmegaConf.to_container(cfg.teacher.model, resolve=True)
    model_cfg.pop("_partial_", None)
    torch.manual_seed(123)
    net = instantiate(model_cfg)
    path = store_path(cfg.paths.teachers, cfg.data.name, arch, seed)
    return export_weights(net, path, model_cfg, dataset=cfg.data.name, seed=seed)


def step_losses(out: Path) -> list[float]:
    with open(out / "csv" / "metrics.csv") as f:
        return [float(r["train/loss_step"]) for r in csv.DictReader(f) if r.get("train/loss_step")]


def test_cka_fidelity_and_compression_in_results(tiny_cifar10, tmp_path):
    out = tmp_path / "run"
    cfg = compose_cfg(
        tiny_cifar10, out, "+experiment=r56_cnn_logit", "teacher=cnn", "cka.enabled=true"
    )
    export_teacher_net(cfg)
    res = train(cfg)
    for stage in ("layer1", "layer2"):  # the stages the small CNN student and teacher share
        assert 0.0 <= res[f"test_cka_{stage}"] <= 1.0 + 1e-9
    assert 0.0 <= res["train_agreement"] <= 100.0 and res["train_kl"] >= 0.0
    assert res["compression_ratio"] == pytest.approx(res["teacher_params"] / res["student_params"])
    assert res["best_ckpt_monitor"] == "val/loss"  # the notebook experiment uses early stopping


def test_cka_rejects_unknown_stage(tiny_cifar10, tmp_path):
    cfg = compose_cfg(
        tiny_cifar10,
        tmp_path / "run",
        "+experiment=r56_cnn_logit",
        "teacher=cnn",
        "cka.enabled=true",
        "cka.stages=[layer9]",
    )
    export_teacher_net(cfg)
    with pytest.raises(ValueError, match="unknown CKA stage pair layer9"):
        train(cfg)


def test_teacher_logit_cache_gives_identical_losses(tiny_cifar10, tmp_path):
    args = (
        "+experiment=r56_cnn_logit",
        "teacher=cnn",
        "data.augment=false",
        "trainer.max_epochs=2",
    )
    runs = {}
    for cached in (False, True):
        out = tmp_path / f"run_{cached}"
        cfg = compose_cfg(tiny_cifar10, out, *args, f"teacher_cache={cached}")
        ckpt = export_teacher_net(cfg)
        runs[cached] = (train(cfg), step_losses(out))
    (res_plain, loss_plain), (res_cached, loss_cached) = runs[False], runs[True]
    assert len(loss_plain) == 4 and len(loss_cached) == 4
    assert loss_cached == pytest.approx(loss_plain, rel=1e-5, abs=1e-6)
    assert res_cached["test_kl_final"] == pytest.approx(res_plain["test_kl_final"], rel=1e-5)
    assert res_cached["train_agreement"] == pytest.approx(res_plain["train_agreement"])
    caches = list(ckpt.parent.glob(f"{ckpt.name}.logits-cifar10-*.pt"))
    assert len(caches) == 1 and torch.load(caches[0])["logits"].shape == (350, 10)


def test_early_stopping_stops_when_val_loss_stalls(tiny_cifar10, tmp_path):
    out = tmp_path / "run"
    cfg = compose_cfg(
        tiny_cifar10,
        out,
        "+experiment=baseline_cnn",
        "optim.lr=0.0",
        "trainer.max_epochs=6",
        "callbacks.early_stopping.patience=1",
    )
    assert cfg.callbacks.model_checkpoint.monitor == "val/loss"
    res = train(cfg)
    # lr 0: val loss never improves after epoch 0, so patience 1 stops after epoch 1
    assert res["epochs_trained"] == 2
    assert res["best_ckpt_monitor"] == "val/loss" and res["val_acc_best"] is not None


def test_init_proximity_scales_lr_and_moves_student(tiny_cifar10, tmp_path):
    from kdlab.train import build_system

    cfg = compose_cfg(
        tiny_cifar10,
        tmp_path / "run",
        "+experiment=r56_cnn_logit",
        "teacher=cnn",
        "student_init.lambda=0.75",
    )
    export_teacher_net(cfg)
    from hydra.utils import instantiate

    torch.manual_seed(0)
    net = instantiate(cfg.model)
    random_w = net.fc2.weight.detach().clone()
    system = build_system(cfg, net)
    teacher_w = system.teacher.net.fc2.weight
    assert torch.allclose(net.fc2.weight, 0.75 * teacher_w + 0.25 * random_w, atol=1e-6)
    opt = system.configure_optimizers()["optimizer"]
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr * 0.25)
    cfg.student_init["lambda"] = 1.0
    with pytest.raises(ValueError, match="student_init.lambda=1"):
        build_system(cfg, instantiate(cfg.model))


def test_distiller_takes_teacher_logits_from_the_cache_by_index():
    import functools

    from kdlab.distill.logit import LogitKD
    from kdlab.models.cnn import small_cnn
    from kdlab.systems import Distiller
    from kdlab.teachers import FrozenTeacher
    from kdlab.teachers.cache import TeacherCache as TeacherLogitCache

    torch.manual_seed(0)
    system = Distiller(
        small_cnn(10).eval(),
        FrozenTeacher(small_cnn(10)),
        LogitKD(alpha=1.0, temperature=4.0),
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
    )
    images, idx = torch.randn(6, 3, 32, 32), torch.tensor([4, 0, 2])
    table = system.teacher(images).detach()
    y = torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        looked_up = system.criterion(system.net(images[idx]), table[idx], y)["kd"]
    plain = system.compute_losses(images[idx], y)[1]["kd"]
    system.teacher.use_cache(TeacherLogitCache(table))
    cached = system.compute_losses(images[idx], y, idx)[1]["kd"]
    # the cache serves exactly the rows of its table that the batch names
    assert torch.equal(cached.detach(), looked_up)
    # and they are the teacher's logits of those images; a CPU's kernels for a batch of 6 and
    # of 3 round differently (~1e-7 in the logits, ×T² = 16 in the loss), so this one is close
    assert torch.allclose(table[idx], system.teacher(images[idx]), rtol=0, atol=1e-5)
    assert torch.allclose(cached, plain, rtol=0, atol=1e-5)
    system.teacher.use_cache(TeacherLogitCache(table.flip(0)))  # wrong rows → different loss
    assert not torch.allclose(system.compute_losses(images[idx], y, idx)[1]["kd"], plain, rtol=1e-3)
    # images without training-split indices are not rows of the table: the teacher runs
    online = system.compute_losses(images[idx], y)[1]["kd"]
    assert torch.allclose(online, plain, rtol=0, atol=1e-5)
