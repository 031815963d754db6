"""Re-running is safe and useful: finished runs and sweeps are left untouched, a sweep re-run
completes what failed or died, a killed run resumes exactly (DataLoader workers on), a held
folder refuses a second launch, and every bad input stops the run with one clear message.

Real ``python -m kdlab.train`` subprocesses on the tiny synthetic CIFAR-10 of helpers_sweep.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers_sweep import REPO, env, make_world, results, run_train, tiny

pytestmark = pytest.mark.slow
BASE = ["+experiment=baseline_cnn"]
DISTIL = ["+experiment=r56_cnn_logit", "teacher=cnn"]
METRICS = ["val_acc_best", "test_acc_best", "test_acc_final", "test_nll", "test_ece"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("rerun"))


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` except the logs (which record the skip)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix != ".log"
    }


def test_finished_run_is_skipped_untouched_and_rerun_keeps_the_old_outputs(world):
    out = world["root"] / "single"
    args = [*BASE, *tiny(world, epochs=2), f"hydra.run.dir={out}"]
    run_train(world["root"], *args)
    before = digest(out)
    again = run_train(world["root"], *args)
    assert "already finished" in again.stdout + again.stderr
    assert digest(out) == before  # nothing re-tested or rewritten
    run_train(world["root"], *args, "rerun=true")
    (kept,) = (out / "previous").iterdir()  # the first run's outputs, moved aside intact
    assert digest(kept)["results.json"] == before["results.json"]
    assert digest(kept)["checkpoints/last.ckpt"] == before["checkpoints/last.ckpt"]
    assert results(out)["status"] == "finished"
    # a new record, written after the old one moved aside (the contents may equal: same seed)
    assert (out / "results.json").stat().st_mtime_ns > (kept / "results.json").stat().st_mtime_ns


def test_finished_sweep_rerun_changes_no_file(world):
    sweep = world["root"] / "sweep_done"
    args = ["-m", *DISTIL, *tiny(world), "alpha=0.3,0.6", f"hydra.sweep.dir={sweep}"]
    run_train(world["root"], *args)
    jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    before = {j.name: digest(j) for j in jobs}
    again = run_train(world["root"], *args)
    assert (again.stdout + again.stderr).count("already finished") == 2
    assert {j.name: digest(j) for j in jobs} == before
    assert "2 finished, 0 failed, 0 missing of 2" in again.stdout


def test_sweep_with_a_bad_value_completes_after_fixing_only_that_value(world):
    sweep = world["root"] / "sweep_fix"
    common = ["-m", *DISTIL, *tiny(world), f"hydra.sweep.dir={sweep}"]
    first = run_train(world["root"], *common, "alpha=0.5,1.5", check=False)
    assert first.returncode == 1 and "1 finished, 1 failed" in first.stdout
    fixed = run_train(world["root"], *common, "alpha=0.5,0.9")
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["finished"], summary["failed"], summary["superseded"]) == (2, 0, 1)
    assert "already finished" in fixed.stdout + fixed.stderr  # α 0.5 was not trained again


def test_sweep_resume_command_finishes_a_killed_job(world):
    sweep = world["root"] / "sweep_killed"
    kill = "+callbacks.kill._target_=helpers_rerun.KillOnce"
    first = run_train(
        world["root"],
        "-m",
        *DISTIL,
        *tiny(world, epochs=2),
        kill,
        "alpha=0.5",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    assert first.returncode != 0
    (job,) = [p for p in sweep.iterdir() if (p / ".hydra").is_dir()]
    assert not (job / "results.json").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "kdlab.sweep", str(sweep), "--resume"],
        cwd=world["root"],
        env=env(world["root"]),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming from" in proc.stdout + proc.stderr
    assert results(job)["status"] == "finished" and results(job)["epochs_trained"] == 2


def test_killed_run_with_workers_resumes_to_the_uninterrupted_metrics(world):
    args = [*BASE, *tiny(world, epochs=3), "data.pipeline=dataloader", "data.num_workers=2"]
    full, part = world["root"] / "workers_full", world["root"] / "workers_killed"
    run_train(world["root"], *args, f"hydra.run.dir={full}")
    kill = "+callbacks.kill._target_=helpers_rerun.KillOnce"
    killed = run_train(world["root"], *args, kill, f"hydra.run.dir={part}", check=False)
    assert killed.returncode != 0 and not (part / "results.json").exists()
    run_train(world["root"], *args, kill, f"hydra.run.dir={part}")
    assert {k: results(part)[k] for k in METRICS} == {k: results(full)[k] for k in METRICS}
    # the training curve of epoch 0 (before the kill) survived the resume
    rows = (part / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs = {r.split(",")[header.index("epoch")] for r in rows[1:]}
    assert {"0", "1", "2"} <= epochs


def test_second_launch_into_a_held_folder_fails_fast_and_a_stale_lock_is_taken(world):
    out = world["root"] / "held"
    args = [*BASE, *tiny(world), f"hydra.run.dir={out}"]
    hold = subprocess.Popen(
        [sys.executable, "-m", "kdlab.train", *args, "+callbacks.hold._target_=helpers_rerun.Hold"],
        cwd=world["root"],
        env=env(world["root"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not (out / "holding").exists():
            assert time.time() < deadline and hold.poll() is None, "the first run did not start"
            time.sleep(0.5)
        started = time.time()
        second = run_train(world["root"], *args, check=False)
        assert second.returncode != 0 and time.time() - started < 60
        text = second.stdout + second.stderr
        assert f"run folder {out} is in use by pid {hold.pid}" in text
    finally:
        hold.send_signal(signal.SIGKILL)  # leaves its lock behind, as a crash would
        hold.wait()
    assert (out / ".kdlab.lock").exists()
    third = run_train(world["root"], *args, "rerun=true")  # the held run's config had Hold
    assert "stale lock" in third.stdout + third.stderr and results(out)["status"] == "finished"


def test_progress_is_one_line_per_epoch_in_a_log_file(world):
    out = world["root"] / "progress"
    defaults = [a for a in tiny(world, epochs=2) if not a.startswith("callbacks.progress_bar")]
    proc = run_train(world["root"], *BASE, *defaults, f"hydra.run.dir={out}")
    text = proc.stdout + proc.stderr
    for epoch in (1, 2):
        assert f"epoch {epoch}/2 · train loss" in text
    assert "img/s" in text and "ETA" in text
    assert "it/s" not in text and "Epoch 1/1" not in text  # output is not a terminal: no bar
    assert "epoch 2/2 · train loss" in (out / "train.log").read_text()


def test_eval_reproduces_the_runs_test_accuracy(world):
    out = world["root"] / "evaluated"
    run_train(world["root"], *DISTIL, *tiny(world), f"hydra.run.dir={out}")
    res = results(out)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdlab.eval",
            f"ckpt={out / 'checkpoints' / 'best.ckpt'}",
            f"teacher.ckpt={world['logs'] / 'teachers' / 'cifar10' / 'cnn' / 'seed0.ckpt'}",
            f"out={out / 'eval.json'}",
            f"paths.log_dir={world['logs']}",
        ],
        cwd=world["root"],
        env=env(world["root"]),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = json.loads((out / "eval.json").read_text())
    keys = (
        "test_acc_best",
        "test_nll",
        "test_ece",
        "test_agreement",
        "test_kl",
        "teacher_test_acc",
    )
    for key in keys:  # the run record's own keys
        assert ev[key] == pytest.approx(res[key], rel=1e-5, abs=1e-6), key
    assert ev["n_images"] == 64
    assert (ev["experiment"], ev["seed"], ev["method"]) == (res["experiment"], 0, res["method"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["alpha=0.5"], "alpha=0.5 is set, but this run trains without distillation"),
        (["seed=abc"], "seed='abc' is not an integer"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 is < 1"),
        (["+trainer.gradient_clip_val=0.5"], "pass grad_clip=<max norm>"),
        (["data=cifar100"], "holds cifar10"),
        (["resume=sometimes"], "resume='sometimes' is not allowed"),
        (["seed=1.5"], "seed=1.5 is not an integer"),
        (["data.val_size=6000"], "data.val_size=6000 leaves no training images"),
        (["optim.lr=-1"], "optim.lr=-1 is negative"),
        (["data.train_size=7"], "data.train_size=7 is smaller than the 10 classes"),
        ([*DISTIL, "teacher.seeds=[]"], "teacher.seeds=[] names no teacher"),
    ],
)
def test_bad_input_stops_before_training_with_one_clear_message(world, overrides, message):
    out = world["root"] / f"bad_{hashlib.sha256(' '.join(overrides).encode()).hexdigest()[:8]}"
    base = [] if overrides[0].startswith("+experiment") else BASE
    proc = run_train(
        world["root"], *base, *tiny(world), *overrides, f"hydra.run.dir={out}", check=False
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1 and message in text
    assert "Traceback" not in text and text.count(message) == 1  # one message, said once
    assert not (out / "checkpoints").exists()  # nothing trained
    record = results(out)  # the failure is the folder's record, its traceback beside it
    assert record["status"] == "failed" and message in record["error"]
    assert "Traceback" in (out / "error.txt").read_text()


def test_corrupt_last_checkpoint_names_the_way_out(world):
    out = world["root"] / "corrupt"
    args = [*BASE, *tiny(world, epochs=2), f"hydra.run.dir={out}"]
    run_train(world["root"], *args)
    (out / "results.json").unlink()  # as if killed before it ended
    (out / "checkpoints" / "last.ckpt").write_bytes(b"\x00truncated")
    proc = run_train(world["root"], *args, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and str(out / "checkpoints" / "last.ckpt") in text
    assert "resume=previous" in text and "resume=never" in text
    again = run_train(world["root"], *args, "resume=previous")
    assert "last.ckpt.prev" in again.stdout + again.stderr  # continued from the epoch before
    assert results(out)["status"] == "finished" and results(out)["epochs_trained"] == 2


def test_teacher_export_never_replaces_another_runs_file(world):
    args = ["+experiment=teacher", "model=cnn", *tiny(world), "seed=7"]
    run_train(world["root"], *args, f"hydra.run.dir={world['root'] / 'teacher_a'}")
    store = world["logs"] / "teachers" / "cifar10" / "cnn" / "seed7.ckpt"
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    other = world["root"] / "teacher_b"
    proc = run_train(world["root"], *args, f"hydra.run.dir={other}", check=False)
    assert proc.returncode != 0 and "export_teacher=overwrite" in proc.stdout + proc.stderr
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
    run_train(world["root"], *args, f"hydra.run.dir={other}", "export_teacher=overwrite")
    assert hashlib.sha256(store.read_bytes()).hexdigest() != before


@pytest.mark.parametrize("model", sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")))
def test_missing_teacher_message_names_a_command_that_exists(model, tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from kdlab.teachers.store import train_command

    command = train_command(model, "cifar100", 3).split()
    assert command[:3] == ["python", "-m", "kdlab.train"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*command[3:], f"paths.log_dir={tmp_path}"])
    expected = OmegaConf.load(REPO / "conf" / "model" / f"{model}.yaml")
    assert cfg.model._target_ == expected._target_ and cfg.method == "teacher"
    assert cfg.export_teacher and cfg.seed == 3 and cfg.data.name == "cifar100"


def test_a_failed_download_says_where_the_files_must_go(tmp_path):
    import urllib.error

    from kdlab.data.module import ImageDataModule
    from kdlab.data.readers import DataError
    from kdlab.data.readers.cifar import CIFARReader

    class Offline(CIFARReader):
        def download(self, root):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    dm = ImageDataModule(root=str(tmp_path / "data"), download=True, reader=Offline("cifar10"))
    with pytest.raises(DataError, match="could not download cifar10") as err:
        dm.prepare_data()
    assert "data.root=" in str(err.value) and str(tmp_path / "data") in str(err.value)
