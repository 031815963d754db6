"""results.json: one record for every way a run ends, and the teacher-store export.

Every outcome — ``finished``, ``failed``, ``diverged``, ``interrupted``, ``requeued``,
``cancelled`` — is written by :func:`write_record` from the same two parts: the run's
*identity* (what was trained: experiment, data, networks, method and its settings, seed,
epochs), read from the config and, once built, from the system itself; and what the run got to
measure. So the report, the sweep summary and a user reading a folder see the same keys
whatever happened, and a record can never describe a config other than the one that ran.

The keys every script relies on (dataset, teacher, student, method, alpha, temperature, beta,
seed, epochs, the accuracies) come first; ``method_params`` holds every setting of the KD method
as used and ``method_label`` its short description. The flat ``alpha``/``temperature``/``beta``
keys are read from ``method_params``, so ``distill.alpha=0.3`` is recorded as the 0.3 that
trained.
"""

from __future__ import annotations

import logging
import re
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdlab.labels import run_labels
from kdlab.utils.method_params import flat_hparams
from kdlab.utils.provenance import git_commit, write_json

log = logging.getLogger("kdlab.results")
STATUSES = ("finished", "failed", "diverged", "interrupted", "requeued", "cancelled")


def _get(cfg: DictConfig, key: str) -> Any:
    """A config value that may not even resolve (a failed run's config is recorded as it is)."""
    try:
        return OmegaConf.select(cfg, key, default=None)
    except Exception:
        return None


def _choice(group: str) -> str | None:
    """The option Hydra chose for ``group`` (``model=r18`` → ``r18``), when inside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return None if choice in (None, "null") else str(choice)


def method_identity(cfg: DictConfig) -> dict[str, Any]:
    """The method's settings from the config (a run that failed early has no loss to ask)."""
    from kdlab.utils.method_params import config_tree, label, names_loss, params

    distill = cfg.get("distill")
    tree = config_tree(distill) if names_loss(distill) else None
    method_params = params(tree)
    return {
        **flat_hparams(method_params),
        "method_params": method_params,
        "method_label": label(tree) if tree else None,
    }


def identity(cfg: DictConfig, system=None) -> dict[str, Any]:
    """What a run is, whether or not it got far: from the system when it was built (the
    settings as used), else from the config."""
    res: dict[str, Any] = {
        "experiment": _get(cfg, "name"),
        "dataset": _get(cfg, "data.name"),
        "train_size": _get(cfg, "data.train_size"),  # null = the whole training split
        "teacher": None,
        "student": None,
        "method": _get(cfg, "method"),
    }
    if system is not None:
        info = system.describe()
        method_params = info["method_params"]
        res |= {
            "teacher": info["teacher"],
            "student": system.net.arch,
            **flat_hparams(method_params),
            "method_params": method_params,
            "method_label": info["method_label"],
        }
    else:
        try:
            res |= method_identity(cfg)
        except Exception:  # an invalid method config: the settings as written
            res |= {k: _get(cfg, f"distill.{k}") for k in ("alpha", "temperature", "beta")}
        res["student"] = _choice("model")
        res["teacher"] = _get(cfg, "teacher.arch")
    res |= {"seed": _get(cfg, "seed"), "epochs": _get(cfg, "trainer.max_epochs")}
    try:
        res |= run_labels(cfg)  # tags=[…] and the debug preset
    except ValueError:  # a bad tag is what a failure record may be recording
        res |= {"tags": None, "debug": _get(cfg, "debug_preset")}
    # the identity keys first, in this order; method_params/label after the flat names
    order = [
        "experiment",
        "dataset",
        "train_size",
        "teacher",
        "student",
        "method",
        "alpha",
        "temperature",
        "beta",
        "seed",
        "epochs",
        "method_params",
        "method_label",
        "tags",
        "debug",
    ]
    return {k: res[k] for k in order if k in res} | {k: v for k, v in res.items() if k not in order}


def metric_results(best: dict, final: dict, with_teacher: bool, members: int) -> dict[str, Any]:
    """Test metrics of the best-val weights (``test_*``) and the final ones (``*_final``):
    every registered stage metric under its results key, then whatever else the test pass
    logged (CKA of stage pairs, …) as ``test_<name>``."""
    from kdlab.metrics.stage import registered

    known = registered()
    metrics = {k: c for k, c in known.items() if with_teacher or not c.needs_teacher}
    res: dict[str, Any] = {c.result_key(): best.get(f"test/{k}") for k, c in metrics.items()}
    for k, c in metrics.items() if final is not None else ():
        if c.final:
            res[f"test_{k}_final"] = final.get(f"test_final/{k}")
    if with_teacher:
        res["teacher_member_test_acc"] = (
            [best.get(f"test/teacher_acc_m{i}") for i in range(members)] if members > 1 else None
        )
    member = re.compile(r"teacher_acc_m\d+$")
    for key, value in best.items():
        name = key.removeprefix("test/")
        if key.startswith("test/") and name not in known and not member.match(name):
            res[f"test_{name}"] = value
    return res


def training_recipe(cfg: DictConfig) -> dict[str, Any]:
    """How the run trained, in the terms published tables state their recipes in: epochs,
    images per step, initial lr, and the training augmentation (``crop+flip``, ``crop`` or
    ``flip`` alone, ``+strong`` with a strong view, ``+mixup``; ``none``)."""
    from kdlab.data.module import Augment

    data = cfg.data
    augment = data.get("augment", True)
    aug = Augment.parse(
        OmegaConf.to_container(augment) if OmegaConf.is_config(augment) else augment
    )
    parts = [p for p, on in (("crop", aug.crop_padding > 0), ("flip", aug.flip)) if on]
    parts = ["+".join(parts)] if parts else []
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


def finished_record(
    cfg: DictConfig, system, trainer, best: dict, final: dict, val_acc_best: float | None
) -> dict[str, Any]:
    """The measured part of a run that trained to its end (the caller adds fidelity, the
    export path and the status)."""
    ckpt = trainer.checkpoint_callback
    info = system.describe()
    for key in ("teacher", "method_params", "method_label"):
        info.pop(key)
    res = identity(cfg, system)
    res |= {
        "epochs_trained": trainer.current_epoch,
        "recipe": training_recipe(cfg),
        "val_acc_best": val_acc_best,
        "best_ckpt_monitor": ckpt.monitor,
        "init_seed": cfg.get("init_seed"),
        "student_init_lambda": (cfg.get("student_init") or {}).get("lambda"),
    }
    res |= metric_results(best, final, system.has_teacher, info.get("teacher_members", 1))
    res |= info
    if res.get("teacher_published_top1") is not None:
        from kdlab.teachers.known import compare

        res["teacher_published_warning"] = compare(
            res["teacher_published_top1"], res.get("teacher_test_acc")
        )
    res |= {"best_ckpt": ckpt.best_model_path}
    return res


def progress(system, trainer) -> dict[str, Any]:
    """How far a run that stopped early got: finished epochs and the best val accuracy."""
    res: dict[str, Any] = {}
    if trainer is not None:
        res["epochs_trained"] = trainer.current_epoch
    if system is not None and hasattr(system, "best_val_acc"):
        res["val_acc_best"] = system.best_val_acc()
    return res


def error_text(err: BaseException) -> str:
    """``Type: message`` of the error that caused ``err`` (Hydra wraps constructor errors)."""
    from kdlab.utils.errors import root_cause

    root = root_cause(err)
    return f"{type(root).__name__}: {root}"


def write_record(cfg: DictConfig, status: str, system=None, trainer=None, **fields: Any):
    """Write ``results.json`` of the run in ``cfg.paths.output_dir`` for any outcome.

    ``fields`` is what only this outcome knows (the metrics of a finished run, the reason of a
    stop, the error of a failure); identity and provenance are added here for every one.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}; one of {STATUSES}")
    out = Path(_get(cfg, "paths.output_dir") or ".")
    res = identity(cfg, system) | progress(system, trainer) | fields
    res |= {"git_commit": git_commit(), "output_dir": str(out), "status": status}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", res)
    return res


def write_failure(cfg: DictConfig, err: BaseException, system=None, trainer=None):
    """``status: failed`` plus ``error.txt`` with the whole traceback."""
    out = Path(_get(cfg, "paths.output_dir") or ".")
    out.mkdir(parents=True, exist_ok=True)
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    (out / "error.txt").write_text(tb)
    res = write_record(cfg, "failed", system, trainer, error=error_text(err))
    log.error("run failed: %s (traceback in %s)", res["error"], out / "error.txt")
    err.kdlab_recorded = True  # said once: the entry point need not repeat it
    return res


def eval_record(
    run_cfg: DictConfig | None,
    metrics: dict,
    with_teacher: bool,
    arch: str | None,
    dataset: str,
    **fields: Any,
) -> dict[str, Any]:
    """eval.json of ``python -m kdlab.eval``: the evaluated run's identity when the checkpoint
    belongs to a run, and its test metrics under the keys a run's record uses."""
    res = identity(run_cfg) if run_cfg is not None else {}
    res |= {"dataset": dataset, "student": arch}
    if not with_teacher:
        res["teacher"] = None
    res |= metric_results(metrics, None, with_teacher, 1)
    return res | fields | {"git_commit": git_commit()}


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
    )
    export_weights(
        system.net,
        path,
        model_cfg,
        **{k: res[k] for k in keep},
        git_commit=git_commit(),
        run_dir=str(cfg.paths.output_dir),
        # what the analysis commands need to read and normalise this dataset's test split
        reader=OmegaConf.to_container(cfg.data.reader, resolve=True)
        if "reader" in cfg.data
        else None,
        normalize=cfg.data.get("normalize", "dataset"),
    )
    log.info("teacher exported to %s", path)
    return path
