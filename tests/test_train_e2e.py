"""End to end through ``python -m kdlab.train`` subprocesses: outputs, teacher store, determinism."""

from __future__ import annotations

import csv

import pytest

from kdlab.models.export import load_exported
from tests.conftest import SHARED_DATA, needs_shared, read_results, run_train, tiny_overrides

pytestmark = pytest.mark.slow

RESULT_KEYS = {
    "dataset",
    "teacher",
    "student",
    "method",
    "alpha",
    "temperature",
    "beta",
    "seed",
    "epochs",
    "val_acc_best",
    "test_acc_best",
    "test_acc_final",
    "test_nll",
    "test_ece",
}
METRICS = ["val_acc_best", "test_acc_best", "test_acc_final", "test_nll", "test_ece"]


@pytest.fixture(scope="module")
def baseline_runs(tiny_cifar10, tmp_path_factory):
    """The same baseline_r18 command twice (W&B offline on), and once with another seed."""
    base = tmp_path_factory.mktemp("baseline")
    runs = {}
    for name, extra in (("a", []), ("b", []), ("seed1", ["seed=1"])):
        out = base / name
        run_train(
            ["+experiment=baseline_r18", *tiny_overrides(tiny_cifar10, out), *extra], cwd=base
        )
        runs[name] = out
    return runs


def test_baseline_writes_results_checkpoints_csv_and_wandb(baseline_runs):
    out = baseline_runs["a"]
    res = read_results(out)
    assert RESULT_KEYS <= set(res)
    assert res["dataset"] == "cifar10" and res["student"] == "r18" and res["method"] == "baseline"
    assert (
        res["teacher"] is None and res["alpha"] is None and res["seed"] == 0 and res["epochs"] == 1
    )
    for key in METRICS:
        assert res[key] is not None
    assert 0 <= res["test_acc_best"] <= 100 and res["status"] == "finished"
    assert (out / "checkpoints" / "best.ckpt").is_file() and (
        out / "checkpoints" / "last.ckpt"
    ).is_file()
    assert (out / ".hydra" / "config.yaml").is_file()
    rows = list(csv.DictReader(open(out / "csv" / "metrics.csv")))
    columns = set(rows[0])
    needed = {
        "train/loss",
        "train/loss_ce",
        "train/acc",
        "train/grad_norm",
        "lr",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "test/acc",
        "test/nll",
        "test/ece",
        "test_final/acc",
    }
    assert not {c for c in needed if not any(c == k or k.startswith(c + "_") for k in columns)}
    assert float(next(r for r in rows if r.get("test/acc"))["test/acc"]) == pytest.approx(
        res["test_acc_best"]
    )
    wandb_runs = list((out / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1


def test_same_command_gives_identical_metrics_and_another_seed_does_not(baseline_runs):
    a, b, c = (read_results(baseline_runs[k]) for k in ("a", "b", "seed1"))
    assert [a[k] for k in METRICS] == [b[k] for k in METRICS]
    assert [a[k] for k in METRICS] != [c[k] for k in METRICS]


def test_teacher_run_lands_in_the_teacher_store(tiny_cifar10, tmp_path):
    out, logs = tmp_path / "t50", tmp_path / "logs"
    run_train(
        ["+experiment=teacher_r50", *tiny_overrides(tiny_cifar10, out, logs), "logger=csv"],
        cwd=tmp_path,
    )
    res = read_results(out)
    stored = logs / "teachers" / "cifar10" / "r50" / "seed0.ckpt"
    assert res["method"] == "teacher" and res["teacher_store_path"] == str(stored)
    net = load_exported(stored)
    assert net.arch == "r50" and net.num_classes == 10


@needs_shared
def test_baseline_on_the_real_cifar10_subset(tmp_path):
    out = tmp_path / "real"
    args = [
        "+experiment=baseline_r18",
        *tiny_overrides(SHARED_DATA, out),
        "data.val_size=500",
        "logger=csv",
    ]
    run_train(args, cwd=tmp_path)
    res = read_results(out)
    assert res["dataset"] == "cifar10" and res["test_acc_best"] is not None
