"""CIFAR batches are what they were before datasets became readers: the first batches of every
split, on both pipelines, hash to the values recorded with the CIFAR-only data module (images
after crop/flip and normalisation, labels, dataset rows and view ids)."""

from __future__ import annotations

import hashlib
import itertools

import pytest
import torch

from kdlab.data.module import ImageDataModule
from kdlab.data.synthetic import write_fake_cifar
from tests.conftest import SHARED_DATA, needs_shared

# Recorded with the CIFARDataModule that read CIFAR pickles directly.
RECORDED = {
    ("cifar10", "device"): "789337790dd53cc9",
    ("cifar10", "dataloader"): "4a622c02d2a7b4da",
    ("cifar100", "device"): "d2acb94f09a6ca2a",
    ("cifar100", "dataloader"): "7b7be164d134959c",
}
RECORDED_SHARED = {"device": "f65738049c7e904c", "dataloader": "a329ffaf3bb64875"}


def first_batches_hash(root, name: str, pipeline: str) -> str:
    """sha256 of x, y, index and view of the first 3 train, val and test batches."""
    torch.manual_seed(0)
    dm = ImageDataModule(
        name=name,
        root=str(root),
        download=False,
        val_size=40,
        batch_size=16,
        eval_batch_size=32,
        num_workers=0,
        pipeline=pipeline,
        seed=3,
    )
    dm.setup("fit")
    digest = hashlib.sha256()
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for batch in itertools.islice(loader, 3):
            for t in (batch.x, batch.y, batch.index, batch.view):
                if t is not None:
                    digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("name, pipeline", sorted(RECORDED))
def test_written_cifar_batches_are_unchanged(tmp_path, name, pipeline):
    write_fake_cifar(tmp_path, name, 200, 64, seed=0)
    assert first_batches_hash(tmp_path, name, pipeline) == RECORDED[name, pipeline]


@needs_shared
@pytest.mark.parametrize("pipeline", sorted(RECORDED_SHARED))
def test_real_cifar10_batches_are_unchanged(pipeline):
    assert first_batches_hash(SHARED_DATA, "cifar10", pipeline) == RECORDED_SHARED[pipeline]
