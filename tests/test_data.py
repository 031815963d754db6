"""The CIFAR data module: splits, augmentation, download policy and every data error."""

from __future__ import annotations

import dataclasses
import pickle

import lightning as L
import numpy as np
import pytest
import torch

import kdlab.data.layout as layout_mod
from kdlab.data.cifar import CIFARDataModule
from kdlab.data.layout import DataError, load_split
from kdlab.data.readers.cifar import CIFARReader
from kdlab.data.synthetic import write_fake_cifar
from tests.conftest import SHARED_DATA, needs_shared


def dm(root, **kw) -> CIFARDataModule:
    kw = {"val_size": 50, "batch_size": 16, "num_workers": 0, "download": False} | kw
    return CIFARDataModule(root=str(root), **kw)


def test_split_sizes_disjoint_and_complete(tiny_cifar10):
    d = dm(tiny_cifar10)
    d.setup()
    assert len(d.splits["train"][1]) == 350 and len(d.splits["val"][1]) == 50
    assert len(d.splits["test"][1]) == 100
    tr, va = set(d.train_indices.tolist()), set(d.val_indices.tolist())
    assert not tr & va and tr | va == set(range(400))
    x, _ = load_split(tiny_cifar10, "cifar10", train=True)
    assert np.array_equal(d.splits["val"][0], x[d.val_indices])


def test_val_split_is_the_same_for_every_run_seed(tiny_cifar10):
    L.seed_everything(0)
    a = dm(tiny_cifar10)
    a.setup()
    L.seed_everything(1)
    b = dm(tiny_cifar10)
    b.setup()
    assert np.array_equal(a.val_indices, b.val_indices)
    c = dm(tiny_cifar10, split_seed=7)
    c.setup()
    assert not np.array_equal(a.val_indices, c.val_indices)  # the split seed is what decides


def test_train_size_keeps_a_class_balanced_subset_the_same_for_every_seed(tiny_cifar10):
    full = dm(tiny_cifar10)
    full.setup()
    L.seed_everything(0)
    a = dm(tiny_cifar10, train_size=103)
    a.setup()
    L.seed_everything(1)
    b = dm(tiny_cifar10, train_size=103, seed=1)
    b.setup()
    assert np.array_equal(a.train_indices, b.train_indices) and len(a.train_indices) == 103
    assert set(a.train_indices.tolist()) < set(full.train_indices.tolist())
    assert np.array_equal(a.val_indices, full.val_indices)  # validation is untouched
    counts = np.bincount(a.splits["train"][1], minlength=10)
    assert counts.max() - counts.min() == 1 and counts.sum() == 103
    x, y = load_split(tiny_cifar10, "cifar10", train=True)
    assert np.array_equal(a.splits["train"][0], x[a.train_indices])
    assert np.array_equal(a.splits["train"][1], y[a.train_indices])
    assert len(a.train_labels) == 103


def test_train_size_errors(tiny_cifar10):
    with pytest.raises(DataError, match="train_size=351 but the training split has only 350"):
        dm(tiny_cifar10, train_size=351).setup()
    with pytest.raises(ValueError, match="data.train_size must be a positive integer or null"):
        dm(tiny_cifar10, train_size=0)


def test_augmentation_only_on_train(tiny_cifar10):
    d = dm(tiny_cifar10)
    d.setup()
    torch.manual_seed(0)
    train_ds = d.train_dataloader().dataset
    draws = torch.stack([train_ds[0][0] for _ in range(8)])
    assert not all(torch.equal(draws[0], t) for t in draws[1:])
    val_ds = d.val_dataloader().dataset
    assert torch.equal(val_ds[3][0], val_ds[3][0])
    # un-augmented val image = normalised original pixels
    img = torch.from_numpy(d.splits["val"][0][3]).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(d.mean)[:, None, None], torch.tensor(d.std)[:, None, None]
    assert torch.allclose(val_ds[3][0], (img - mean) / std, atol=1e-5)


def test_unitcube_normalisation_maps_to_minus_one_one(tiny_cifar10):
    d = dm(tiny_cifar10, normalize="unitcube", augment=False)
    d.setup()
    x = next(iter(d.train_dataloader())).x
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.5
    with pytest.raises(ValueError, match="normalize"):
        dm(tiny_cifar10, normalize="imagenet")


def test_cifar100_layout(tiny_cifar100):
    d = dm(tiny_cifar100, name="cifar100")
    d.setup()
    assert d.num_classes == 100 and d.splits["train"][1].max() < 100


def test_missing_data_with_download_off_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="data.download=true"):
        dm(tmp_path).prepare_data()


def test_download_only_when_missing(tmp_path, tiny_cifar10):
    calls = []

    class Recording(CIFARReader):
        def download(self, root):
            calls.append(root)
            write_fake_cifar(root, "cifar10", 100, 20)

    dm(tiny_cifar10, download=True, reader=Recording("cifar10")).prepare_data()
    assert calls == []  # present: nothing downloaded
    dm(tmp_path, download=True, reader=Recording("cifar10")).prepare_data()
    assert calls == [str(tmp_path)]


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst / "cifar-10-batches-py"


def test_truncated_and_corrupt_batch_files_name_the_file(tiny_cifar10, tmp_path):
    folder = _copy(tiny_cifar10, tmp_path / "t")
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_2.*corrupt or truncated"):
        load_split(tmp_path / "t", "cifar10", train=True)
    folder = _copy(tiny_cifar10, tmp_path / "c")
    (folder / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="test_batch"):
        load_split(tmp_path / "c", "cifar10", train=False)


def test_wrong_layout_errors(tiny_cifar10, tiny_cifar100, tmp_path):
    folder = _copy(tiny_cifar10, tmp_path / "w")
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({"pixels": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(DataError, match="no 'data' entry"):
        load_split(tmp_path / "w", "cifar10", train=True)
    folder = _copy(tiny_cifar10, tmp_path / "s")
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(DataError, match="N×3072"):
        load_split(tmp_path / "s", "cifar10", train=True)
    folder = _copy(tiny_cifar10, tmp_path / "l")
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 12]}, f)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 9\]"):
        load_split(tmp_path / "l", "cifar10", train=True)
    folder = _copy(tiny_cifar10, tmp_path / "m")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["a"] * 10}, f)
    with pytest.raises(DataError, match="class names"):
        load_split(tmp_path / "m", "cifar10", train=False)


def test_full_size_files_must_pass_torchvision_checksums(tiny_cifar10, monkeypatch):
    # Pretend our tiny files are the full official size: the md5 check must then reject them.
    small = dataclasses.replace(layout_mod.LAYOUTS["cifar10"], n_train=400, n_test=100)
    monkeypatch.setitem(layout_mod.LAYOUTS, "cifar10", small)
    with pytest.raises(DataError, match="md5"):
        load_split(tiny_cifar10, "cifar10", train=False)


def test_subset_is_accepted_with_a_log_line(tiny_cifar10, caplog):
    with caplog.at_level("WARNING"):
        load_split(tiny_cifar10, "cifar10", train=False)
    assert "subset of 100 images" in caplog.text


def test_bad_options_are_rejected(tiny_cifar10):
    with pytest.raises(ValueError, match="pipeline"):
        dm(tiny_cifar10, pipeline="gpu")
    with pytest.raises(ValueError, match="val_size"):
        dm(tiny_cifar10, val_size=0)
    with pytest.raises(DataError, match="val_size"):
        dm(tiny_cifar10, val_size=400).setup()
    with pytest.raises(ValueError, match="classes"):
        dm(tiny_cifar10, num_classes=100)


@needs_shared
def test_real_subset_facts():
    _, y_test = load_split(SHARED_DATA, "cifar10", train=False)
    x_train, y_train = load_split(SHARED_DATA, "cifar10", train=True)
    assert y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert x_train.shape == (5000, 32, 32, 3) and x_train.dtype == np.uint8


def test_full_size_copy_failing_md5_needs_verify_structure(tmp_path_factory, caplog):
    """A full-size, structurally valid copy whose bytes differ from the official files (a
    re-encoding) is refused by default with a message naming the option, accepted with it."""
    root = tmp_path_factory.mktemp("full")
    write_fake_cifar(root, "cifar10", n_train=50_000, n_test=10_000, seed=1)
    strict = CIFARDataModule("cifar10", str(root), download=False, val_size=5000)
    with pytest.raises(DataError, match=r"fail torchvision's md5 check.*data.verify=structure"):
        strict.setup()
    relaxed = CIFARDataModule(
        "cifar10", str(root), download=False, val_size=5000, verify="structure"
    )
    with caplog.at_level("INFO", logger="kdlab.data.layout"):
        relaxed.setup()
    assert len(relaxed.splits["train"][1]) == 45_000 and len(relaxed.splits["test"][1]) == 10_000
    assert "data.verify=structure" in caplog.text and "md5 not checked" in caplog.text
    with pytest.raises(ValueError, match="data.verify='sha1' is not allowed"):
        CIFARDataModule("cifar10", str(root), verify="sha1")
