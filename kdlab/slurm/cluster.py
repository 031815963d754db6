"""Talking to SLURM: the task this process runs, its requeue, the states of tasks, and the
cluster environment Lightning sees (``SLURMEnvironment`` without Lightning's auto-requeue)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess

log = logging.getLogger("kdlab.slurm")

#: submitit's preemption signal (``SUBMITIT_PREEMPT_SIGNAL``): handled like the requeue signal.
SUBMITIT_SIGNAL = getattr(
    signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2
)


def slurm_environment(auto_requeue: bool = False, requeue_signal: str = "SIGUSR1"):
    """Lightning's ``SLURMEnvironment`` without auto-requeue under SLURM, the plain one off it.

    Requeueing is :class:`SlurmRequeue`'s job; Lightning's own handler would save an
    ``hpc_ckpt`` mid-epoch and run ``scontrol requeue`` in every process that gets the signal.
    """
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    if not SLURMEnvironment.detect():
        return LightningEnvironment()
    return SLURMEnvironment(
        auto_requeue=auto_requeue, requeue_signal=signal.Signals[requeue_signal]
    )


def task_id(env: dict[str, str] | None = None) -> str | None:
    """This job's SLURM id as ``scontrol requeue`` needs it: the array task, else the job."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def is_task_id(text: str) -> bool:
    """A SLURM job id (``123``) or array task id (``123_4``)."""
    return re.fullmatch(r"\d+(_\d+)?", text) is not None


def requeue(task: str) -> tuple[bool, str]:
    """``scontrol requeue TASK``: (it worked, what scontrol said)."""
    if not is_task_id(task):
        return False, f"not a SLURM job id: {task!r}"
    try:
        proc = subprocess.run(
            ["scontrol", "requeue", task], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"{type(err).__name__}: {err}"
    return proc.returncode == 0, (proc.stderr or proc.stdout).strip()


def task_states(tasks: list[str]) -> dict[str, str] | None:
    """SLURM state of each task still known to squeue (``{"12_3": "PENDING"}``); tasks that
    ended long enough ago are absent. None when squeue cannot be asked (no SLURM here)."""
    if not tasks:
        return {}
    jobs = sorted({t.split("_")[0] for t in tasks})
    try:
        proc = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(jobs)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # squeue refuses a list whose ids are all gone ("Invalid job id specified")
        return {} if "Invalid job id" in proc.stderr else None
    states = {}
    for line in proc.stdout.splitlines():
        tid, _, state = line.strip().partition("|")
        states[tid] = state.split()[0] if state else "UNKNOWN"
    return {t: states[t] for t in tasks if t in states}


def in_slurm_job() -> bool:
    """This process is a SLURM job's (a batch step or an srun task)."""
    return bool(os.environ.get("SLURM_JOB_ID"))


def requeue_signals(requeue_signal: str = "SIGUSR1") -> set[signal.Signals]:
    return {signal.Signals[requeue_signal], SUBMITIT_SIGNAL}
