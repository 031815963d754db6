"""results.json: what a finished run records, and the teacher-store export.

The keys every script relies on (dataset, teacher, student, method, alpha, temperature, beta,
seed, epochs, the accuracies) come first; ``method_params`` holds every setting of the KD method
as used and ``method_label`` its short description. The flat ``alpha``/``temperature``/``beta``
keys are read from ``method_params``, so ``distill.alpha=0.3`` is recorded as the 0.3 that
trained. Everything the system knows about itself comes from ``system.describe()``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdlab.utils.method_params import flat_hparams
from kdlab.utils.provenance import git_commit

log = logging.getLogger("kdlab.results")


def metric_results(best: dict, final: dict, with_teacher: bool, members: int) -> dict[str, Any]:
    """Test metrics of the best-val weights (``test_*``) and the final ones (``*_final``)."""
    names = ["acc", "nll", "ece"] + (["agreement", "kl"] if with_teacher else [])
    res: dict[str, Any] = {}
    for name in names:
        res[f"test_{name}_best" if name == "acc" else f"test_{name}"] = best.get(f"test/{name}")
    for name in names:
        res[f"test_{name}_final"] = final.get(f"test_final/{name}")
    if with_teacher:
        res["teacher_test_acc"] = best.get("test/teacher_acc")
        res["teacher_member_test_acc"] = (
            [best.get(f"test/teacher_acc_m{i}") for i in range(members)] if members > 1 else None
        )
        res |= {f"test_{k[5:]}": v for k, v in best.items() if k.startswith("test/cka_")}
    return res


def training_recipe(cfg: DictConfig) -> dict[str, Any]:
    """How the run trained, in the terms published tables state their recipes in: epochs,
    images per step, initial lr, and the training augmentation (``crop+flip``, ``+strong``
    with a strong view, ``+mixup``; ``none``)."""
    data = cfg.data
    parts = ["crop+flip"] if data.get("augment", True) else []
    if data.get("strong_view"):
        parts.append("strong")
    if (data.get("mixup_alpha") or 0) > 0:
        parts.append("mixup")
    lr = (cfg.get("optim") or {}).get("lr")
    return {
        "epochs": cfg.trainer.max_epochs,
        "batch_size": data.get("batch_size"),
        "lr": float(lr) if lr is not None else None,
        "augmentation": "+".join(parts) or "none",
        "strong_augmentation": bool(data.get("strong_view")),
    }


def collect_results(
    cfg: DictConfig, system, trainer, best: dict, final: dict, val_acc_best: float | None
) -> dict[str, Any]:
    """results.json of one finished run (the caller adds fidelity, export path and status)."""
    ckpt = trainer.checkpoint_callback
    info = system.describe()
    method_params = info.pop("method_params")
    res: dict[str, Any] = {
        "experiment": cfg.name,
        "dataset": cfg.data.name,
        "train_size": cfg.data.get("train_size"),  # null = the whole training split
        "teacher": info.pop("teacher"),
        "student": system.net.arch,
        "method": cfg.method,
        **flat_hparams(method_params),
        "seed": cfg.seed,
        "epochs": cfg.trainer.max_epochs,
        "epochs_trained": trainer.current_epoch,
        "recipe": training_recipe(cfg),
        "method_params": method_params,
        "method_label": info.pop("method_label"),
        "val_acc_best": val_acc_best,
        "best_ckpt_monitor": ckpt.monitor,
        "init_seed": cfg.get("init_seed"),
        "student_init_lambda": (cfg.get("student_init") or {}).get("lambda"),
    }
    res |= metric_results(best, final, system.has_teacher, info.get("teacher_members", 1))
    res |= info
    res |= {
        "best_ckpt": ckpt.best_model_path,
        "git_commit": git_commit(),
        "output_dir": cfg.paths.output_dir,
    }
    return res


def export_teacher(cfg: DictConfig, system, res: dict[str, Any]) -> Path:
    """Copy the best-val weights (already loaded in ``system``) into the teacher store."""
    from kdlab.models.export import export_weights
    from kdlab.teachers.store import store_path

    path = store_path(cfg.paths.teachers, cfg.data.name, system.net.arch, cfg.seed)
    if path.exists():
        log.warning("teacher store: replacing %s", path)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    keep = (
        "dataset",
        "train_size",
        "seed",
        "val_acc_best",
        "test_acc_best",
        "test_acc_final",
        "git_commit",
    )
    export_weights(
        system.net, path, model_cfg, **{k: res[k] for k in keep}, run_dir=res["output_dir"]
    )
    log.info("teacher exported to %s", path)
    return path


def write_stop_record(cfg: DictConfig, stop, epochs_trained: int) -> dict[str, Any]:
    """results.json of a run stopped on request (``kdlab.runs.RunStopped``): its identity, how
    far it got and why; a later launch resumes it from its last checkpoint."""
    from kdlab.sweep import method_identity
    from kdlab.utils.provenance import write_json

    out = Path(cfg.paths.output_dir)
    res = {"experiment": cfg.name, "dataset": cfg.data.name, "method": cfg.method,
           **method_identity(cfg), "seed": cfg.seed, "epochs": cfg.trainer.max_epochs,
           "epochs_trained": epochs_trained, "status": stop.status, "reason": stop.reason,
           "output_dir": str(out)}  # fmt: skip
    write_json(out / "results.json", res)
    log.warning("run %s: %s (resumes from its last checkpoint when launched again)",
                stop.status, stop.reason)  # fmt: skip
    return res
