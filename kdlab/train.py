"""``python -m kdlab.train``: seed → build from config → fit → test twice → results.json.

Everything is built with ``hydra.utils.instantiate`` from ``conf/``; this file only wires the
pieces together and records what happened. A run re-launched in the same output folder resumes
from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from kdlab.models import count_parameters
from kdlab.utils.provenance import git_commit, write_json
from kdlab.utils.resolvers import register

register()
log = logging.getLogger("kdlab.train")


def _optional(cfg: DictConfig | None) -> Any:
    """Instantiate a config node that may be absent or target-less (e.g. scheduler=none)."""
    if cfg is None or "_target_" not in cfg:
        return None
    return instantiate(cfg)


def build_system(cfg: DictConfig, net) -> L.LightningModule:
    """Classifier for CE training, Distiller when a KD loss (``distill``) is configured."""
    from kdlab.distill.base import CrossEntropy
    from kdlab.systems import Classifier, Distiller

    common = dict(
        optimizer=instantiate(cfg.optim),
        scheduler=_optional(cfg.get("scheduler")),
        grad_clip=cfg.grad_clip,
        lr_scale=cfg.get("lr_scale", 1.0),
    )
    if cfg.get("distill") is None:
        return Classifier(net, criterion=CrossEntropy(cfg.label_smoothing), **common)
    if cfg.get("teacher") is None:
        raise ValueError("distill is set but no teacher: add teacher=<arch> (e.g. teacher=r50)")
    teacher = instantiate(cfg.teacher)
    criterion = instantiate(cfg.distill)
    return Distiller(net, teacher, criterion, clip_scope=cfg.clip_scope, **common)


def collect_results(cfg: DictConfig, system, trainer, best: dict, final: dict) -> dict[str, Any]:
    """results.json: the SPEC §2 keys, the final-weights twins, and provenance."""
    ckpt = trainer.checkpoint_callback
    teacher = getattr(system, "teacher", None)
    res: dict[str, Any] = {
        "experiment": cfg.name,
        "dataset": cfg.data.name,
        "teacher": teacher.label if teacher is not None else None,
        "student": system.net.arch,
        "method": cfg.method,
        "alpha": cfg.alpha,
        "temperature": cfg.temperature,
        "beta": cfg.beta,
        "seed": cfg.seed,
        "epochs": cfg.trainer.max_epochs,
        "epochs_trained": trainer.current_epoch,
        "val_acc_best": ckpt.best_model_score,
    }
    names = ["acc", "nll", "ece"] + (["agreement", "kl"] if teacher is not None else [])
    for name in names:
        res[f"test_{name}_best" if name == "acc" else f"test_{name}"] = best.get(f"test/{name}")
    for name in names:
        res[f"test_{name}_final"] = final.get(f"test_final/{name}")
    if teacher is not None:
        res |= {
            "teacher_test_acc": best.get("test/teacher_acc"),
            "teacher_ckpt": [s["path"] for s in teacher.sources],
            "teacher_sha256": [s["sha256"] for s in teacher.sources],
            "teacher_params": sum(p.numel() for p in teacher.members[0].parameters()),
            "grad_clip_scope": cfg.clip_scope,
        }
    res |= {
        "grad_clip": cfg.grad_clip,
        "student_params": count_parameters(system.net),
        "best_ckpt": ckpt.best_model_path,
        "git_commit": git_commit(),
        "output_dir": cfg.paths.output_dir,
    }
    return res


def export_teacher(cfg: DictConfig, system, res: dict[str, Any]) -> Path:
    """Copy the best-val weights (already loaded in ``system``) into the teacher store."""
    from kdlab.distill.teacher import store_path
    from kdlab.models.export import export_weights

    path = store_path(cfg.paths.teachers, cfg.data.name, system.net.arch, cfg.seed)
    if path.exists():
        log.warning("teacher store: replacing %s", path)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    keep = ("dataset", "seed", "val_acc_best", "test_acc_best", "test_acc_final", "git_commit")
    export_weights(
        system.net, path, model_cfg, **{k: res[k] for k in keep}, run_dir=res["output_dir"]
    )
    log.info("teacher exported to %s", path)
    return path


def train(cfg: DictConfig) -> dict[str, Any]:
    """One run: returns the results dict that is also written to ``results.json``."""
    started = time.time()
    out = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model)
    system = build_system(cfg, net)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    last = out / "checkpoints" / "last.ckpt"
    resume = str(last) if last.is_file() else None
    if resume:
        log.info("resuming from %s", resume)
    trainer.fit(system, datamodule=datamodule, ckpt_path=resume)

    # Final weights first (they are in memory), then the best-val checkpoint.
    system.test_prefix = "test_final"
    final = trainer.test(system, datamodule=datamodule, verbose=False)[0]
    system.test_prefix = "test"
    best_path = trainer.checkpoint_callback.best_model_path or None
    best = trainer.test(system, datamodule=datamodule, ckpt_path=best_path, verbose=False)[0]

    res = collect_results(cfg, system, trainer, best, final)
    if cfg.export_teacher:
        res["teacher_store_path"] = str(export_teacher(cfg, system, res))
    res["duration_s"] = round(time.time() - started, 1)
    res["status"] = "finished"
    write_json(out / "results.json", res)
    log.info(
        "results: val_acc_best=%.2f test_acc_best=%.2f test_acc_final=%.2f → %s",
        res["val_acc_best"] or float("nan"), res["test_acc_best"], res["test_acc_final"],
        out / "results.json",
    )  # fmt: skip
    return res


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> dict[str, Any]:
    try:
        return train(cfg)
    finally:
        import sys

        if "wandb" in sys.modules:  # no W&B run may bleed into the next multirun job
            import wandb

            wandb.finish()


if __name__ == "__main__":
    main()
