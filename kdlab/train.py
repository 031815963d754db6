"""``python -m kdlab.train``: seed → build from config → fit → test twice → results.json.

Everything is built with ``hydra.utils.instantiate`` from ``conf/``; this file only wires the
pieces together and records what happened. A run re-launched in the same output folder resumes
from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from kdlab.models import count_parameters
from kdlab.utils.provenance import git_commit, write_json
from kdlab.utils.resolvers import register

register()
log = logging.getLogger("kdlab.train")
# The frozen teacher is in eval mode on purpose (kdlab.distill.teacher); Lightning's generic
# "modules in eval mode at the start of training" warning would only alarm users.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")


def _optional(cfg: DictConfig | None) -> Any:
    """Instantiate a config node that may be absent or target-less (e.g. scheduler=none)."""
    if cfg is None or "_target_" not in cfg:
        return None
    return instantiate(cfg)


def build_system(cfg: DictConfig, net) -> L.LightningModule:
    """Classifier for CE training, Distiller when a KD loss (``distill``) is configured."""
    from kdlab.distill.base import CrossEntropy
    from kdlab.distill.init import interpolate_init, lr_scale, seeded_build, validate_lambda
    from kdlab.systems import Classifier, Distiller

    lam = (cfg.get("student_init") or {}).get("lambda")  # init proximity (null = off)
    lam = None if lam is None else validate_lambda(lam)
    common = dict(
        optimizer=instantiate(cfg.optim),
        scheduler=_optional(cfg.get("scheduler")),
        grad_clip=cfg.grad_clip,
        lr_scale=cfg.get("lr_scale", 1.0) * lr_scale(lam),
    )
    if cfg.get("distill") is None:
        if lam is not None:
            raise ValueError("student_init.lambda needs a teacher: use a distillation experiment")
        return Classifier(net, criterion=CrossEntropy(cfg.label_smoothing), **common)
    if cfg.get("teacher") is None:
        raise ValueError("distill is set but no teacher: add teacher=<arch> (e.g. teacher=r50)")
    criterion = instantiate(cfg.distill)  # first: bad α/T/β fail before a teacher is loaded
    # the teacher's throw-away random init must not shift the data-order stream
    teacher = seeded_build(lambda: instantiate(cfg.teacher), 0)
    if lam is not None:
        if len(teacher.members) != 1:
            raise ValueError("student_init.lambda needs a single teacher, not an ensemble")
        interpolate_init(net, teacher.members[0], lam)
    cka = OmegaConf.to_container(cfg.cka, resolve=True) if cfg.get("cka") else {}  # plain lists
    return Distiller(
        net, teacher, criterion, clip_scope=cfg.clip_scope, cka=bool(cka.get("enabled")),
        cka_stages=cka.get("stages"), cka_reduce=cka.get("reduce", "gap"), **common,
    )  # fmt: skip


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
        # with early stopping the best checkpoint is chosen on val/loss (best_ckpt_monitor)
        "val_acc_best": ckpt.best_model_score if ckpt.monitor == "val/acc" else None,
        "best_ckpt_monitor": ckpt.monitor,
        "init_seed": cfg.get("init_seed"),
        "student_init_lambda": (cfg.get("student_init") or {}).get("lambda"),
    }
    names = ["acc", "nll", "ece"] + (["agreement", "kl"] if teacher is not None else [])
    for name in names:
        res[f"test_{name}_best" if name == "acc" else f"test_{name}"] = best.get(f"test/{name}")
    for name in names:
        res[f"test_{name}_final"] = final.get(f"test_final/{name}")
    if teacher is not None:
        res |= {
            "teacher_test_acc": best.get("test/teacher_acc"),
            "teacher_member_test_acc": [
                best.get(f"test/teacher_acc_m{i}") for i in range(len(teacher.members))
            ]
            if len(teacher.members) > 1
            else None,
            "teacher_ckpt": [s["path"] for s in teacher.sources],
            "teacher_sha256": [s["sha256"] for s in teacher.sources],
            "teacher_params": sum(p.numel() for p in teacher.members[0].parameters()),
            "grad_clip_scope": cfg.clip_scope,
        }
        res |= {f"test_{k[5:]}": v for k, v in best.items() if k.startswith("test/cka_")}
    res |= {
        "grad_clip": cfg.grad_clip,
        "student_params": count_parameters(system.net),
        "compression_ratio": res["teacher_params"] / count_parameters(system.net)
        if teacher is not None
        else None,
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
    from kdlab.distill.init import seeded_build

    # init_seed fixes the student's initial weights apart from the data-order seed (paired runs)
    init_seed = cfg.seed if cfg.get("init_seed") is None else cfg.init_seed
    net = seeded_build(lambda: instantiate(cfg.model), init_seed)
    system = build_system(cfg, net)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    from kdlab.distill.fast import apply_fast

    apply_fast(  # fast steps (issue 7): folded teacher, channels_last, compile, vmap ensembles
        system, trainer.strategy.root_device.type, fold_teacher_bn=cfg.get("fold_teacher_bn", True),
        channels_last=cfg.get("channels_last", "auto"), compile=cfg.get("compile", False),
        ensemble_vmap=cfg.get("ensemble_vmap", True),
    )  # fmt: skip
    if cfg.get("teacher_cache"):  # teacher logits once, for un-augmented training only
        from kdlab.distill.logit_cache import attach_logit_cache

        attach_logit_cache(system, datamodule, trainer.strategy.root_device)
    if cfg.get("view_cache"):  # teacher logits of all 162 crop/flip views, once per teacher
        from kdlab.distill.view_cache import attach_view_cache

        attach_view_cache(system, datamodule, trainer.strategy.root_device)

    last = out / "checkpoints" / "last.ckpt"
    resume = str(last) if last.is_file() else None
    if resume:
        log.info("resuming from %s", resume)
    trainer.fit(system, datamodule=datamodule, ckpt_path=resume)
    val_acc_max = trainer.callback_metrics.get("val/acc_best")  # tests reset callback_metrics

    # Final weights first (they are in memory), then the best-val checkpoint.
    system.test_prefix = "test_final"
    final = trainer.test(system, datamodule=datamodule, verbose=False)[0]
    system.test_prefix = "test"
    best_path = trainer.checkpoint_callback.best_model_path or None
    best = trainer.test(system, datamodule=datamodule, ckpt_path=best_path, verbose=False)[0]

    res = collect_results(cfg, system, trainer, best, final)
    if res["val_acc_best"] is None:  # checkpoint chosen on val/loss: report the run's best val acc
        res["val_acc_best"] = val_acc_max
    if system.has_teacher and (cfg.get("fidelity") or {}).get("train_set", True):
        from kdlab.metrics.fidelity import evaluate_fidelity

        cache = system.teacher_cache  # same weights as test_agreement: the best-val ones
        limit = cfg.trainer.get("limit_train_batches")  # an int = a smoke run: stay as short
        fid = evaluate_fidelity(
            system.net, system.teacher, datamodule.loader("train"),
            trainer.strategy.root_device, cache.logits if cache is not None else None,
            max_batches=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
        )  # fmt: skip
        res |= {"train_agreement": fid["agreement"], "train_kl": fid["kl"]}
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
        from kdlab.sweep import record_failure

        return record_failure(cfg, err, hc.runtime.output_dir)
    finally:
        import sys

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
