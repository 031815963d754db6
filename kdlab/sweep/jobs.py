"""The jobs of a sweep folder and their states, read from the folders (and from squeue for a
SLURM sweep): the only thing every launcher shares, since submitit jobs run in other processes
or on other machines."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kdlab.run_config import read_launched
from kdlab.sweep.best import best_trial, search_settings
from kdlab.sweep.grid import never_started
from kdlab.sweep.records import ID_KEYS


def _overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def _job_num(job_dir: Path) -> tuple[int, str]:
    head = job_dir.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, job_dir.name)


LAUNCH = ".kdlab_launch"  # time of the sweep's latest launch into its folder


def mark_launch(sweep_dir: Path) -> None:
    """Record when this launch started: job folders it does not touch are from an older one."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / LAUNCH).write_text(f"{time.time()}\n")


def superseded(job_dir: Path, sweep_dir: Path) -> bool:
    """A job folder the latest launch of the sweep did not start (an earlier grid point, e.g.
    a bad value that the re-launched command replaced). Every launched job notes its launch
    in the folder at its start (``kdlab.run_config.mark_launched``), a finished one too."""
    try:
        launched = float((sweep_dir / LAUNCH).read_text())
    except (OSError, ValueError):
        return False
    note = read_launched(job_dir)
    when = note.get("time")
    if not isinstance(when, int | float):
        cfg = job_dir / ".hydra" / "config.yaml"
        when = cfg.stat().st_mtime if cfg.is_file() else 0.0
    return when < launched - 1.0


def collect_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder (a folder with ``.hydra/``) and its status."""
    rows = []
    for job in sorted(
        (p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()), key=_job_num
    ):
        row: dict[str, Any] = {"job": job.name, "dir": str(job), "overrides": _overrides(job)}
        res_path = job / "results.json"
        if superseded(job, Path(sweep_dir)):
            row |= {"status": "superseded", "error": "not part of the latest launch"}
        elif running(job):
            row |= {"status": "running", "error": None}
        elif not res_path.is_file():
            row |= {"status": "missing", "error": "no results.json (killed before it ended)"}
        else:
            try:
                res = json.loads(res_path.read_text())
            except json.JSONDecodeError as err:
                res = {"status": "failed", "error": f"unreadable results.json: {err}"}
            row["status"] = res.get("status", "finished")
            row |= {k: res.get(k) for k in ID_KEYS + ("val_acc_best", "test_acc_best", "error")}
        rows.append(row)
    rows += never_started(
        Path(sweep_dir), [r["overrides"] for r in rows if r["status"] != "superseded"]
    )
    return with_slurm_states(rows)


def slurm_task(job_dir: Path) -> str | None:
    """The SLURM task (``123_4``) that ran a job folder of a SLURM-launched sweep, else None."""
    if job_dir is None:
        return None
    try:
        hydra_cfg = OmegaConf.load(Path(job_dir) / ".hydra" / "hydra.yaml").hydra
        target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "")
        task = str(OmegaConf.select(hydra_cfg, "job.id", default="") or "")
    except Exception:  # no or unreadable hydra.yaml: not a job SLURM can tell us about
        return None
    # .hydra/ is written once; a re-launched sweep runs the job as another SLURM task
    task = str(read_launched(Path(job_dir)).get("slurm_task") or task)
    from kdlab.slurm.cluster import is_task_id

    return task if "Slurm" in target and is_task_id(task) else None


def with_slurm_states(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Correct what a folder alone cannot tell, for jobs of a SLURM sweep that did not end
    (missing, running, requeued, interrupted, cancelled), from squeue:

    - queued again (PENDING, REQUEUED, …) → ``requeued``; RUNNING → ``running`` (a requeued task
      that has not yet taken over its folder, or one still starting);
    - a ``requeued`` or ``running`` record whose task SLURM no longer has → ``interrupted`` (it
      was cancelled while waiting, or killed): re-run the sweep to continue it.

    Without squeue (summarising on a machine outside the cluster) the rows stay as they are.
    """
    open_rows = {
        id(r): t
        for r in rows
        if r["status"] in _OPEN and r["dir"] and (t := slurm_task(Path(r["dir"])))
    }
    if not open_rows:
        return rows
    from kdlab.slurm import task_states

    states = task_states(sorted(set(open_rows.values())))
    if states is None:
        return rows
    for row in rows:
        task = open_rows.get(id(row))
        if task is None:
            continue
        state = states.get(task)
        row["slurm"] = f"{task} {state or 'gone'}"
        if state in ("RUNNING", "CONFIGURING"):
            row["status"] = "running"
        elif state is not None and state != "COMPLETING":
            row["status"] = "requeued"
        elif state is None and row["status"] in ("requeued", "running"):
            row["status"] = "interrupted"
            row["error"] = (
                f"SLURM task {task} is no longer queued (cancelled while requeued, or "
                "killed); re-run the sweep to continue it"
            )
    return rows


def running(job_dir: Path) -> bool:
    """A live run holds the folder (its lock is fresh): not missing, not failed."""
    from kdlab.runs import RunLock

    return RunLock(job_dir).in_use()


STATUSES = (
    "finished",
    "failed",
    "missing",
    "running",
    "interrupted",
    "requeued",
    "cancelled",
    "superseded",
    "diverged",
)
INCOMPLETE = ("failed", "missing", "interrupted", "cancelled", "diverged")  # not done
_OPEN = ("missing", "running", "requeued", "interrupted", "cancelled")  # SLURM may know more


def summarize(sweep_dir: str | Path) -> dict[str, Any]:
    """Collect the jobs of ``sweep_dir`` and write ``sweep_summary.json`` beside them."""
    jobs = collect_jobs(sweep_dir)
    counts = {s: sum(j["status"] == s for j in jobs) for s in STATUSES}
    summary = {"sweep_dir": str(sweep_dir), "total": len(jobs), **counts, "jobs": jobs}
    search = search_settings(sweep_dir)
    if search is not None:  # an Optuna search: name its best trial
        summary["best"] = best_trial(jobs, search)
    Path(sweep_dir, "sweep_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
