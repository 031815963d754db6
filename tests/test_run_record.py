"""A run's record never lies: a folder keeps the config that trained in it, diverged and stopped
runs say so (and exit non-zero), the report counts only current finished runs, and nothing a
run derives or stages can block it or outlive it.

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

from tests.helpers_sweep import env, make_world, results, run_train, tiny

pytestmark = pytest.mark.slow
BASE = ["+experiment=baseline_cnn"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("record"))


def every_file(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder``, the logs and dot-files included."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def temporaries(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.rglob("*") if ".tmp" in p.name]


def start(world, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kdlab.train", *args],
        cwd=world["root"],
        env=env(world["root"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not (path.is_file() and text in path.read_text()):
        assert proc.poll() is None, f"the run ended early:\n{proc.stdout.read()[-3000:]}"
        assert time.time() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.2)


def test_a_relaunch_with_another_config_is_refused_and_changes_no_file(world):
    out = world["root"] / "fixed"
    args = [*BASE, *tiny(world, epochs=2), f"hydra.run.dir={out}"]
    run_train(world["root"], *args)
    before = every_file(out)
    proc = run_train(world["root"], *args, "seed=1", "model=cnn_wide", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "launched with another config" in text
    assert "seed: 0 → 1" in text and "rerun=true" in text and "new folder" in text
    assert every_file(out) == before  # config, record, checkpoints and log all as they were
    # keys that cannot change a result do not count as another config
    again = run_train(world["root"], *args, "logger=csv", "data.download=false")
    assert "already finished" in again.stdout + again.stderr
    # the documented way out: rerun=true trains the new config there, the old one moves aside
    run_train(world["root"], *args, "seed=1", "rerun=true")
    assert results(out)["seed"] == 1
    assert "seed: 1" in (out / ".hydra" / "config.yaml").read_text()
    (kept,) = (out / "previous").iterdir()
    assert "seed: 0" in (kept / ".hydra" / "config.yaml").read_text()
    assert json.loads((kept / "results.json").read_text())["seed"] == 0


def test_an_interrupted_run_relaunched_with_another_config_is_refused(world):
    out = world["root"] / "interrupted_fixed"
    args = [
        *BASE,
        *tiny(world, epochs=2),
        f"hydra.run.dir={out}",
        "+callbacks.k._target_=helpers_rerun.KillOnce",
    ]
    run_train(world["root"], *args, check=False)  # killed in epoch 2: last.ckpt of epoch 1
    assert not (out / "results.json").exists() and (out / "checkpoints" / "last.ckpt").exists()
    before = every_file(out)
    proc = run_train(world["root"], *args, "seed=5", "optim.lr=0.01", check=False)
    assert proc.returncode == 2 and "optim.lr: 0.001 → 0.01" in proc.stdout + proc.stderr
    assert every_file(out) == before
    run_train(world["root"], *args)  # the same config resumes
    assert results(out)["status"] == "finished" and results(out)["seed"] == 0
    # rerun=true trains another config there: its own .hydra/, the old one kept in previous/
    run_train(world["root"], *args, "seed=5", "rerun=true")
    assert results(out)["seed"] == 5
    assert "seed: 5" in (out / ".hydra" / "config.yaml").read_text()
    assert any("seed: 0" in p.read_text() for p in out.glob("previous/*/.hydra/config.yaml"))


def test_a_locked_launch_changes_no_file(world):
    out = world["root"] / "locked"
    args = [*BASE, *tiny(world), f"hydra.run.dir={out}"]
    hold = start(world, *args, "+callbacks.hold._target_=helpers_rerun.Hold")
    try:
        deadline = time.time() + 120
        while not (out / "holding").exists():
            assert time.time() < deadline and hold.poll() is None, "the first run did not start"
            time.sleep(0.2)
        before = every_file(out)
        second = run_train(world["root"], *args, check=False)
        assert second.returncode == 2 and "is in use by pid" in second.stdout + second.stderr
        assert every_file(out) == before
    finally:
        hold.kill()
        hold.wait()


def test_a_sweep_relaunched_with_changed_fixed_settings_is_refused(world):
    sweep = world["root"] / "sweep_fixed"
    grid = ["-m", *BASE, *tiny(world), "seed=0,1", f"hydra.sweep.dir={sweep}"]
    run_train(world["root"], *grid)
    saved = (sweep / "multirun.yaml").read_bytes()
    proc = run_train(world["root"], *grid, "optim.lr=0.01", "trainer.max_epochs=3", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "outside the grid" in text
    assert "optim.lr" in text and "trainer.max_epochs" in text
    assert (sweep / "multirun.yaml").read_bytes() == saved
    assert len(list(sweep.glob("[0-9]*"))) == 2  # no job ran
    # the grid itself may change: another seed joins the finished sweep
    grown = run_train(world["root"], *[a if a != "seed=0,1" else "seed=0,1,2" for a in grid])
    assert "3 finished, 0 failed, 0 missing of 3" in grown.stdout


def test_a_diverged_teacher_stops_at_once_is_named_and_never_exported(world):
    out = world["root"] / "diverged"
    proc = run_train(
        world["root"],
        "+experiment=teacher",
        "model=cnn",
        *tiny(world, epochs=3),
        "seed=11",
        "optim.lr=1e30",
        "grad_clip=null",
        f"hydra.run.dir={out}",
        check=False,
    )
    record = results(out)
    assert proc.returncode == 1 and record["status"] == "diverged"
    assert record["diverged_term"] == "loss_ce" and record["diverged_epoch"] == 0
    assert record["diverged_step"] <= 1  # the step after the one that blew the weights up
    assert "non-finite" in proc.stdout + proc.stderr
    assert not (world["logs"] / "teachers" / "cifar10" / "cnn" / "seed11.ckpt").exists()
    assert record["epochs_trained"] == 0 and record["seed"] == 11


def test_the_report_counts_current_finished_runs_only(world, tmp_path):
    runs = world["root"] / "report_runs"
    good = runs / "good"
    args = [*BASE, *tiny(world), "seed=3"]
    run_train(world["root"], *args, f"hydra.run.dir={good}")
    run_train(world["root"], *args, f"hydra.run.dir={good}", "rerun=true")  # previous/ holds one
    bad = runs / "bad"  # the same seed again, diverged
    run_train(
        world["root"], *args, f"hydra.run.dir={bad}", "optim.lr=1e30", "grad_clip=null", check=False
    )
    assert results(bad)["status"] == "diverged"
    from kdlab.report.build import make_report

    out = make_report([runs], tmp_path / "report", figures=False)
    (group,) = out.groups.values()
    assert group.seeds == [3] and group.runs[3].dir == good.resolve()
    (note,) = [p for p in out.problems if str(bad.resolve()) in p]
    assert "diverged" in note and "taken from the finished run" in note
    assert not any("previous" in p for p in out.problems)


def test_a_failed_run_is_named_failed_in_the_report(world, tmp_path):
    out = world["root"] / "report_failed"
    run_train(
        world["root"], *BASE, *tiny(world), "optim.lr=-1", f"hydra.run.dir={out}", check=False
    )
    from kdlab.report.collect import read_run

    problems: list[str] = []
    assert read_run(out / "results.json", problems) is None
    assert "the run is failed" in problems[0] and "optim.lr=-1 is negative" in problems[0]
    assert "lacks required key" not in problems[0]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_records_interrupted_and_a_relaunch_resumes_quietly(world, sig, code, fake_command):
    out = world["root"] / f"stopped_{sig.name}"
    args = [*BASE, *tiny(world, epochs=40), f"hydra.run.dir={out}"]
    proc = start(world, *args)
    wait_for(out / "train.log", "epoch 2/40", proc)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    record = results(out)
    assert proc.returncode == code and record["status"] == "interrupted"
    assert record["epochs_trained"] >= 1 and sig.name in record["reason"]
    assert not temporaries(out)
    # a relaunch continues from last.ckpt; its output holds no line the user did not cause
    fake_command("srun", "exit 0")  # Lightning hints at an unused srun when it finds one
    again = run_train(world["root"], *args)
    text = again.stdout + again.stderr
    assert "resuming from" in text and results(out)["status"] == "finished"
    for noise in (
        "`srun` command is available",
        "already configured with model summary",
        "GPU available:",
        "TPU available:",
        "litlogger",
        "batches=1.0)` was configured",
        "LeafSpec",
        "smaller than the logging interval",
        "Total FLOPs",
        "exists and is not empty",
    ):
        assert noise not in text, noise


def test_a_stopped_sweep_counts_the_jobs_that_never_started(world):
    sweep = world["root"] / "sweep_stopped"
    proc = start(
        world, "-m", *BASE, *tiny(world, epochs=40), "seed=0,1", f"hydra.sweep.dir={sweep}"
    )
    wait_for(sweep / "0_baseline_cnn_s0" / "train.log", "epoch 2/40", proc)
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["total"], summary["interrupted"], summary["missing"]) == (2, 1, 1)
    assert "never started" in text and "1 missing, 1 interrupted of 2" in text


def test_no_temporary_file_outlives_a_run(world, tmp_path):
    out = world["root"] / "no_tmp"
    scratch = tmp_path / "systemtmp"
    scratch.mkdir()
    args = [*BASE, *tiny(world, epochs=2), f"hydra.run.dir={out}"]
    proc = subprocess.run(
        [sys.executable, "-m", "kdlab.train", *args],
        cwd=world["root"],
        env=env(world["root"]) | {"TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not temporaries(out) and not list(scratch.iterdir())  # staged beside, then removed


def test_a_full_disk_is_one_message_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno
    import os

    from kdlab.utils import checkpoint_io
    from kdlab.utils.checkpoint_io import DiskFull, write_atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.os, "fsync", full)
    with pytest.raises(DiskFull, match="needs 2.0 MiB") as err:
        write_atomic(tmp_path / "last.ckpt", b"x" * (2 << 20), "checkpoint")
    assert str(tmp_path) in str(err.value) and "free" in str(err.value)
    assert os.listdir(tmp_path) == []


def test_a_corrupt_cache_is_moved_aside_and_rebuilt(tmp_path, caplog):
    import torch

    from kdlab.teachers.cache import load_or_compute

    path = tmp_path / "viewcache-abc.pt"
    torch.save({"logits": torch.ones(4, 3)}, path)
    path.write_bytes(path.read_bytes()[:100])  # truncated, as a killed writer leaves it
    fresh = torch.arange(12.0).reshape(4, 3)
    with caplog.at_level("WARNING"):
        got = load_or_compute(path, (4, 3), lambda: fresh, {}, "view cache")
    assert torch.equal(got, fresh)
    assert str(path) in caplog.text and "recomputing" in caplog.text
    assert len(list(tmp_path.glob("viewcache-abc.pt.bad-*"))) == 1  # kept for a look
    assert torch.equal(torch.load(path, weights_only=True)["logits"], fresh)  # rebuilt


def test_an_unreadable_checkpoint_names_its_path_and_never_advises_unsafe_loading(tmp_path):
    import pickle

    from kdlab.models.export import read_checkpoint

    garbage = tmp_path / "teacher.pt"
    garbage.write_bytes(b"\x93NUMPY random bytes \x00\x01")
    objects = tmp_path / "objects.pt"
    objects.write_bytes(pickle.dumps({"net": Path("x")}))  # pickled objects, not tensors
    for path in (garbage, objects):
        with pytest.raises(ValueError) as err:
            read_checkpoint(path)
        assert str(path) in str(err.value) and "weights_only" not in str(err.value)


def test_eval_takes_a_plain_state_dict_with_model_arch_and_needs_no_split(world, tmp_path):
    import torch

    out = world["root"] / "eval_plain"
    run_train(world["root"], *BASE, *tiny(world), f"hydra.run.dir={out}")
    state = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    plain = tmp_path / "plain.pt"
    torch.save({k[4:]: v for k, v in state.items() if k.startswith("net.")}, plain)
    # the synthetic copy has 96 training images: the default val_size=5000 could not split it
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdlab.eval",
            f"ckpt={plain}",
            "model=cnn",
            f"teacher.ckpt={plain}",
            "teacher.model=cnn",
            f"data.root={world['data']}",
            f"out={tmp_path / 'eval.json'}",
            f"paths.log_dir={world['logs']}",
        ],
        cwd=world["root"],
        env=env(world["root"]),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["student"] == "cnn" and ev["n_images"] == 64
    assert ev["test_acc_best"] == pytest.approx(results(out)["test_acc_best"])
    assert ev["test_agreement"] == 100.0 and ev["test_kl"] == pytest.approx(0.0, abs=1e-6)
    unnamed = subprocess.run(
        [sys.executable, "-m", "kdlab.eval", f"ckpt={plain}", f"data.root={world['data']}"],
        cwd=world["root"],
        env=env(world["root"]),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert unnamed.returncode == 1 and "model=ARCH" in unnamed.stdout + unnamed.stderr
    assert "Traceback" not in unnamed.stdout + unnamed.stderr


def test_every_optimiser_logs_its_learning_rate_as_lr(world):
    out = world["root"] / "adam_lr"
    run_train(world["root"], *BASE, *tiny(world), f"hydra.run.dir={out}")  # Adam, no scheduler
    header = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "lr" in header and not any(h.startswith("lr-") for h in header)


def test_sweep_command_refuses_a_folder_that_is_not_a_sweep(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "kdlab.sweep", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "not a sweep folder" in proc.stderr
    assert list(tmp_path.iterdir()) == []
