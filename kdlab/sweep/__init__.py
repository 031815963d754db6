"""Sweeps that survive their failures: failed-job records, the end-of-sweep summary.

A Hydra multirun aborts at the first job that raises, which hides every later job. ``main()`` in
``kdlab.train`` therefore returns a failed job's record in multirun mode instead of raising, so
the job's folder still holds a ``results.json`` (``status: failed``) and an ``error.txt`` with
the traceback (``kdlab.results``; :func:`record_failure` for a folder named explicitly). :class:`SweepSummary` (a Hydra callback registered in
``conf/hydra/default.yaml``) then reads every job folder of the sweep at the end, prints a
table, writes ``<sweep dir>/sweep_summary.json`` and exits with status 1 when any job failed or
left no results (a job killed outright has a ``.hydra/`` folder but no ``results.json``).

The summary reads the file system instead of Hydra's job returns because submitit jobs run in
other processes (or on other machines): the folders are the only thing every launcher shares.
For a SLURM sweep it also asks squeue about jobs that did not end (:func:`with_slurm_states`): a
requeued task waiting in the queue is ``requeued``, not failed or missing. The SLURM pieces
themselves (requeue on the pre-timeout signal, Hydra and Lightning callbacks) are in
:mod:`kdlab.slurm`.
"""

from kdlab.sweep.jobs import collect_jobs, slurm_task, summarize
from kdlab.sweep.records import method_identity, record_failure
from kdlab.sweep.summary import SweepSummary, print_summary

__all__ = [
    "SweepSummary",
    "collect_jobs",
    "method_identity",
    "print_summary",
    "record_failure",
    "slurm_task",
    "summarize",
]
