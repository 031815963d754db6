"""SVHN, STL-10 and image folders: each is read from files in its real on-disk layout (the
layout torchvision itself reads), is configured by its own ``conf/data/<name>.yaml``, and its
bad input is named in the message."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torchvision.datasets import STL10, SVHN, ImageFolder

from kdlab import CONF_DIR
from kdlab.data.readers import DataError
from kdlab.data.readers.image_folder import ImageFolderReader
from kdlab.data.readers.stl10 import STL10Reader
from kdlab.data.readers.svhn import SVHNReader
from kdlab.data.synthetic import fake_images, write_fake
from kdlab.utils.resolvers import register
from tests.conftest import read_results, run_train, tiny_overrides


def _arrays(n: int, side: int, num_classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    return fake_images(labels, num_classes, rng, side), labels


def _data_module(name: str, root: Path, *overrides: str):
    register()
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose(
            "train",
            overrides=[
                f"data={name}",
                f"data.root={root}",
                "data.val_size=10",
                "data.batch_size=8",
                "data.num_workers=0",
                "data.download=false",
                "paths.root=.",
                *overrides,
            ],
        )
    return instantiate(cfg.data)


def test_svhn_files_are_read_as_torchvision_reads_them(tmp_path, monkeypatch):
    images, labels = _arrays(30, 32)
    SVHNReader().write(tmp_path, "train", images, labels)
    x, y = SVHNReader().read(tmp_path, "train")
    assert np.array_equal(x, images) and np.array_equal(y, labels)
    monkeypatch.setattr(SVHN, "_check_integrity", lambda self: True)  # md5s of a written file
    tv = SVHN(str(tmp_path), split="train", download=False)
    assert np.array_equal(tv.data, images.transpose(0, 3, 1, 2))
    assert np.array_equal(tv.labels, labels)  # digit 0 is stored as 10 and read back as 0


def test_svhn_crops_but_never_flips_a_digit(tmp_path):
    write_fake(tmp_path, "svhn", n_train=40, n_test=10)
    dm = _data_module("svhn", tmp_path)
    assert (dm.padding, dm.flip) == (4, False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.x.shape == (8, 3, 32, 32) and dm.num_classes == 10


def test_a_corrupt_svhn_file_is_named(tmp_path):
    (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file")
    (tmp_path / "test_32x32.mat").write_bytes(b"")
    with pytest.raises(DataError, match="cannot read SVHN file .*train_32x32.mat"):
        SVHNReader().read(tmp_path, "train")


def test_a_small_copy_is_accepted_as_a_subset_and_says_so(tmp_path, caplog):
    write_fake(tmp_path, "svhn", n_train=20, n_test=10)
    with caplog.at_level(logging.WARNING):
        SVHNReader().read(tmp_path, "test")
    assert "svhn test: a subset of 10 images (official: 26032)" in caplog.text


def test_stl10_labelled_split_is_read_as_torchvision_reads_it(tmp_path, monkeypatch):
    images, labels = _arrays(12, 96)
    STL10Reader().write(tmp_path, "train", images, labels)
    x, y = STL10Reader().read(tmp_path, "train")
    assert np.array_equal(x, images) and np.array_equal(y, labels)
    monkeypatch.setattr(STL10, "_check_integrity", lambda self: True)
    tv = STL10(str(tmp_path), split="train", download=False)
    assert np.array_equal(tv.data, images.transpose(0, 3, 1, 2))
    assert np.array_equal(tv.labels, labels)


def test_stl10_trains_at_96_pixels_on_both_pipelines(tmp_path):
    write_fake(tmp_path, "stl10", n_train=40, n_test=10)
    for pipeline in ("device", "dataloader"):
        dm = _data_module("stl10", tmp_path, f"data.pipeline={pipeline}")
        assert dm.image_size == 96 and dm.padding == 12 and dm.flip
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        if pipeline == "device":
            batch = dm.on_after_batch_transfer(batch.to("cpu"), 0)
        assert batch.x.shape == (8, 3, 96, 96) and batch.x.dtype == torch.float32


def test_a_truncated_stl10_file_is_named(tmp_path):
    STL10Reader().write(tmp_path, "train", *_arrays(4, 96))
    path = tmp_path / "stl10_binary" / "train_X.bin"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="train_X.bin"):
        STL10Reader().read(tmp_path, "train")


def test_an_image_folder_tree_is_read_as_imagefolder_reads_it(tmp_path):
    reader = ImageFolderReader(image_size=16)
    images, labels = _arrays(9, 16, num_classes=3)
    reader.write(tmp_path, "train", images, labels)
    x, y = reader.read(tmp_path, "train")
    tv = ImageFolder(str(tmp_path / "train"))
    assert reader.classes(tmp_path) == tuple(tv.classes)
    assert sorted(y.tolist()) == sorted(t for _, t in tv.samples)
    order = [int(Path(p).stem) for p, _ in tv.samples]  # PNG names are the written indices
    assert np.array_equal(x, images[order]) and np.array_equal(y, labels[order])


def test_image_folder_resizes_to_data_image_size(tmp_path):
    ImageFolderReader(image_size=40).write(tmp_path, "train", *_arrays(12, 40, 3))
    ImageFolderReader(image_size=40).write(tmp_path, "test", *_arrays(6, 40, 3, seed=1))
    dm = _data_module(
        "image_folder", tmp_path, "data.num_classes=3", "data.image_size=24", "data.val_size=3"
    )
    dm.setup("fit")
    assert dm.splits["train"][0].shape[1:] == (24, 24, 3)
    batch = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(batch.to("cpu"), 0)
    assert batch.x.shape[-2:] == (24, 24)


def test_image_folder_mistakes_are_named(tmp_path):
    reader = ImageFolderReader(image_size=16)
    reader.write(tmp_path, "train", *_arrays(6, 16, 2))
    (tmp_path / "test" / "zebra").mkdir(parents=True)
    ImageFolderReader(16).write(tmp_path / "x", "train", *_arrays(1, 16, 1))
    (tmp_path / "x" / "train" / "class_000" / "000000.png").rename(
        tmp_path / "test" / "zebra" / "a.png"
    )
    with pytest.raises(DataError, match="class folders \\['zebra'\\] that train/ does not have"):
        reader.read(tmp_path, "test")
    with pytest.raises(ValueError, match="data.num_classes=5 but image_folder has 2 classes"):
        _data_module("image_folder", tmp_path, "data.num_classes=5", "data.image_size=16").setup()
    with pytest.raises(DataError, match="no folder .*train"):
        ImageFolderReader(16).classes(tmp_path / "nowhere")


@pytest.mark.parametrize("dataset", ["svhn", "stl10"])
def test_a_missing_dataset_says_where_its_files_go(tmp_path, dataset):
    dm = _data_module(dataset, tmp_path)
    where = {"svhn": "train_32x32.mat", "stl10": "stl10_binary"}[dataset]
    with pytest.raises(DataError, match=f"{dataset} not found under data.root=.*{where}"):
        dm.prepare_data()


@pytest.mark.parametrize(
    "dataset, extra",
    [("svhn", []), ("stl10", []), ("image_folder", ["data.num_classes=10", "data.image_size=32"])],
)
def test_a_training_run_on_each_new_dataset(tmp_path, dataset, extra):
    data = tmp_path / "data"
    reader = ImageFolderReader(32) if dataset == "image_folder" else dataset
    write_fake(data, reader, n_train=80, n_test=20, num_classes=10)
    out = tmp_path / "run"
    args = [
        "+experiment=baseline_cnn",
        f"data={dataset}",
        *extra,
        *tiny_overrides(data, out),
        "data.val_size=20",
        "data.eval_batch_size=20",
    ]
    run_train(args, tmp_path)
    res = read_results(out)
    assert res["dataset"] == dataset and res["status"] == "finished"
