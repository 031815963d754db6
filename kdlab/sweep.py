"""Sweeps that survive their failures: failed-job records, the end-of-sweep summary, SLURM env.

A Hydra multirun aborts at the first job that raises, which hides every later job. ``main()`` in
``kdlab.train`` therefore catches a job's exception in multirun mode and calls
:func:`record_failure`, so the job's folder still holds a ``results.json`` (``status: failed``)
and an ``error.txt`` with the traceback. :class:`SweepSummary` (a Hydra callback registered in
``conf/hydra/default.yaml``) then reads every job folder of the sweep at the end, prints a
table, writes ``<sweep dir>/sweep_summary.json`` and exits with status 1 when any job failed or
left no results (a job killed outright has a ``.hydra/`` folder but no ``results.json``).

The summary reads the file system instead of Hydra's job returns because submitit jobs run in
other processes (or on other machines): the folders are the only thing every launcher shares.
"""

from __future__ import annotations

import atexit
import json
import logging
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("kdlab.sweep")

# The keys of results.json that identify a job (copied into failure records and the summary).
_ID_KEYS = (
    "experiment", "method", "alpha", "temperature", "beta", "method_params", "method_label", "seed"
)  # fmt: skip


def method_identity(cfg: DictConfig) -> dict[str, Any]:
    """The method's settings from the config (a failed job has no built loss to ask)."""
    from kdlab.utils.method_params import config_tree, flat_hparams, label, params

    distill = cfg.get("distill")
    tree = config_tree(distill) if distill is not None else None
    method_params = params(tree)
    return {**flat_hparams(method_params), "method_params": method_params,
            "method_label": label(tree) if tree else None}  # fmt: skip


def record_failure(cfg: DictConfig, err: BaseException, out_dir: str | Path) -> dict[str, Any]:
    """Write ``results.json`` (``status: failed``) and ``error.txt`` for a job that raised.

    The record carries the job's identity (experiment, method settings, seed) so the report and
    the summary can say *which* point of the grid is missing without parsing folder names.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = err
    while root.__cause__ is not None:  # Hydra wraps constructor errors: report the real one
        root = root.__cause__
    res: dict[str, Any] = {"status": "failed", "error": f"{type(root).__name__}: {root}"}
    for key in ("experiment", "method", "seed"):
        res[key] = cfg.get("name" if key == "experiment" else key)
    try:
        res |= method_identity(cfg)
    except Exception:  # an invalid method config: fall back to the top-level names
        res |= {k: cfg.get(k) for k in ("alpha", "temperature", "beta")}
    try:
        res["dataset"] = cfg.data.name
    except Exception:  # a config that does not even resolve is exactly what we are recording
        res["dataset"] = None
    res["output_dir"] = str(out)
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    (out / "error.txt").write_text(tb)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    log.error("job failed: %s (traceback in %s)", res["error"], out / "error.txt")
    return res


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
    a bad value that the re-launched command replaced). Every launched job rewrites
    ``.hydra/config.yaml`` at its start, a finished one too."""
    try:
        launched = float((sweep_dir / LAUNCH).read_text())
    except (OSError, ValueError):
        return False
    return (job_dir / ".hydra" / "config.yaml").stat().st_mtime < launched - 1.0


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
            row |= {k: res.get(k) for k in _ID_KEYS + ("test_acc_best", "error")}
        rows.append(row)
    return rows


def running(job_dir: Path) -> bool:
    """A live run holds the folder (its lock is fresh): not missing, not failed."""
    from kdlab.runs import LOCK, RunLock

    lock = RunLock(job_dir)
    return (job_dir / LOCK).is_file() and not lock._stale(lock._holder())


STATUSES = (
    "finished", "failed", "missing", "running", "interrupted", "requeued", "cancelled", "superseded"
)  # fmt: skip
INCOMPLETE = ("failed", "missing", "interrupted", "cancelled")  # need a re-run of the sweep


def summarize(sweep_dir: str | Path) -> dict[str, Any]:
    """Collect the jobs of ``sweep_dir`` and write ``sweep_summary.json`` beside them."""
    jobs = collect_jobs(sweep_dir)
    counts = {s: sum(j["status"] == s for j in jobs) for s in STATUSES}
    summary = {"sweep_dir": str(sweep_dir), "total": len(jobs), **counts, "jobs": jobs}
    Path(sweep_dir, "sweep_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """A rich table: one line per job with its status, overrides, test accuracy and folder."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep {summary['sweep_dir']}", show_lines=False)
    for col in ("job", "status", "method", "overrides", "test acc", "error"):
        table.add_column(col, overflow="fold")
    colour = {"finished": "green", "failed": "red", "missing": "yellow", "running": "cyan",
              "requeued": "cyan", "interrupted": "yellow", "cancelled": "yellow",
              "superseded": "dim"}  # fmt: skip
    # Only the overrides that tell the jobs apart (α, T, seed…), not those every job shares.
    shared = (
        set.intersection(*(set(j["overrides"]) for j in summary["jobs"]))
        if summary["jobs"]
        else set()
    )
    if len(summary["jobs"]) == 1:
        shared = set()
    for job in summary["jobs"]:
        acc = job.get("test_acc_best")
        method = " ".join(str(p) for p in (job.get("method"), job.get("method_label")) if p)
        table.add_row(
            job["job"],
            f"[{colour[job['status']] if job['status'] in colour else 'red'}]{job['status']}",
            method,
            " ".join(o for o in job["overrides"] if o not in shared),
            f"{acc:.2f}" if isinstance(acc, int | float) else "",
            (job.get("error") or "")[:300],
        )
    console = Console(width=160)
    console.print(table)
    others = "".join(f", {summary[s]} {s}" for s in STATUSES[3:] if summary.get(s))
    console.print(
        f"{summary['finished']} finished, {summary['failed']} failed, {summary['missing']} "
        f"missing{others} of {summary['total']} → "
        f"{Path(summary['sweep_dir']) / 'sweep_summary.json'}"
    )
    if any(summary.get(s) for s in INCOMPLETE):
        console.print(
            f"to complete the sweep (finished jobs are skipped, the rest resumed or retried): "
            f"python -m kdlab.sweep {summary['sweep_dir']} --resume"
        )


class SweepSummary(Callback):
    """Hydra callback: summary table + ``sweep_summary.json`` at the end of every multirun.

    Exits the process with status 1 (``SystemExit``, which Hydra's callback runner lets
    through, unlike ordinary exceptions that it turns into warnings) when any job failed or left
    no results, so shell scripts and CI notice a partly failed sweep; ``exit_on_failure: false``
    in ``conf/hydra/default.yaml`` turns that off.
    """

    def __init__(self, exit_on_failure: bool = True) -> None:
        self.exit_on_failure = exit_on_failure
        self.sweep_dir: Path | None = None
        self.done = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A job that dies outright (OOM, node failure) makes submitit's result collection raise
        # and Hydra skip on_multirun_end: summarise what is there when the process exits.
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        mark_launch(self.sweep_dir)
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        if not self.done and self.sweep_dir is not None and self.sweep_dir.is_dir():
            log.error("the sweep stopped early; jobs still running show as missing (re-run: "
                      "python -m kdlab.sweep %s)", self.sweep_dir)  # fmt: skip
            print_summary(summarize(self.sweep_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.done = True
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        summary = summarize(sweep_dir)
        print_summary(summary)
        bad = sum(summary[s] for s in INCOMPLETE)
        if bad and self.exit_on_failure:
            log.error(
                "%d of %d sweep jobs did not finish (see %s)", bad, summary["total"], sweep_dir
            )
            raise SystemExit(1)


def slurm_environment(auto_requeue: bool = True, requeue_signal: str = "SIGUSR1"):
    """Lightning's SLURM cluster environment with auto-requeue, or the plain one off SLURM.

    On SIGUSR1 (sent by SLURM ``signal_delay_s`` before the time limit, see
    ``conf/hydra/launcher/slurm.yaml``) Lightning saves a checkpoint and runs ``scontrol
    requeue``; the requeued job re-runs the same pickled submitit call, hence the same Hydra
    output folder, and ``kdlab.train`` resumes from its ``checkpoints/last.ckpt``. Off SLURM the
    plain environment is returned so ``trainer=slurm`` is harmless in local tests.
    """
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    if not SLURMEnvironment.detect():
        return LightningEnvironment()
    return SLURMEnvironment(
        auto_requeue=auto_requeue, requeue_signal=signal.Signals[requeue_signal]
    )


def resume_command(sweep_dir: str | Path, extra: list[str] = ()) -> tuple[list[str], str]:
    """The ``python -m kdlab.train -m …`` call that re-runs a sweep into its own folder, and
    the folder it was started from (relative paths in its overrides are relative to it)."""
    saved = Path(sweep_dir) / "multirun.yaml"
    if not saved.is_file():
        raise ValueError(f"{sweep_dir} has no multirun.yaml: not a sweep folder of kdlab.train -m")
    hydra_cfg = OmegaConf.load(saved).hydra
    hydra_overrides = [
        o
        for o in hydra_cfg.overrides.hydra
        if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))
    ]
    args = [sys.executable, "-m", "kdlab.train", "-m", *hydra_cfg.overrides.task,
            *hydra_overrides, f"hydra.sweep.dir={Path(sweep_dir).resolve()}", *extra]  # fmt: skip
    return args, str(hydra_cfg.runtime.cwd)


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.sweep DIR [--resume [OVERRIDE ...]]``: summarise a sweep again, or
    complete it (finished jobs skipped, interrupted ones resumed, failed ones retried)."""
    import argparse
    import subprocess

    p = argparse.ArgumentParser(prog="python -m kdlab.sweep", description=main.__doc__)
    p.add_argument("sweep_dir", help="a multiruns/<name>/<time> folder")
    p.add_argument("--resume", action="store_true", help="re-run the sweep into its folder")
    p.add_argument("overrides", nargs="*", help="with --resume: extra overrides (e.g. a fix)")
    a = p.parse_args(argv)
    if not Path(a.sweep_dir).is_dir():
        p.error(f"{a.sweep_dir} is not a folder")
    if a.resume:
        args, cwd = resume_command(a.sweep_dir, a.overrides)
        print("resuming:", " ".join(args[1:]), flush=True)
        return subprocess.run(args, cwd=cwd).returncode
    result = summarize(a.sweep_dir)
    print_summary(result)
    return 1 if any(result[s] for s in INCOMPLETE) else 0


if __name__ == "__main__":
    sys.exit(main())
