"""The quick start trains, distils and reports end to end, and skips finished runs when run
again; the notebook study script prints the commands it would run, in order, with the data and
output folders and any extra override passed through, and refuses to run without them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import read_results

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "notebook_study.sh"


def test_notebook_study_dry_run_lists_every_step(tmp_path):
    proc = subprocess.run(
        ["bash", str(SCRIPT), "DATA", str(tmp_path / "out"), "--dry-run", "data.verify=structure"],
        capture_output=True,
        text=True,
        check=True,
    )
    steps = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert len(steps) == 6
    assert "+experiment=teacher_preresnet20_cifar10" in steps[0]
    assert "+experiment=baseline_cnn" in steps[1] and "seed=0\\,1\\,2" in steps[1]
    assert "+experiment=preresnet20_cnn_logit" in steps[2]
    assert "alpha=0.5\\,0.8\\,0.95" in steps[3] and "temperature=2\\,4\\,10" in steps[3]
    assert "kdlab.report" in steps[4] and "kdlab.analysis temperature" in steps[5]
    assert all("data.verify=structure" in s for s in steps[:4]) and "--verify structure" in steps[5]
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_notebook_study_needs_data_and_output_folders():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 2 and "DATA_ROOT OUT" in proc.stdout


QUICKSTART = REPO / "scripts" / "quickstart.sh"


@pytest.mark.slow
def test_quickstart_trains_teacher_baseline_and_student_then_reports(tmp_path, tiny_cifar10):
    out = tmp_path / "qs"
    tiny = [
        "data.val_size=50",
        "data.batch_size=16",
        "data.eval_batch_size=50",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        WANDB_MODE="offline",
        PYTHONWARNINGS="ignore",
        KDLAB_CACHE=str(tmp_path / "cache"),
        STUDENT_IMAGES="100",
    )
    cmd = ["bash", str(QUICKSTART), str(tiny_cifar10), str(out), *tiny]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    teacher = read_results(out / "teacher")
    baseline, student = read_results(out / "baseline"), read_results(out / "distilled")
    assert teacher["student"] == "cnn_wide" and teacher["status"] == "finished"
    assert teacher["train_size"] is None and baseline["train_size"] == student["train_size"] == 100
    assert (out / "logs" / "teachers" / "cifar10" / "cnn_wide" / "seed0.ckpt").is_file()
    assert baseline["student"] == student["student"] == "cnn" and baseline["method"] == "baseline"
    assert student["teacher"] == "cnn_wide" and student["method"] == "logit"
    assert (student["alpha"], student["temperature"]) == (0.8, 10.0)
    assert "Δ" in proc.stdout and "cifar10[100]" in proc.stdout and (out / "report").is_dir()

    # again: every run is already finished, so nothing trains and the results stay as they were
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_results(out / "distilled") == student
    assert not (out / "distilled" / "previous").exists()


def test_the_cpu_replication_plan_exports_the_independent_network_and_measures_agreement():
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "cifar100_cpu_study.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "STUDIES": "replication", "OUT": "O", "DATA_ROOT": "D"},
    )
    lines = proc.stdout.splitlines()
    teacher, baseline, student, agreement, total = lines
    assert (
        "+experiment=teacher_preresnet20 seed=0" in teacher
        and "paths.teachers=O/teachers" in teacher
    )
    # the independent network is exported to a store of its own, never into the teachers'
    assert "+experiment=baseline_preresnet20 seed=1" in baseline
    assert "export_teacher=true paths.teachers=O/replication/independent" in baseline
    assert baseline.count("paths.teachers=") == 1
    assert "+experiment=self_preresnet20_logit seed=0 teacher.seed=0" in student
    assert agreement.split() == [
        "python",
        "-m",
        "kdlab.analysis",
        "agreement",
        "O/teachers/cifar100/preresnet20/seed0.ckpt",
        "O/replication/independent/cifar100/preresnet20/seed1.ckpt",
        "--data-root",
        "D",
        "--verify",
        "structure",
        "--out",
        "O/replication/agreement_independent.md",
    ]
    assert total == "total: 3 jobs"
