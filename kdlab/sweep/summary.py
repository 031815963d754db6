"""The end-of-sweep summary: a table of every job's state, ``sweep_summary.json``, an exit code.

:class:`SweepSummary` (a Hydra callback registered in ``conf/hydra/default.yaml``) reads every
job folder of the sweep at the end, prints the table, writes ``<sweep dir>/sweep_summary.json``
and exits with status 1 when a job failed, was killed, interrupted or cancelled. For a SLURM
sweep it waits for requeued tasks first.
"""

from __future__ import annotations

import atexit
import logging
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from kdlab.run_config import ConfigChanged
from kdlab.sweep.grid import check_sweep_config
from kdlab.sweep.jobs import INCOMPLETE, STATUSES, mark_launch, summarize

log = logging.getLogger("kdlab.sweep")


def best_line(best: dict[str, Any] | None) -> str:
    """``best trial (val/acc_best 71.20): 3_… — distill.alpha=0.61 distill.temperature=4.2``."""
    if best is None:
        return "best trial: none (no finished trial has the searched metric)"
    settings = " ".join(f"{k}={v}" for k, v in best["settings"].items())
    return (
        f"best trial ({best['metric']} {best['value']:.2f}, {best['direction']}, of "
        f"{best['scored']} scored): {best['job']} — {settings} → {best['dir']}"
    )


def print_summary(summary: dict[str, Any]) -> None:
    """A rich table: one line per job with its status, overrides, test accuracy and folder."""
    from rich.table import Table

    from kdlab.utils.console import table_console

    table = Table(title=f"sweep {summary['sweep_dir']}", show_lines=False)
    tagged = any(j.get("tags") for j in summary["jobs"])
    for col in (
        ("job", "status", "method")
        + (("tags",) if tagged else ())
        + ("overrides", "test acc", "error")
    ):
        table.add_column(col, overflow="fold")
    colour = {
        "finished": "green",
        "failed": "red",
        "missing": "yellow",
        "running": "cyan",
        "requeued": "cyan",
        "interrupted": "yellow",
        "cancelled": "yellow",
        "superseded": "dim",
        "diverged": "red",
    }
    # Only the overrides that tell the jobs apart (α, T, seed…), not those every job shares.
    jobs = summary["jobs"]
    shared = set.intersection(*(set(j["overrides"]) for j in jobs)) if len(jobs) > 1 else set()
    for job in summary["jobs"]:
        acc = job.get("test_acc_best")
        method = " ".join(str(p) for p in (job.get("method"), job.get("method_label")) if p)
        table.add_row(
            job["job"],
            f"[{colour[job['status']] if job['status'] in colour else 'red'}]{job['status']}"
            + (f" (SLURM {job['slurm']})" if job.get("slurm") else ""),
            method,
            *((" ".join(job.get("tags") or []),) if tagged else ()),
            " ".join(o for o in job["overrides"] if o not in shared),
            f"{acc:.2f}" if isinstance(acc, int | float) else "",
            (job.get("error") or "")[:300],
        )
    console = table_console()
    console.print(table)
    others = "".join(f", {summary[s]} {s}" for s in STATUSES[3:] if summary.get(s))
    console.print(
        f"{summary['finished']} finished, {summary['failed']} failed, {summary['missing']} "
        f"missing{others} of {summary['total']} → "
        f"{Path(summary['sweep_dir']) / 'sweep_summary.json'}"
    )
    if "best" in summary:
        console.print(best_line(summary["best"]))
    if summary.get("requeued") or summary.get("running"):
        console.print(
            f"{summary['requeued'] + summary['running']} job(s) still queued or running (not "
            f"failed): python -m kdlab.sweep {summary['sweep_dir']} shows their final state later"
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

    SLURM: submitit hands the launcher a requeued task's *first* result (the attempt that
    stopped to be requeued), so the sweep would end while the task waits in the queue. With
    ``wait_requeued`` (default) the summary waits until SLURM no longer has any requeued or
    running task of the sweep, then reports how they ended; Ctrl-C stops waiting (the table then
    says ``requeued``/``running``, not failed) and ``python -m kdlab.sweep DIR`` reports later.
    """

    def __init__(
        self, exit_on_failure: bool = True, wait_requeued: bool = True, poll_s: float = 10.0
    ) -> None:
        self.exit_on_failure = exit_on_failure
        self.wait_requeued, self.poll_s = wait_requeued, poll_s
        self.sweep_dir: Path | None = None
        self.done = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A job that dies outright (OOM, node failure) makes submitit's result collection raise
        # and Hydra skip on_multirun_end: summarise what is there when the process exits.
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        try:  # before Hydra rewrites multirun.yaml: a refused sweep changes no file
            check_sweep_config(config, self.sweep_dir)
        except ConfigChanged as err:
            log.error("%s", err)
            raise SystemExit(2) from None
        mark_launch(self.sweep_dir)
        saved = self.sweep_dir / "multirun.yaml"
        if not saved.is_file():  # Hydra's basic sweeper writes it, the Optuna sweeper does not:
            OmegaConf.save(config, saved)  # the summary's best trial and --resume read it
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        if not self.done and self.sweep_dir is not None and self.sweep_dir.is_dir():
            log.error(
                "the sweep stopped early; jobs that are still running show as running "
                "or missing (later: python -m kdlab.sweep %s)",
                self.sweep_dir,
            )
            print_summary(summarize(self.sweep_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.done = True
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        summary = summarize(sweep_dir)
        if self.wait_requeued:
            summary = self._wait_for_slurm(sweep_dir, summary)
        print_summary(summary)
        bad = sum(summary[s] for s in INCOMPLETE)
        if bad and self.exit_on_failure:
            log.error(
                "%d of %d sweep jobs did not finish (see %s)", bad, summary["total"], sweep_dir
            )
            raise SystemExit(1)

    def _wait_for_slurm(self, sweep_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
        """Summarise again every ``poll_s`` while SLURM still runs or queues a task of the sweep."""

        def queued(summary: dict[str, Any]) -> list[str]:
            return [
                j["slurm"].split()[0]
                for j in summary["jobs"]
                if j.get("slurm") and j["status"] in ("requeued", "running")
            ]

        tasks = queued(summary)
        if not tasks:
            return summary
        log.info(
            "waiting for %d requeued or running SLURM task(s) of the sweep (%s); Ctrl-C "
            "stops waiting, python -m kdlab.sweep %s reports later",
            len(tasks),
            " ".join(tasks),
            sweep_dir,
        )
        try:
            while tasks:
                time.sleep(self.poll_s)
                summary = summarize(sweep_dir)
                tasks = queued(summary)
        except KeyboardInterrupt:
            log.warning("stopped waiting for %s", " ".join(tasks))
        return summary
