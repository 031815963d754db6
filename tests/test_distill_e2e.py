"""Distillation end to end: tiny teachers → store → logit, feature and ensemble students."""

from __future__ import annotations

import pytest

from kdlab.models.export import sha256_file
from tests.conftest import SHARED_DATA, needs_shared, read_results, run_train, tiny_overrides

pytestmark = pytest.mark.slow
FIDELITY = ["test_agreement", "test_kl", "teacher_test_acc", "test_nll", "test_ece"]


@pytest.fixture(scope="module")
def store(tiny_cifar10, tmp_path_factory):
    """Two R34 teachers (seeds 0, 1) trained by one `-m` sweep into a fresh teacher store."""
    base = tmp_path_factory.mktemp("distill")
    logs = base / "logs"
    args = [
        "+experiment=teacher_r34",
        *tiny_overrides(tiny_cifar10, base / "unused", logs),
        "logger=csv",
    ]
    args = [a for a in args if not a.startswith("hydra.run.dir")]
    run_train([*args, f"hydra.sweep.dir={base / 'teachers_sweep'}", "-m", "seed=0,1"], cwd=base)
    paths = [logs / "teachers" / "cifar10" / "r34" / f"seed{s}.ckpt" for s in (0, 1)]
    assert all(p.is_file() for p in paths)
    return base, logs, {p: sha256_file(p) for p in paths}


def distil(store, tiny_cifar10, name: str, *extra: str) -> dict:
    base, logs, _ = store
    out = base / name
    run_train([*tiny_overrides(tiny_cifar10, out, logs), "logger=csv", *extra], cwd=base)
    return read_results(out)


def test_logit_student_records_fidelity_and_teacher_hash(store, tiny_cifar10):
    res = distil(store, tiny_cifar10, "logit", "+experiment=r34_r18_logit")
    assert res["method"] == "logit" and res["teacher"] == "r34" and res["student"] == "r18"
    assert (res["alpha"], res["temperature"], res["beta"]) == (0.7, 2, None)
    for key in FIDELITY:
        assert res[key] is not None, key
    assert 0 <= res["test_agreement"] <= 100 and res["test_kl"] >= 0
    path = store[1].joinpath("teachers", "cifar10", "r34", "seed0.ckpt")
    assert res["teacher_sha256"] == [store[2][path]]
    assert res["grad_clip_scope"] == "all"


def test_feature_student_logs_its_loss_terms(store, tiny_cifar10):
    res = distil(
        store, tiny_cifar10, "feature", "+experiment=r34_r18_feature", "clip_scope=student"
    )
    assert res["method"] == "feature" and res["beta"] == 0.5 and res["grad_clip_scope"] == "student"
    header = (store[0] / "feature" / "csv" / "metrics.csv").read_text().splitlines()[0]
    for term in (
        "train/loss_mse",
        "train/loss_cos",
        "train/loss_kd",
        "train/loss_ce",
        "train/grad_norm",
    ):
        assert term in header


def test_ensemble_of_two_store_teachers(store, tiny_cifar10):
    res = distil(store, tiny_cifar10, "ens", "+experiment=r34_r18_logit", "teacher.seeds=[0,1]")
    assert res["teacher"] == "ens2_r34" and len(res["teacher_sha256"]) == 2
    assert len(res["teacher_member_test_acc"]) == 2
    assert all(a is not None for a in res["teacher_member_test_acc"])
    for key in FIDELITY:
        assert res[key] is not None, key


def test_teacher_files_are_untouched_by_students(store, tiny_cifar10):
    distil(store, tiny_cifar10, "untouched", "+experiment=r34_r18_logit", "alpha=0.5")
    for path, digest in store[2].items():
        assert sha256_file(path) == digest


def test_missing_teacher_fails_with_path_and_command(tiny_cifar10, tmp_path):
    out = tmp_path / "missing"
    proc = run_train(
        [
            "+experiment=r50_r18_logit",
            *tiny_overrides(tiny_cifar10, out, tmp_path / "logs"),
            "logger=csv",
        ],
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert str(tmp_path / "logs" / "teachers" / "cifar10" / "r50" / "seed0.ckpt") in text
    assert "python -m kdlab.train +experiment=teacher_r50 data=cifar10 seed=0" in text
    assert (
        not (out / "results.json").exists()
        or '"finished"' not in (out / "results.json").read_text()
    )


def test_bad_alpha_is_a_clear_error(tiny_cifar10, tmp_path):
    proc = run_train(
        [
            "+experiment=r34_r18_logit",
            *tiny_overrides(tiny_cifar10, tmp_path / "a", tmp_path / "logs"),
            "alpha=1.5",
            "teacher.ckpt=/nonexistent.ckpt",
        ],
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    # validated before the (missing) teacher is even looked at
    assert "alpha=1.5 is outside [0, 1]" in proc.stdout + proc.stderr


@needs_shared
def test_real_subset_teacher_then_logit_student(tmp_path):
    logs = tmp_path / "logs"
    common = [*tiny_overrides(SHARED_DATA, tmp_path / "t", logs), "data.val_size=500", "logger=csv"]
    run_train(["+experiment=teacher_r34", *common], cwd=tmp_path)
    teacher = read_results(tmp_path / "t")
    student_args = [a for a in common if not a.startswith("hydra.run.dir")]
    run_train(
        ["+experiment=r34_r18_logit", *student_args, f"hydra.run.dir={tmp_path / 's'}"],
        cwd=tmp_path,
    )
    student = read_results(tmp_path / "s")
    assert teacher["status"] == student["status"] == "finished"
    assert student["teacher_test_acc"] == pytest.approx(teacher["test_acc_best"])
