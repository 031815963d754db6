"""A dataset is one reader module and one config: a dataset written outside the repository (its
reader on PYTHONPATH, its ``data/<name>.yaml`` on Hydra's search path, nothing else) trains a
teacher at its own image size, is cached as teacher logits (plain and per view), is analysed
and is reported under its own name."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from kdlab.data.synthetic import write_fake
from kdlab.report.build import make_report
from tests.conftest import read_results, run_train, tiny_overrides

READER = '''
"""Four-class 16-px shapes stored as one .npz file per split."""

from pathlib import Path

import numpy as np

from kdlab.data.readers.base import Reader, check_arrays, check_split


class NpzShapes(Reader):
    name = "shapes"
    image_size = 16

    @property
    def num_classes(self):
        return 4

    def classes(self, root=""):
        return ("circle", "square", "cross", "ring")

    def missing(self, root):
        return [Path(root) / f"{s}.npz" for s in ("train", "test")
                if not (Path(root) / f"{s}.npz").is_file()]

    def location(self, root):
        return "'train.npz' and 'test.npz'"

    def read(self, root, split, verify="md5"):
        check_split(split)
        with np.load(Path(root) / f"{split}.npz") as f:
            x, y = f["x"], f["y"].astype(np.int64)
        check_arrays(x, y, 4, f"{root}/{split}.npz")
        return x, y

    def write(self, root, split, images, labels):
        Path(root).mkdir(parents=True, exist_ok=True)
        np.savez(Path(root) / f"{split}.npz", x=images, y=labels)
        return Path(root) / f"{split}.npz"
'''

CONFIG = """\
defaults:
  - _shared
  - _self_
name: shapes
reader:
  _target_: npz_shapes.NpzShapes
num_classes: 4
image_size: 16
root: ???
download: false
augment:
  crop_padding: 2
  flip: true
"""


def test_a_new_dataset_is_its_reader_and_config_only(tmp_path, monkeypatch):
    (tmp_path / "npz_shapes.py").write_text(READER)
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "shapes.yaml").write_text(CONFIG)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    spec = importlib.util.spec_from_file_location("npz_shapes", tmp_path / "npz_shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = tmp_path / "data"
    write_fake(data, module.NpzShapes(), n_train=120, n_test=40)
    shared = [
        "data=shapes",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "data.val_size=20",
        "data.eval_batch_size=20",
    ]

    teacher_dir = tmp_path / "teacher"
    run_train(
        ["+experiment=teacher", "model=cnn", *tiny_overrides(data, teacher_dir), *shared], tmp_path
    )
    res = read_results(teacher_dir)
    assert res["dataset"] == "shapes" and res["status"] == "finished"
    export = tmp_path / "logs" / "teachers" / "shapes" / "cnn" / "seed0.ckpt"
    assert export.is_file()

    plain = tmp_path / "kd_logit_cache"  # the un-augmented table (the notebook's recipe)
    proc = run_train(
        ["+experiment=r56_cnn_logit", "teacher=cnn", *tiny_overrides(data, plain), *shared],
        tmp_path,
    )
    assert "teacher logits: from the teacher-logit cache" in proc.stdout + proc.stderr
    views = tmp_path / "kd_view_cache"  # every crop/flip view of the 16-px images
    proc = run_train(
        [
            "+experiment=r56_cnn_logit",
            "teacher=cnn",
            "teacher_cache=false",
            "view_cache=true",
            "data.pipeline=device",
            "data.augment={crop_padding: 2, flip: true}",
            *tiny_overrides(data, views),
            *shared,
        ],
        tmp_path,
    )
    assert "from the view cache" in proc.stdout + proc.stderr
    assert "(50 views per image;" in proc.stdout + proc.stderr  # (2·2+1)² crops × 2 flips
    for run in (plain, views):
        res = read_results(run)
        assert res["dataset"] == "shapes" and res["status"] == "finished"
        assert res["teacher"] == "cnn"

    figure = tmp_path / "temperature.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdlab.analysis",
            "temperature",
            "--ckpt",
            str(export),
            "--data-root",
            str(data),
            "--out",
            str(figure),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert figure.stat().st_size > 0

    report = make_report([teacher_dir, plain, views], tmp_path / "report", figures=False)
    assert {g.dataset for g in report.groups.values()} == {"shapes"}
    assert "shapes" in (tmp_path / "report" / "results.csv").read_text()
