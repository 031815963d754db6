"""Bad input stops a run before anything trains, with one message: which value, what is
allowed, what to do. Everything here reads the composed config only (no data, no models)."""

from __future__ import annotations

import logging

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from kdlab.cli_args import SHORTHANDS
from kdlab.labels import is_debug, tags_of
from kdlab.search import results_key
from kdlab.utils.method_params import arguments, names_loss, unread_keys

log = logging.getLogger("kdlab.checks")


def check_method(cfg: DictConfig) -> None:
    """The recorded ``method`` must name the KD loss that trains (the ``distill=`` option)."""
    if not HydraConfig.initialized():
        return
    choice = HydraConfig.get().runtime.choices.get("distill")
    if choice not in (None, "null") and choice != cfg.method:
        raise ValueError(
            f"method={cfg.method} but distill={choice}: results would be recorded under the "
            f"wrong method. Drop method= (the method is the distill= option) or pass "
            f"method={choice}"
        )


def check_method_settings(cfg: DictConfig) -> list[str]:
    """The method's settings under ``distill.*`` against what its loss takes; returns the keys
    the run drops before building it.

    ``alpha``/``temperature``/``beta`` on a run without distillation are an error (they would
    change nothing); on a method that does not take them (an experiment's α under
    ``distill=crd``, or ``alpha=`` on the command line) they are dropped with a warning, and
    results.json records null for them. Any other key the loss does not take is an error that
    lists the ones it does."""
    distill = cfg.get("distill")
    if distill is None:
        return []
    if not names_loss(distill):  # no distill= option: only the command line made this node
        set_here = ", ".join(f"{k}={v}" for k, v in distill.items())
        raise ValueError(
            f"{set_here} is set, but this run trains without distillation "
            f"(method={cfg.method}): it would change nothing. Remove it, or use a "
            "distillation experiment (e.g. +experiment=r56_cnn_logit)"
        )
    unread = unread_keys(distill)
    target = str(distill["_target_"])
    for key in unread:
        if key not in SHORTHANDS:
            raise ValueError(
                f"distill.{key} is not a setting of distill={cfg.method} ({target}); its "
                f"settings are {', '.join(arguments(target))} (conf/distill/{cfg.method}.yaml)"
            )
        if distill[key] is not None:
            log.warning(
                "distill.%s=%s is ignored: distill=%s has no setting %s (its settings are in "
                "conf/distill/%s.yaml, overridable as distill.<setting>=…)",
                key,
                distill[key],
                cfg.method,
                key,
                cfg.method,
            )
    return unread


def _integer(name: str, value: object, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is not an integer: {hint}")
    return value


def check_run_settings(cfg: DictConfig) -> None:
    """Seeds, epochs and the Trainer options kdlab owns."""
    hint = "seeds are integers >= 0 (0 is a real seed); pass e.g. seed=0 or -m seed=0,1,2"
    for name in ("seed", "init_seed"):
        value = cfg.get(name)
        if value is None and name == "init_seed":
            continue
        if _integer(name, value, hint) < 0:
            raise ValueError(f"{name}={value} is negative: {hint}")
    epochs = cfg.trainer.get("max_epochs")
    hint = "a run trains for at least one epoch; pass e.g. trainer.max_epochs=1 for a smoke run"
    if _integer("trainer.max_epochs", epochs, hint) < 1:
        raise ValueError(f"trainer.max_epochs={epochs} is < 1: {hint}")
    for name in ("gradient_clip_val", "gradient_clip_algorithm"):
        if cfg.trainer.get(name) is not None:
            raise ValueError(
                f"trainer.{name}={cfg.trainer.get(name)} is not used by kdlab, which clips "
                "gradients itself (student and the loss's own layers together, and logs the norm "
                "before clipping): pass grad_clip=<max norm> (null = off) instead"
            )
    lr = (cfg.get("optim") or {}).get("lr")
    if isinstance(lr, bool) or (lr is not None and not isinstance(lr, int | float)):
        raise ValueError(f"optim.lr={lr!r} is not a number: pass e.g. optim.lr=0.05")
    if lr is not None and lr < 0:  # 0 is allowed: a frozen-weights control run
        raise ValueError(
            f"optim.lr={lr} is negative: pass a learning rate >= 0, e.g. optim.lr=0.05"
        )
    if cfg.get("resume", "auto") not in ("auto", "previous", "never"):
        raise ValueError(
            f"resume={cfg.get('resume')!r} is not allowed: auto (continue from "
            "checkpoints/last.ckpt when present), previous (from the epoch before) or never"
        )
    tags_of(cfg)  # tags=[…]: strings a W&B tag can hold
    metric = cfg.get("optimized_metric")
    if metric and results_key(str(metric)).startswith("test"):
        raise ValueError(
            f"optimized_metric={metric!r} would select on the test set: an Optuna search "
            "optimises a validation metric (optimized_metric=val/acc_best)"
        )
    if cfg.get("export_teacher") not in (True, False, "overwrite"):
        raise ValueError(
            f"export_teacher={cfg.get('export_teacher')!r} is not allowed: true (export, never "
            "replacing another run's teacher), false, or overwrite (replace it)"
        )


def check_teacher_export(cfg: DictConfig, arch: str) -> None:
    """A teacher export never replaces another run's file in the store silently (a debug run
    exports nothing, so it has nothing to check)."""
    if not cfg.get("export_teacher") or cfg.export_teacher == "overwrite" or is_debug(cfg):
        return
    from kdlab.models.export import read_checkpoint
    from kdlab.teachers.store import store_path

    path = store_path(cfg.paths.teachers, cfg.data.name, arch, cfg.seed)
    if not path.is_file():
        return
    try:
        owner = read_checkpoint(path).get("run_dir")
    except ValueError:
        owner = None
    if owner is not None and str(owner) == str(cfg.paths.output_dir):
        return  # this run's own earlier export (it is being resumed or re-run)
    raise ValueError(
        f"the teacher store already holds {path} (exported by {owner or 'another run'}); this "
        "run would replace it. Pass export_teacher=overwrite to replace it, or another seed= "
        "or paths.teachers= to keep both"
    )
