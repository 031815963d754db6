"""MixUp in a real Lightning run: teacher and student see the identical mixed batch (both pipelines)."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch

from kdlab.data.cifar import CIFARDataModule
from kdlab.distill.logit import LogitKD
from kdlab.models.cnn import small_cnn
from kdlab.systems import Distiller
from kdlab.teachers import FrozenTeacher


def _spy(module: torch.nn.Module, store: list, which: int = 0) -> None:
    """Record argument ``which`` of every ``module.forward`` call."""
    inner = module.forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        store.append(args[which].detach().clone())
        return inner(*args, **kwargs)

    module.forward = forward


@pytest.mark.parametrize("pipeline", ["dataloader", "device"])
def test_teacher_and_student_receive_the_same_mixed_batch(tiny_cifar10, pipeline):
    torch.manual_seed(0)
    dm = CIFARDataModule(
        root=str(tiny_cifar10),
        val_size=50,
        batch_size=16,
        num_workers=0,
        pipeline=pipeline,
        mixup_alpha=1.0,
    )
    system = Distiller(  # no memory-format probe (a callback's job) adds forward calls to count
        small_cnn(10),
        FrozenTeacher(small_cnn(10), channels_last=False),
        LogitKD(alpha=0.5, temperature=4.0),
        optimizer=functools.partial(torch.optim.SGD, lr=0.01),
    )
    seen_student, seen_teacher, targets = [], [], []
    _spy(system.net, seen_student)
    _spy(system.teacher.net, seen_teacher)
    _spy(system.criterion, targets, which=2)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        deterministic=True,
    )
    trainer.fit(system, datamodule=dm)
    assert len(seen_student) == len(seen_teacher) == len(targets) == 2
    for xs, xt, y in zip(seen_student, seen_teacher, targets, strict=True):
        assert torch.equal(xs, xt)
        assert y.shape == (16, 10) and torch.allclose(y.sum(-1), torch.ones(16))
        assert (y.max(-1).values < 0.999).any()  # soft, mixed targets reached the loss
