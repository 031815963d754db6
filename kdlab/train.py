"""``python -m kdlab.train``: seed → build from config → fit → test twice → results.json.

Everything is built with ``hydra.utils.instantiate`` from ``conf/`` (the system too:
``conf/system/default.yaml``); this file only wires the pieces together and records what
happened. A run re-launched in the same output folder resumes from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from kdlab.checks import (
    check_method,
    check_run_settings,
    check_shared_hparams,
    check_teacher_export,
)
from kdlab.labels import is_debug, run_labels
from kdlab.models.init import seeded_build
from kdlab.results import collect_results, export_teacher, write_stop_record
from kdlab.runs import (
    FolderLocked,
    KeepLock,
    RunLock,
    RunStopped,
    archive,
    ended_as_planned,
    read_results,
    resume_checkpoint,
)
from kdlab.search import returns_optimized_metric
from kdlab.utils.checkpoint_io import SafeCheckpointIO
from kdlab.utils.method_params import flat_hparams
from kdlab.utils.provenance import write_json
from kdlab.utils.resolvers import register

register()
log = logging.getLogger("kdlab.train")
# The frozen teacher is in eval mode on purpose (kdlab.teachers); Lightning's generic
# "modules in eval mode at the start of training" warning would only alarm users.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")


def build_system(cfg: DictConfig, net) -> L.LightningModule:
    """The run's LightningModule (``conf/system``) around the student ``net``."""
    return instantiate(cfg.system)(net)


def build_trainer(cfg: DictConfig, extra_callbacks: list) -> L.Trainer:
    """The Trainer with the configured callbacks and loggers, plus atomic checkpoint files."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks = [c for c in callbacks if c is not None] + extra_callbacks
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    plugins = [instantiate(p) for p in (cfg.trainer.get("plugins") or [])] + [SafeCheckpointIO()]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins)


def train(cfg: DictConfig) -> dict[str, Any]:
    """One run: returns the results dict that is also written to ``results.json``.

    Only the first process of a DDP run owns the folder (lock, archive, results, export); the
    other processes train and test with it.
    """
    started = time.time()
    out = Path(cfg.paths.output_dir)
    chief = rank_zero_only.rank == 0
    prior = read_results(out)
    if prior is not None and prior.get("status", "finished") == "finished" and not cfg.rerun:
        log.info("%s already finished (test_acc_best=%s): skipped; rerun=true trains it again",
                 out, prior.get("test_acc_best"))  # fmt: skip
        return prior
    with RunLock(out) if chief else nullcontext() as lock:
        for check in (check_run_settings, check_method, check_shared_hparams):
            check(cfg)
        if chief and prior is not None:  # nothing is lost: earlier outputs go to previous/
            archive(
                out, ("results.json", "error.txt") + (("checkpoints", "csv") if cfg.rerun else ())
            )
        L.seed_everything(cfg.seed, workers=True)
        datamodule = instantiate(cfg.data)
        # init_seed fixes the student's weights apart from the data-order seed (paired runs)
        init_seed = cfg.seed if cfg.get("init_seed") is None else cfg.init_seed
        system = build_system(cfg, seeded_build(lambda: instantiate(cfg.model), init_seed))
        check_teacher_export(cfg, system.net.arch)
        resume = resume_checkpoint(out, cfg.resume if chief or cfg.resume != "never" else "auto")
        trainer = build_trainer(cfg, [KeepLock(lock)] if chief else [])
        method_params = system.describe()["method_params"]  # the settings as used (dashboards)
        hparams = OmegaConf.to_container(cfg, resolve=True)
        hparams |= {"method_params": method_params, **flat_hparams(method_params)}
        for lg in trainer.loggers:
            lg.log_hyperparams(hparams)
        if resume:
            log.info("resuming from %s", resume)
        try:
            trainer.fit(system, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        except RunStopped as stop:  # a requeue or a cancel: record it, test nothing
            return write_stop_record(cfg, stop, trainer.current_epoch) if chief else {}
        finished = ended_as_planned(trainer)
        ckpt = trainer.checkpoint_callback  # with early stopping, best = lowest val loss
        val_acc_best = ckpt.best_model_score if ckpt.monitor == "val/acc" else None
        val_acc_best = system.best_val_acc() if val_acc_best is None else float(val_acc_best)

        # Final weights first (they are in memory), then the best checkpoint.
        system.use_test_prefix("test_final")
        final = trainer.test(system, datamodule=datamodule, verbose=False)[0]
        system.use_test_prefix("test")
        best_path = trainer.checkpoint_callback.best_model_path or None
        best = trainer.test(system, datamodule=datamodule, ckpt_path=best_path, verbose=False)[0]
        if not chief:
            return {}
        res = collect_results(cfg, system, trainer, best, final, val_acc_best)
        if system.has_teacher and (cfg.get("fidelity") or {}).get("train_set", True):
            limit = cfg.trainer.get("limit_train_batches")  # an int = a smoke run: stay as short
            smoke = isinstance(limit, int) and not isinstance(limit, bool)
            res |= system.train_fidelity(
                datamodule.loader("train"), trainer.strategy.root_device, limit if smoke else None
            )
        if cfg.export_teacher and finished and not is_debug(cfg):  # debug runs never export
            res["teacher_store_path"] = str(export_teacher(cfg, system, res))
        res |= run_labels(cfg)
        res["duration_s"] = round(time.time() - started, 1)
        res["status"] = "finished" if finished else "interrupted"
        write_json(out / "results.json", res)
    log.info(
        "results (%s): val_acc_best=%.2f test_acc_best=%.2f test_acc_final=%.2f → %s",
        res["status"], res["val_acc_best"] or float("nan"), res["test_acc_best"],
        res["test_acc_final"], out / "results.json",
    )  # fmt: skip
    return res


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@returns_optimized_metric  # what an Optuna sweeper (hparams_search=NAME) needs from a job
def main(cfg: DictConfig) -> dict[str, Any]:
    """Hydra entry: one run, or one job of a ``-m`` sweep.

    In a sweep a failing job is recorded (``results.json`` with ``status: failed`` and
    ``error.txt``) instead of raised, so the other jobs still run and the sweep summary
    (``kdlab.sweep.SweepSummary``) lists it; a single run re-raises (non-zero exit).
    """
    try:
        return train(cfg)
    except Exception as err:
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            raise
        if isinstance(err, FolderLocked):  # the folder is a live run's: write nothing into it
            log.error("job skipped: %s", err)
            return {"status": "running", "error": str(err)}
        from kdlab.sweep import record_failure

        return record_failure(cfg, err, hc.runtime.output_dir)
    finally:
        if "wandb" in sys.modules:  # no W&B run may bleed into the next multirun job
            import wandb

            wandb.finish()


def hoist_flags(argv: list[str]) -> list[str]:
    """Move Hydra's ``-m``/``--multirun`` in front of the overrides.

    argparse stops collecting overrides at a flag, so ``+experiment=X -m seed=0,1`` would reject
    ``seed=0,1``; the documented form puts ``-m`` after the experiment, so accept it anywhere.
    """
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    rest = [a for a in argv[1:] if a not in ("-m", "--multirun")]
    return argv[:1] + flags + rest


if __name__ == "__main__":
    sys.argv = hoist_flags(sys.argv)
    main()
