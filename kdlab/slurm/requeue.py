"""SLURM time limits, pre-emption and cancels: one requeue per signal, handled by the training
process, recorded in the run folder, resumed from ``checkpoints/last.ckpt``.

``hydra/launcher=slurm`` (``conf/hydra/launcher/slurm.yaml``) adds three pieces to every job:

- :class:`SlurmRequeue`, a Lightning callback (``callbacks.slurm_requeue``): from the start of
  ``fit`` to its end it owns the requeue signal (``SIGUSR1``, and submitit's ``SIGUSR2``) and
  ``SIGTERM`` in the training process. Its handlers only note a signal; at the next batch
  boundary (or at the start of training) the callback acts on it: a requeue signal → exactly
  one ``scontrol requeue`` of this task (``${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}``, else
  ``$SLURM_JOB_ID``; from global rank 0 only), then ``RunStopped("requeued")``; ``SIGTERM``
  that did not follow our own requeue (``scancel``) → ``RunStopped("cancelled")``.
  ``kdlab.train`` records either in ``results.json``, tests nothing and returns. No checkpoint
  is written mid-epoch, so the next launch resumes at the end of the last finished epoch and
  ends exactly like an uninterrupted run.
- :class:`SlurmSignals`, a Hydra callback (``hydra.callbacks.slurm_signals``): notes the
  requeue signals from the start of the job (after Python's imports) to its end, so one that
  arrives while the data or the model are being built waits for :class:`SlurmRequeue` instead
  of killing the process (Python's default for ``SIGUSR1``) or reaching submitit's ``SIGUSR2``
  handler (which requeues, then calls ``sys.exit`` wherever the process is); one that arrives
  after training (while testing) is logged and ignored: the run is about to finish.
- :func:`slurm_environment`: Lightning's ``SLURMEnvironment`` *without* auto-requeue (its
  handler saves an ``hpc_ckpt`` mid-epoch and requeues from any process that receives the
  signal); the plain environment off SLURM.

Order of events on a time limit (``#SBATCH --signal=USR1@signal_delay_s``): slurmctld sends
``SIGUSR1`` to every process of the job step 0–30 s before ``limit − signal_delay_s`` (it checks
limits every 30 s); DataLoader workers ignore it (``kdlab.data.module.quiet_worker``); the training
process requeues at the next batch boundary and stops; SLURM then sends ``SIGTERM`` (slurmstepd,
and srun forwards another) and ``SIGKILL`` after ``KillWait``. The task stays PENDING for
``cred_expire + 1`` s (121 s by default), then re-runs the same pickled submitit call: the same
job folder, resumed from ``last.ckpt``. :class:`kdlab.sweep.SweepSummary` waits for such tasks.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import lightning as L
from hydra.experimental.callback import Callback as HydraCallback

from kdlab.runs import RunStopped
from kdlab.slurm.cluster import in_slurm_job, requeue, requeue_signals, task_id

log = logging.getLogger("kdlab.slurm")


class _Watch:
    """Process-wide note of job-control signals, held by scopes (the job, the fit).

    The handler only appends ``(signal, time)``: acting on it (``scontrol``, raising) happens at
    a safe point in :class:`SlurmRequeue`. A signal nobody holds any more goes to the handler
    that was there before (Lightning puts ours back when its own teardown restores handlers).
    """

    def __init__(self) -> None:
        self.notes: list[tuple[int, float]] = []
        self.previous: dict[int, Any] = {}  # the handler before the first hold
        self.holders: dict[int, int] = {}
        self.delegating = False

    def _note(self, signum: int, frame: Any) -> None:
        if self.holders.get(signum):
            self.notes.append((signum, time.time()))
            return
        if self.delegating:  # a handler that calls us back (Lightning's composite): stop here
            return
        prev = self.previous.get(signum, signal.SIG_DFL)
        if callable(prev):
            self.delegating = True
            try:
                prev(signum, frame)
            finally:
                self.delegating = False
        elif prev in (signal.SIG_DFL, None):
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def install(self, signum: int) -> None:
        """(Re)install the note handler, e.g. over the handler Lightning registered meanwhile
        (which is not the one to restore: that is the handler from before the first hold)."""
        current = signal.getsignal(signum)
        if current != self._note:
            signal.signal(signum, self._note)
            if not self.holders.get(signum):
                self.previous[signum] = current

    def hold(self, signals) -> None:
        for signum in signals:
            self.install(signum)
            self.holders[signum] = self.holders.get(signum, 0) + 1

    def release(self, signals) -> None:
        for signum in signals:
            self.holders[signum] = max(0, self.holders.get(signum, 0) - 1)
            if not self.holders[signum] and signal.getsignal(signum) == self._note:
                prev = self.previous.get(signum)
                signal.signal(signum, signal.SIG_DFL if prev is None else prev)
        self.notes = [n for n in self.notes if self.holders.get(n[0])]  # nobody will act on them

    def take(self, signals=None) -> list[tuple[int, float]]:
        """The notes (of ``signals``, default all) since the last take."""
        notes, self.notes = self.notes, []  # a note arriving meanwhile lands in one of the two
        mine = [signals is None or signum in signals for signum, _ in notes]
        self.notes[:0] = [n for n, m in zip(notes, mine, strict=True) if not m]
        return [n for n, m in zip(notes, mine, strict=True) if m]


WATCH = _Watch()


class SlurmSignals(HydraCallback):
    """Hydra callback: note the requeue signals for the whole SLURM job (see the module
    docstring); :class:`SlurmRequeue` acts on them during training."""

    def __init__(self, requeue_signal: str = "SIGUSR1") -> None:
        self.requeue_signal = requeue_signal
        self.held: set[signal.Signals] = set()

    def __getstate__(self) -> dict:
        return {"requeue_signal": self.requeue_signal, "held": set()}

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        if in_slurm_job() and not self.held:
            self.held = requeue_signals(self.requeue_signal)
            WATCH.hold(self.held)

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        if not self.held:
            return
        for signum, _ in WATCH.take(self.held):
            log.warning(
                "%s arrived after training: not requeued (the run was finishing)",
                signal.Signals(signum).name,
            )
        WATCH.release(self.held)
        self.held = set()


class SlurmRequeue(L.Callback):
    """Requeue on the pre-timeout signal, record a cancel on ``SIGTERM``: in the training
    process, once, between batches (see the module docstring for the order of events).

    Off SLURM (no ``SLURM_JOB_ID``) it does nothing. Its handlers (held from ``setup`` to the end
    of training; ``SIGTERM``'s put back in front of Lightning's, which would end training with
    ``SIGTERMException``) only note signals; the hooks act on them. At the end of training, or
    when training raises, the previous handlers come back.
    """

    def __init__(self, requeue_signal: str = "SIGUSR1") -> None:
        self.requeue_signals = requeue_signals(requeue_signal)
        self.held: set[int] = set()
        self.requeued = False  # scontrol requeue worked: a SIGTERM is now expected
        self.expected_term = 0
        self.stop: tuple[str, str] | None = None

    def __getstate__(self) -> dict:  # a checkpoint or a spawn never carries live handlers
        return self.__dict__ | {"held": set()}

    # -- scope ----------------------------------------------------------------------------
    def _start(self, trainer: L.Trainer) -> None:
        if self.held or not in_slurm_job():
            return
        from lightning.fabric.plugins.environments import SLURMEnvironment

        env = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
        if isinstance(env, SLURMEnvironment) and env.auto_requeue:
            env.auto_requeue = False  # e.g. auto-detected under srun: requeueing is ours
            log.info("Lightning's SLURM auto-requeue is off: kdlab.slurm.SlurmRequeue requeues")
        self.held = {*self.requeue_signals, signal.SIGTERM}
        WATCH.hold(self.held)

    def _take_over_sigterm(self, trainer: L.Trainer) -> None:
        """Lightning registers its SIGTERM handler after ``setup``: put ours back in front."""
        if not self.held:
            return
        WATCH.install(signal.SIGTERM)
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None and connector.received_sigterm:  # arrived in between
            connector.received_sigterm = False
            WATCH.notes.append((signal.SIGTERM, time.time()))

    def _end(self) -> None:
        if self.held:
            WATCH.release(self.held)
            self.held = set()

    # -- decisions ------------------------------------------------------------------------
    def _decide(self, trainer: L.Trainer, training: bool = True) -> None:
        for signum, _ in WATCH.take(self.held):
            name = signal.Signals(signum).name
            if signum == signal.SIGTERM:
                if self.requeued:
                    self.expected_term += 1
                    if self.expected_term == 1:
                        log.info("%s after our requeue (expected): stopping as requeued", name)
                elif self.stop is None or self.stop[0] != "cancelled":
                    self.stop = (
                        "cancelled",
                        f"{name} from SLURM: the job was cancelled (scancel) or pre-empted",
                    )
                    log.warning(
                        "%s in pid %d: stopping as cancelled (python -m kdlab.sweep DIR "
                        "--resume continues it from its last epoch)",
                        name,
                        os.getpid(),
                    )
            elif self.stop is not None:
                log.info("%s ignored: the run is already stopping (%s)", name, self.stop[0])
            elif not training:
                log.warning("%s arrived as training ended: not requeued (testing follows)", name)
            else:
                self._requeue(trainer, name)

    def _requeue(self, trainer: L.Trainer, name: str) -> None:
        task = task_id()
        if trainer.global_rank != 0:  # rank 0 requeues the job for every process
            log.info(
                "%s in pid %d (rank %d): rank 0 requeues SLURM task %s; stopping with it",
                name,
                os.getpid(),
                trainer.global_rank,
                task,
            )
            self.stop = ("requeued", f"{name}: SLURM task {task} requeued by rank 0")
            return
        log.warning(
            "handling %s in pid %d (SLURM's pre-timeout signal or a pre-emption): "
            "requeueing SLURM task %s",
            name,
            os.getpid(),
            task,
        )
        ok, said = requeue(task) if task else (False, "no SLURM job id in the environment")
        if ok:
            self.requeued = True
            self.stop = (
                "requeued",
                f"{name}: SLURM task {task} requeued (scontrol requeue); "
                "it resumes from checkpoints/last.ckpt",
            )
            log.warning(
                "requeued SLURM task %s: stopping now, the requeued task resumes from "
                "checkpoints/last.ckpt",
                task,
            )
        else:
            self.stop = (
                "interrupted",
                f"{name}: scontrol requeue {task} failed ({said}); re-run the sweep to continue",
            )
            log.error("scontrol requeue %s failed: %s; stopping as interrupted", task, said)

    def _check(self, trainer: L.Trainer, training: bool = True) -> None:
        if not self.held:
            return
        self._decide(trainer, training)
        stop = self.stop is not None
        if trainer.world_size > 1:  # every process stops at the same batch (collectives)
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            status, reason = self.stop or ("interrupted", "stopped with the other processes")
            self._end()
            raise RunStopped(status, reason)

    # -- Lightning hooks ------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._start(trainer)

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._take_over_sigterm(trainer)
        self._check(trainer)

    def on_train_start(self, trainer, pl_module) -> None:
        self._take_over_sigterm(trainer)
        self._check(trainer)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._check(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check(trainer)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._check(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        try:
            self._check(trainer, training=False)  # a cancel still counts; a requeue no more
        finally:
            self._end()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._end()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._end()
