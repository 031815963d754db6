"""SLURM time limits, pre-emption and cancels (kdlab.slurm), first in-process, then for real.

In-process (no cluster, a second each): ``SlurmRequeue`` on a tiny Lightning fit with a fake
``scontrol`` (which, like SLURM, answers a requeue with SIGTERM to the job): the pre-timeout
signal gives exactly one ``scontrol requeue`` of the right array task and ``RunStopped("requeued")``
at the next batch, without a mid-epoch checkpoint; a SIGTERM alone gives ``cancelled``; a signal
before training waits for it; handlers come back afterwards; nothing happens off SLURM; the sweep
summary reads requeued/gone tasks from squeue.

For real (``@pytest.mark.slurm``; ``tests/slurm_cluster.py`` starts a single-node SLURM, or the
tests skip saying why): ``python -m kdlab.train -m hydra/launcher=slurm`` from the repository's
venv on a 96/64-image synthetic CIFAR-10 with the small CNN, CPU, 1 CPU per task —
a 2-task array; a task with a time limit that is requeued (at least once) and ends with the test
metrics of the same run without a limit, one handled signal per requeue; a ``scancel``'d task
recorded as ``cancelled`` and completed by ``python -m kdlab.sweep DIR --resume``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from kdlab.runs import RunStopped
from kdlab.slurm import requeue as slurm
from tests.helpers_sweep import REPO, env
from tests.slurm_cluster import slurm_cluster_fixture  # noqa: F401  (session fixture)

PY = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else sys.executable
METRICS = [
    "val_acc_best",
    "test_acc_best",
    "test_acc_final",
    "test_nll",
    "test_ece",
    "epochs_trained",
]


# ---------------------------------------------------------------------------------------
# In-process: the callback's decisions, no cluster
# ---------------------------------------------------------------------------------------


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(40, 4), torch.randn(40, 1))
        return torch.utils.data.DataLoader(data, batch_size=4)


class Record(L.Callback):
    """Where training was when it raised."""

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.at = (trainer.current_epoch, trainer.global_step)


class Send(L.Callback):
    """Send ``sig`` to this process after batch ``batch`` of epoch ``epoch``."""

    def __init__(self, sig: int, epoch: int, batch: int) -> None:
        self.sig, self.at = sig, (epoch, batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == self.at:
            os.kill(os.getpid(), self.sig)
            time.sleep(0.05)  # delivered before the next batch


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch, fake_command):
    """An array task's environment, a fake scontrol that logs its calls and (for a requeue)
    sends SIGTERM to its caller as SLURM does, and safety handlers that count stray signals
    (so a handler left in place never kills pytest)."""
    calls = tmp_path / "scontrol.log"
    fake_command(
        "scontrol", f'echo "$@" >> {calls}\n[ "$1" = requeue ] && kill -TERM $PPID\nexit 0\n'
    )
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    for key, value in {
        "SLURM_JOB_ID": "123",
        "SLURM_ARRAY_JOB_ID": "120",
        "SLURM_ARRAY_TASK_ID": "3",
    }.items():
        monkeypatch.setenv(key, value)
    stray: list[int] = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)}
    for s in saved:
        signal.signal(s, lambda signum, frame: stray.append(signum))
    try:
        yield {"calls": calls, "stray": stray, "root": tmp_path}
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
        slurm.WATCH.notes.clear()


def _fit(root: Path, *callbacks, epochs: int = 3) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        num_sanity_val_steps=0,
        callbacks=[
            slurm.SlurmRequeue(),
            *callbacks,
            L.pytorch.callbacks.ModelCheckpoint(root / "ckpt", filename="last"),
        ],
    )
    trainer.fit(Tiny())
    return trainer


def _calls(fake) -> list[str]:
    return fake["calls"].read_text().splitlines() if fake["calls"].exists() else []


def test_requeue_signal_requeues_the_array_task_once_and_stops_at_the_next_batch(fake_slurm):
    record = Record()
    with pytest.raises(RunStopped) as stop:
        _fit(fake_slurm["root"], Send(signal.SIGUSR1, epoch=1, batch=4), record)
    assert stop.value.status == "requeued" and "120_3" in stop.value.reason
    assert _calls(fake_slurm) == ["requeue 120_3"]  # once, the array task, not job 123
    assert record.at == (1, 16)  # stopped after the next batch (10 per epoch), not later
    ckpts = sorted(p.name for p in (fake_slurm["root"] / "ckpt").iterdir())
    assert ckpts == ["last.ckpt"]  # epoch 0's; nothing written mid-epoch, no hpc_ckpt
    ckpt = torch.load(fake_slurm["root"] / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0
    # the SIGTERM that SLURM sends after the requeue was expected, not a cancel, not stray
    assert fake_slurm["stray"] == []
    assert not any(slurm.WATCH.holders.values())
    os.kill(os.getpid(), signal.SIGUSR1)  # after training: the previous handler again
    time.sleep(0.05)
    assert fake_slurm["stray"] == [signal.SIGUSR1]


def test_sigterm_without_our_requeue_is_a_cancel(fake_slurm):
    with pytest.raises(RunStopped) as stop:
        _fit(fake_slurm["root"], Send(signal.SIGTERM, epoch=0, batch=2))
    assert stop.value.status == "cancelled"
    assert _calls(fake_slurm) == []  # no requeue
    assert fake_slurm["stray"] == []


def test_submitit_signal_is_taken_like_the_requeue_signal(fake_slurm):
    with pytest.raises(RunStopped) as stop:
        _fit(fake_slurm["root"], Send(signal.SIGUSR2, epoch=0, batch=1))
    assert stop.value.status == "requeued"
    assert _calls(fake_slurm) == ["requeue 120_3"]


def test_signal_before_training_waits_for_it(fake_slurm):
    job = slurm.SlurmSignals()
    job.on_job_start(config=None)  # the Hydra callback, at the start of the SLURM job
    os.kill(os.getpid(), signal.SIGUSR1)  # while "importing" or building the data
    time.sleep(0.05)
    assert fake_slurm["stray"] == []
    record = Record()
    with pytest.raises(RunStopped) as stop:
        _fit(fake_slurm["root"], record)
    assert stop.value.status == "requeued" and record.at == (0, 0)
    assert _calls(fake_slurm) == ["requeue 120_3"]
    assert not (fake_slurm["root"] / "ckpt").exists()  # stopped before the first batch
    os.kill(os.getpid(), signal.SIGUSR1)  # while testing: noted, logged, ignored
    time.sleep(0.05)
    job.on_job_end(config=None)
    assert fake_slurm["stray"] == [] and _calls(fake_slurm) == ["requeue 120_3"]
    os.kill(os.getpid(), signal.SIGUSR1)  # after the job: the handler from before it
    time.sleep(0.05)
    assert fake_slurm["stray"] == [signal.SIGUSR1]


def test_failed_requeue_stops_as_interrupted(fake_slurm):
    (fake_slurm["root"] / "bin" / "scontrol").write_text("#!/bin/sh\necho denied >&2\nexit 1\n")
    with pytest.raises(RunStopped) as stop:
        _fit(fake_slurm["root"], Send(signal.SIGUSR1, epoch=0, batch=1))
    assert stop.value.status == "interrupted" and "denied" in stop.value.reason


def test_off_slurm_the_callback_does_nothing(fake_slurm, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID")
    before = signal.getsignal(signal.SIGUSR1)
    trainer = _fit(fake_slurm["root"], epochs=1)
    assert trainer.current_epoch == 1 and signal.getsignal(signal.SIGUSR1) is before
    assert not any(slurm.WATCH.holders.values())


def test_summary_reads_requeued_and_vanished_tasks_from_squeue(tmp_path, fake_command):
    from kdlab.sweep import summarize

    fake_command("squeue", "echo '7_0|PENDING'\necho '7_2|RUNNING'\n")
    sweep = tmp_path / "sweep"
    launcher = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    for num, status in enumerate(["requeued", "requeued", None, "cancelled"]):
        job = sweep / f"{num}_job"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "hydra.yaml").write_text(
            f"hydra:\n  launcher:\n    _target_: {launcher}\n  job:\n    id: '7_{num}'\n"
        )
        if status:
            (job / "results.json").write_text(json.dumps({"status": status}))
    jobs = {j["job"]: j for j in summarize(sweep)["jobs"]}
    assert jobs["0_job"]["status"] == "requeued" and jobs["0_job"]["slurm"] == "7_0 PENDING"
    assert jobs["1_job"]["status"] == "interrupted"  # requeued, then gone from the queue
    assert jobs["2_job"]["status"] == "running"  # no record yet, SLURM runs it
    assert jobs["3_job"]["status"] == "cancelled"


# ---------------------------------------------------------------------------------------
# A real SLURM
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from kdlab.data.synthetic import write_fake_cifar
    from tests.helpers_sweep import N_TEST, N_TRAIN

    root = tmp_path_factory.mktemp("slurm_data")
    write_fake_cifar(root, "cifar10", N_TRAIN, N_TEST)
    return root


def _args(
    data: Path, logs: Path, sweep: Path, *, epochs: int, workers: int, sleep: float | None = None
) -> list[str]:
    args = [
        "-m",
        "+experiment=baseline_cnn",
        f"data.root={data}",
        f"paths.log_dir={logs}",
        "data.val_size=32",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        f"data.num_workers={workers}",
        f"trainer.max_epochs={epochs}",
        "trainer.limit_train_batches=2",
        "trainer.accelerator=cpu",
        "logger=csv",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "callbacks.early_stopping=null",  # a fixed number of epochs
        # one memory format for every attempt: auto's remembered choice is a per-user file that
        # concurrent runs may rewrite, and NCHW vs NHWC differ in the last bits
        "channels_last=false",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        f"hydra.sweep.dir={sweep}",
    ]
    if sleep:  # slows training down without changing what it computes
        args += [
            "+callbacks.slow._target_=helpers_resume.SleepPerBatch",
            f"+callbacks.slow.seconds={sleep}",
        ]
    return args


def _env(cluster, tmp: Path) -> dict[str, str]:
    return cluster.env(env(tmp)) | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start(cluster, tmp: Path, name: str, *args: str) -> subprocess.Popen:
    """``python -m kdlab.train ARGS`` (the venv's python, from ``tmp``) in the background."""
    log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 (closed by _finish)
    return subprocess.Popen(
        [PY, "-m", "kdlab.train", *args],
        cwd=tmp,
        env=_env(cluster, tmp),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _run(cluster, tmp: Path, name: str, *args: str, timeout: float) -> tuple[int, str]:
    proc = _start(cluster, tmp, name, *args)
    rc = _wait(proc, timeout)
    return rc, (tmp / f"{name}.log").read_text()


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -9


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())


def _task_logs(sweep: Path) -> list[str]:
    """The SLURM log (submitit's stdout, all attempts appended) of each task of the sweep."""
    return [p.read_text() for p in sorted((sweep / ".submitit").glob("*/*_0_log.out"))]


def _results(job: Path) -> dict:
    return json.loads((job / "results.json").read_text())


def _fail(msg: str, tmp: Path, *names: str, cluster=None) -> str:
    tails = [f"--- {n} ---\n{(tmp / f'{n}.log').read_text()[-4000:]}" for n in names]
    return "\n".join([msg, *tails, cluster.logs() if cluster else ""])


@pytest.mark.slurm
def test_two_task_array_finishes(slurm_cluster, data, tmp_path):
    sweep = tmp_path / "array"
    args = _args(data, tmp_path / "logs", sweep, epochs=1, workers=0)
    rc, out = _run(slurm_cluster, tmp_path, "array", *args, "seed=0,1", timeout=300)
    assert rc == 0, _fail(f"exit {rc}", tmp_path, "array", cluster=slurm_cluster)
    jobs = _job_dirs(sweep)
    assert [(_results(j)["status"], _results(j)["seed"]) for j in jobs] == [
        ("finished", 0),
        ("finished", 1),
    ]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["total"], summary["finished"]) == (2, 2)
    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    lines = script.read_text().splitlines()
    assert "#SBATCH --array=0-1%2" in lines and "#SBATCH --signal=USR1@300" in lines
    logs = _task_logs(sweep)
    assert len(logs) == 2 and all(log.count("Starting with JobEnvironment") == 1 for log in logs)
    assert not any("handling SIGUSR1" in log for log in logs)


@pytest.mark.slurm
def test_time_limit_requeues_and_resumes_to_the_metrics_of_an_uninterrupted_run(
    slurm_cluster,
    data,
    tmp_path,
    monkeypatch,
):
    """timeout_min=2, signal_delay_s=50. slurmctld checks limits every 30 s, so SIGUSR1 comes
    40–70 s after the task starts: after the 10–20 s this 2-core machine spends importing torch
    and Lightning. (The issue's 1-minute limit with a 25 s delay puts it 5–35 s after the start,
    where it can kill a task that is still importing: Python's default action; README.) ~80 s
    of training (the sleep helper: 28 epochs × 2 batches × 1.25 s) cannot fit before the signal,
    so the task is requeued at least once. The same command without a limit runs beside it as
    the reference."""
    from kdlab.sweep import summarize

    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))  # summarize() asks squeue
    logs = tmp_path / "logs"
    common = dict(epochs=28, workers=2, sleep=1.25)
    limited, reference = tmp_path / "limited", tmp_path / "reference"
    run = _start(
        slurm_cluster,
        tmp_path,
        "limited",
        *_args(data, logs, limited, **common),
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=50",
        "seed=0",
    )
    ref = _start(
        slurm_cluster,
        tmp_path,
        "reference",
        *_args(data, logs, reference, **common),
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.signal_delay_s=50",
        "seed=0",
    )
    seen_while_requeued: set[str] = set()
    deadline = time.time() + 420
    while run.poll() is None and time.time() < deadline:
        jobs = _job_dirs(limited) if limited.is_dir() else []
        if jobs and (jobs[0] / "results.json").is_file():
            try:
                requeued = _results(jobs[0]).get("status") == "requeued"
            except ValueError:
                requeued = False
            if requeued:  # between the attempts: the summary must not call it failed/missing
                seen_while_requeued |= {j["status"] for j in summarize(limited)["jobs"]}
        time.sleep(1)
    rc = _wait(run, max(1.0, deadline - time.time()))
    rc_ref = _wait(ref, max(60.0, deadline - time.time()))
    assert (rc, rc_ref) == (0, 0), _fail(f"exit {rc}, {rc_ref}", tmp_path, "limited", "reference")

    (job,) = _job_dirs(limited)
    (ref_job,) = _job_dirs(reference)
    res, ref_res = _results(job), _results(ref_job)
    assert res["status"] == ref_res["status"] == "finished"
    assert {k: res[k] for k in METRICS} == {k: ref_res[k] for k in METRICS}
    summary = json.loads((limited / "sweep_summary.json").read_text())
    assert summary["finished"] == 1  # the -m command waited for the requeued task

    (log,) = _task_logs(limited)
    attempts = log.count("Starting with JobEnvironment")
    requeues = attempts - 1
    assert requeues >= 1, _fail("never requeued", tmp_path, "limited")
    # exactly one handled signal and one scontrol requeue per requeue, each resumed
    assert log.count("handling SIGUSR1") == requeues, log[-6000:]
    assert log.count("requeued SLURM task") == requeues
    assert log.count("resuming from") == requeues
    previous = [json.loads(p.read_text()) for p in job.glob("previous/*/results.json")]
    assert [p["status"] for p in previous] == ["requeued"] * requeues
    # nobody else requeued or checkpointed: not Lightning, not submitit
    assert "Handling auto-requeue signal" not in log and "Caught signal" not in log
    assert not list(job.rglob("hpc_ckpt*"))
    assert seen_while_requeued and seen_while_requeued <= {"requeued", "running"}
    (ref_log,) = _task_logs(reference)
    assert ref_log.count("Starting with JobEnvironment") == 1
    assert "handling SIGUSR1" not in ref_log


@pytest.mark.slurm
def test_scancel_is_recorded_as_cancelled_and_the_sweep_resumes_it(
    slurm_cluster,
    data,
    tmp_path,
):
    sweep = tmp_path / "cancel"
    args = _args(data, tmp_path / "logs", sweep, epochs=6, workers=2, sleep=0.5)
    run = _start(
        slurm_cluster, tmp_path, "cancel", *args, "hydra.launcher.timeout_min=30", "seed=0"
    )
    deadline = time.time() + 240
    last = None
    while time.time() < deadline and run.poll() is None:
        jobs = _job_dirs(sweep) if sweep.is_dir() else []
        last = jobs[0] / "checkpoints" / "last.ckpt" if jobs else None
        if last is not None and last.is_file():  # at least one epoch done: cancel it
            break
        time.sleep(0.5)
    assert last is not None and last.is_file(), _fail("no epoch finished", tmp_path, "cancel")
    from kdlab.sweep import slurm_task

    task_id = slurm_task(jobs[0])  # from the job's .hydra/hydra.yaml
    assert task_id is not None
    slurm_cluster.run("scancel", task_id, check=True)
    rc = _wait(run, 180)
    assert rc == 1, _fail(f"exit {rc}: a cancelled job is not finished", tmp_path, "cancel")
    res = _results(jobs[0])
    assert res["status"] == "cancelled" and "SIGTERM" in res["reason"], res
    assert 1 <= res["epochs_trained"] < 6
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["cancelled"] == 1
    (log,) = _task_logs(sweep)
    assert "stopping as cancelled" in log and "handling SIGUSR1" not in log

    resume = subprocess.run(
        [PY, "-m", "kdlab.sweep", str(sweep), "--resume"],
        cwd=tmp_path,
        env=_env(slurm_cluster, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resume.returncode == 0, f"{resume.stdout[-4000:]}\n{resume.stderr[-4000:]}"
    res = _results(jobs[0])
    assert res["status"] == "finished" and res["epochs_trained"] == 6
    assert "resuming from" in "".join(_task_logs(sweep))
