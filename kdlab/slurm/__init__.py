"""SLURM: one requeue per time-limit signal, cancels recorded, runs resumed (``requeue``); the
task, its state and the cluster environment (``cluster``)."""

from kdlab.slurm.cluster import in_slurm_job, requeue, slurm_environment, task_id, task_states
from kdlab.slurm.requeue import SlurmRequeue, SlurmSignals

__all__ = [
    "SlurmRequeue",
    "SlurmSignals",
    "in_slurm_job",
    "requeue",
    "slurm_environment",
    "task_id",
    "task_states",
]
