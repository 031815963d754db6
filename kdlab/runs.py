"""A run folder's life: who holds it, what state it is in, what a new launch does with it.

Researchers re-run things all day: the same ``-m`` command again to retry the failed points of a
sweep, a single run again after a crash or a time limit. So a launch into an existing folder
reads the folder first:

- ``finished`` (results.json says so): skipped with one log line, nothing re-tested or rewritten,
  unless ``rerun=true``, which moves the old outputs to ``previous/<time>/`` and trains again;
- ``failed``, ``interrupted``, ``requeued``, ``cancelled``, or no results.json: resumed from
  ``checkpoints/last.ckpt`` when there is one (an old failure record moves to ``previous/``).

One live run per folder: ``RunLock`` creates ``.kdlab.lock`` atomically with the holder's host,
pid and start time, and refreshes its time while the run lives. A second launch stops at once
with a message naming the folder and the holder; a lock whose process is gone (same host) or
that has not been refreshed for ``STALE_S`` (another host) is taken over with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

log = logging.getLogger("kdlab.runs")
LOCK = ".kdlab.lock"
STALE_S = 30 * 60  # a lock of another host that nobody refreshed for 30 min is stale
REFRESH_S = 60  # how often a live run refreshes its lock
RESUMABLE = ("failed", "interrupted", "requeued", "cancelled")


class RunStopped(Exception):
    """Training was stopped on request (a SLURM requeue, a cancel): the run records ``status``
    with the reason, is not tested, and a later launch resumes it from its last checkpoint."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Terminated(BaseException):
    """SIGTERM or Ctrl-C (SIGINT) outside SLURM's requeue handling: the run records
    ``interrupted`` with its last finished epoch and exits with ``128 + signal``.

    A ``BaseException`` like ``KeyboardInterrupt``, so no ``except Exception`` on the way
    mistakes a stop for a failure; Lightning tears the Trainer down and re-raises it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # the shell's convention: 130 Ctrl-C, 143 SIGTERM
        super().__init__(f"{self.name} received: stopped")


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While a run lives, SIGTERM and SIGINT raise :class:`Terminated` in the main thread.

    Without this, SIGTERM ends Lightning's fit at the epoch's end with exit status 0 and no
    record, and Ctrl-C makes Lightning call ``sys.exit(1)``: either leaves a folder that looks
    like a crash. Lightning composes its own SIGTERM handler in front of this one during fit.
    In a SLURM job only Ctrl-C is taken: SIGTERM there is SLURM's (``kdlab.slurm``).
    """

    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated(signum)

    from kdlab.slurm.cluster import in_slurm_job

    # under SLURM, SIGTERM belongs to kdlab.slurm (a requeue or a cancel, recorded as such)
    signums = (signal.SIGINT,) if in_slurm_job() else (signal.SIGTERM, signal.SIGINT)
    previous = {}
    try:
        for signum in signums:
            previous[signum] = signal.signal(signum, raise_terminated)
    except ValueError:  # not the main thread: leave the process's handlers alone
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class FolderLocked(RuntimeError):
    """Another live run holds this folder (never recorded as that folder's failure)."""


def read_results(out: Path) -> dict[str, Any] | None:
    """The folder's results.json, or None when absent or unreadable."""
    try:
        return json.loads((Path(out) / "results.json").read_text())
    except (OSError, ValueError):
        return None


def status(out: Path) -> str | None:
    """``finished``, ``failed``, ``interrupted``, ``requeued``, ``cancelled`` or None."""
    res = read_results(out)
    return None if res is None else str(res.get("status", "finished"))


def archive(out: Path, names: tuple[str, ...]) -> Path | None:
    """Move ``names`` (files or folders) of ``out`` into ``previous/<time>/``; nothing lost."""
    present = [n for n in names if (Path(out) / n).exists()]
    if not present:
        return None
    dest = Path(out) / "previous" / time.strftime("%Y-%m-%d_%H-%M-%S")
    dest.mkdir(parents=True, exist_ok=True)
    for name in present:
        shutil.move(str(Path(out) / name), str(dest / name))
    log.info("moved %s of %s to %s", ", ".join(present), out, dest)
    return dest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(out):`` — exclusive use of a run folder by this process."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK
        self.held = False

    def in_use(self) -> bool:
        """Whether a live run (not this lock object) holds the folder: a fresh lock file."""
        return self.path.is_file() and not self._stale(self._holder())

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _alive(holder["pid"])
        try:
            return time.time() - self.path.stat().st_mtime > STALE_S
        except OSError:
            return True

    def _held_by(self, holder: dict[str, Any]) -> FolderLocked:
        return FolderLocked(
            f"run folder {self.path.parent} is in use by pid {holder.get('pid')} on "
            f"host {holder.get('host')} (since {time.ctime(holder.get('started', 0))}). Wait "
            f"for it, use another folder, or, if that process is gone, delete {self.path}"
        )

    def check_free(self) -> None:
        """Raise ``FolderLocked`` when a live run holds the folder (reads only)."""
        holder = self._holder()
        if self.path.is_file() and not self._stale(holder):
            if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                return
            raise self._held_by(holder)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder.get("pid") == os.getpid() and holder.get("host") == me["host"]:
                    self.held = True  # this process already holds it (a retry in-process)
                    return
                if not self._stale(holder):
                    raise self._held_by(holder) from None
                log.warning("taking over a stale lock of %s (holder %s)", self.path.parent, holder)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise FolderLocked(f"could not lock {self.path.parent}: another launch raced for it")

    def refresh(self) -> None:
        if self.held:
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class KeepLock(L.Callback):
    """Refresh the folder's lock while training, so other hosts see the run is alive."""

    def __init__(self, lock: RunLock) -> None:
        self.lock, self.last = lock, time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if time.time() - self.last > REFRESH_S:
            self.lock.refresh()
            self.last = time.time()


def check_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (None: it loads)."""
    from kdlab.utils.safe_load import UnreadableFile, load_weights

    try:
        ckpt = load_weights(path, "checkpoint")
    except UnreadableFile as e:  # truncated, garbage, or not a checkpoint at all
        return str(e)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        return "not a Lightning checkpoint (no state_dict/epoch)"
    return None


def resume_checkpoint(out: Path, mode: str = "auto") -> Path | None:
    """The checkpoint a launch into ``out`` continues from.

    ``auto``: ``checkpoints/last.ckpt`` when present (a corrupt one is an error naming the
    way out); ``previous``: ``checkpoints/last.ckpt.prev`` (the epoch before); ``never``: start
    from scratch (the old checkpoints move to ``previous/``).
    """
    if mode not in ("auto", "previous", "never"):
        raise ValueError(f"resume={mode!r} is not one of auto, previous, never")
    ckpts = Path(out) / "checkpoints"
    last, prev = ckpts / "last.ckpt", ckpts / "last.ckpt.prev"
    from kdlab.utils.checkpoint_io import remove_stale_temporaries

    for folder in (Path(out), ckpts):  # half-written files of a killed attempt
        for stale in remove_stale_temporaries(folder):
            log.info("removed %s, left by a killed attempt", stale)
    if mode == "never":
        archive(out, ("checkpoints",))
        return None
    path = prev if mode == "previous" else last
    if not path.is_file():
        if mode == "previous":
            raise ValueError(f"resume=previous: there is no earlier checkpoint {prev}")
        return None
    problem = check_checkpoint(path)
    if problem is None:
        return path
    ways = ["resume=never to start from scratch (the old checkpoints are kept in previous/)"]
    if mode == "auto" and prev.is_file() and check_checkpoint(prev) is None:
        ways.insert(0, f"resume=previous to continue from the epoch before ({prev})")
    raise ValueError(
        f"checkpoint {path} cannot be loaded ({problem}); it was probably cut short by a kill "
        f"or a full disk. Run the same command again with " + ", or ".join(ways)
    )


def ended_as_planned(trainer: L.Trainer) -> bool:
    """All epochs (or steps) done, or early stopping ended it: not an interruption."""
    if trainer.current_epoch >= trainer.max_epochs:
        return True
    if 0 < trainer.max_steps <= trainer.global_step:
        return True
    return any(
        isinstance(cb, EarlyStopping) and cb.stopping_reason != EarlyStoppingReason.NOT_STOPPED
        for cb in trainer.callbacks
    )
