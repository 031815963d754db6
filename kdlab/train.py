"""``python -m kdlab.train``: seed → build from config → fit → test twice → results.json.

Everything is built with ``hydra.utils.instantiate`` from ``conf/`` (the system too:
``conf/system/default.yaml``); this file only wires the pieces together and records what
happened. A run re-launched in the same output folder resumes from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from kdlab.checks import (
    check_method,
    check_method_settings,
    check_run_settings,
    check_teacher_export,
)
from kdlab.cli_args import command_line
from kdlab.labels import is_debug
from kdlab.metrics.divergence import RunDiverged
from kdlab.models.init import seeded_build
from kdlab.results import (
    error_text,
    export_teacher,
    finished_record,
    write_failure,
    write_record,
)
from kdlab.run_config import (
    HYDRA_DIR,
    ConfigChanged,
    check_folder_config,
    mark_launched,
    write_hydra_files,
)
from kdlab.runs import (
    FolderLocked,
    KeepLock,
    RunLock,
    RunStopped,
    Terminated,
    archive,
    ended_as_planned,
    read_results,
    resume_checkpoint,
    stop_on_signals,
)
from kdlab.search import returns_optimized_metric
from kdlab.utils.checkpoint_io import SafeCheckpointIO
from kdlab.utils.config_tree import save_tree
from kdlab.utils.errors import user_error
from kdlab.utils.method_params import flat_hparams
from kdlab.utils.provenance import git_commit
from kdlab.utils.quiet import quiet_libraries
from kdlab.utils.resolvers import register
from kdlab.utils.runlog import claim_log_files

register()
quiet_libraries()
log = logging.getLogger("kdlab.train")


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
    """One run: returns the record that is also written to ``results.json``.

    The folder is checked before anything is written into it: a launch with another config is
    refused (:mod:`kdlab.run_config`), a finished run is skipped. From the moment the folder is
    this run's, every way the run ends leaves its record: finished, failed (``error.txt`` too),
    diverged, interrupted (SIGTERM, Ctrl-C), requeued or cancelled (SLURM).

    Only the first process of a DDP run owns the folder (lock, archive, results, export); the
    other processes train and test with it.
    """
    started = time.time()
    git_commit()  # the code this launch runs, read now: the tree may change while it trains
    out = Path(cfg.paths.output_dir)
    chief = rank_zero_only.rank == 0
    prior = read_results(out)
    if chief:
        RunLock(out).check_free()  # these two read only: a refused launch changes no file
    if not cfg.rerun:
        check_folder_config(cfg, out)
    prior_finished = prior is not None and prior.get("status", "finished") == "finished"
    if prior_finished and not cfg.rerun:
        if chief:
            mark_launched(out)
        log.info(
            "%s already finished (test_acc_best=%s): skipped; rerun=true trains it again",
            out,
            prior.get("test_acc_best"),
        )
        return prior
    with RunLock(out) if chief else nullcontext() as lock:
        # a folder that is re-run (rerun=true) keeps its outputs, .hydra/ included, until the
        # new run has passed its checks; they are archived before the new config is written
        owns = chief and not prior_finished and not cfg.rerun
        state: dict[str, Any] = {"system": None, "trainer": None}
        try:
            if owns:
                claim_folder(cfg, out)
            check_run_settings(cfg)
            check_method(cfg)
            unread = check_method_settings(cfg)
            if chief and prior is not None:  # nothing is lost: earlier outputs go to previous/
                moved = ("results.json", "error.txt")
                if cfg.rerun:
                    moved += ("checkpoints", "csv", HYDRA_DIR)
                archive(out, moved)
            if chief and not owns:
                claim_folder(cfg, out)
                owns = True
            drop_settings(cfg.get("distill"), unread)  # after the folder saved the config
            return run(cfg, out, lock, state, started)
        except RunStopped as stop:  # a requeue or a cancel: record it, test nothing
            if not owns:
                return {}
            res = write_record(
                cfg, stop.status, state["system"], state["trainer"], reason=stop.reason
            )
            log.warning(
                "run %s: %s (resumes from its last checkpoint when launched again)",
                stop.status,
                stop.reason,
            )
            return res
        except RunDiverged as err:
            if owns:
                write_record(
                    cfg,
                    "diverged",
                    state["system"],
                    state["trainer"],
                    reason=str(err),
                    diverged_step=err.step,
                    diverged_epoch=err.epoch,
                    diverged_term=err.term,
                )
            raise
        except Terminated as stop:
            if owns:
                write_record(
                    cfg,
                    "interrupted",
                    state["system"],
                    state["trainer"],
                    reason=f"{stop.name}: stopped before its end; launching the same "
                    "command again resumes from checkpoints/last.ckpt",
                )
                log.warning("%s: run recorded as interrupted in %s", stop.name, out)
            raise
        except Exception as err:
            if owns:
                write_failure(cfg, err, state["system"], state["trainer"])
            raise


def drop_settings(node: DictConfig | None, keys: list[str]) -> None:
    """The run goes on without settings its method does not take; the saved config keeps what
    was asked for (a relaunch of the same command compares equal), the log says it was ignored."""
    with open_dict(node) if keys else nullcontext():
        for key in keys:
            del node[key]


def claim_folder(cfg: DictConfig, out: Path) -> None:
    """The folder is this run's from here: its config (once), the launch note, the log file."""
    write_hydra_files(cfg, out)
    save_tree(cfg, out)
    mark_launched(out)
    claim_log_files()


def run(cfg: DictConfig, out: Path, lock, state: dict[str, Any], started: float) -> dict:
    """Build, fit, test twice, record: the part of a run that happens in an owned folder."""
    chief = rank_zero_only.rank == 0
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    # init_seed fixes the student's weights apart from the data-order seed (paired runs)
    init_seed = cfg.seed if cfg.get("init_seed") is None else cfg.init_seed
    system = state["system"] = build_system(
        cfg, seeded_build(lambda: instantiate(cfg.model), init_seed)
    )
    check_teacher_export(cfg, system.net.arch)
    resume = resume_checkpoint(out, cfg.resume if chief or cfg.resume != "never" else "auto")
    trainer = state["trainer"] = build_trainer(cfg, [KeepLock(lock)] if chief else [])
    info = system.describe()
    method_params = info["method_params"]  # the settings as used (dashboards)
    log.info(
        "student %s: %s parameters%s",
        system.net.arch,
        f"{info['student_params']:,}",
        f"; teacher {info['teacher']}: {info['teacher_params']:,}" if info["teacher"] else "",
    )
    hparams = OmegaConf.to_container(cfg, resolve=True)
    hparams |= {"method_params": method_params, **flat_hparams(method_params)}
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)
    if resume:
        log.info("resuming from %s", resume)
    trainer.fit(system, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
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
    res = finished_record(cfg, system, trainer, best, final, val_acc_best)
    if system.has_teacher and (cfg.get("fidelity") or {}).get("train_set", True):
        limit = cfg.trainer.get("limit_train_batches")  # an int = a smoke run: stay as short
        smoke = isinstance(limit, int) and not isinstance(limit, bool)
        res |= system.train_fidelity(
            datamodule.loader("train"), trainer.strategy.root_device, limit if smoke else None
        )
    if cfg.export_teacher and finished and not is_debug(cfg):  # debug runs never export
        res["teacher_store_path"] = str(export_teacher(cfg, system, res))
    res["duration_s"] = round(time.time() - started, 1)
    status = "finished" if finished else "interrupted"
    res = write_record(cfg, status, system, trainer, **res)
    log.info(
        "results (%s): val_acc_best=%.2f test_acc_best=%.2f test_acc_final=%.2f → %s",
        res["status"],
        res["val_acc_best"] or float("nan"),
        res["test_acc_best"],
        res["test_acc_final"],
        out / "results.json",
    )
    return res


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@returns_optimized_metric  # what an Optuna sweeper (hparams_search=NAME) needs from a job
def main(cfg: DictConfig) -> dict[str, Any]:
    """Hydra entry: one run, or one job of a ``-m`` sweep.

    In a sweep a failing or diverging job is recorded and the next job runs (the sweep summary
    lists it); a single run exits non-zero with one message (the traceback is in error.txt).
    A stop (SIGTERM, Ctrl-C) ends a sweep too, after its summary: exit 143 or 130.
    """
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        with stop_on_signals():
            return train(cfg)
    except Terminated as stop:  # a sweep stops too: its summary is printed at exit
        raise SystemExit(stop.exit_code) from None
    except (FolderLocked, ConfigChanged) as err:  # another run's folder: nothing written into it
        log.error("%s", err)
        if multirun:
            return {"status": "refused", "error": str(err)}
        raise SystemExit(2) from None
    except Exception as err:
        if multirun:
            return read_results(Path(HydraConfig.get().runtime.output_dir)) or {
                "status": "failed",
                "error": error_text(err),
            }
        if isinstance(err, RunDiverged) or user_error(err):
            if isinstance(err, RunDiverged):
                log.error("%s (record: %s)", err, Path(cfg.paths.output_dir) / "results.json")
            elif not getattr(err, "kdlab_recorded", False):
                log.error("%s", error_text(err))
            raise SystemExit(1) from None
        raise
    finally:
        if "wandb" in sys.modules:  # no W&B run may bleed into the next multirun job
            import wandb

            wandb.finish()


if __name__ == "__main__":
    sys.argv = command_line(sys.argv)
    main()
