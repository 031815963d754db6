"""Bad input stops a run before anything trains, with one message: which value, what is
allowed, what to do. Everything here reads the composed config only (no data, no models)."""

from __future__ import annotations

import logging

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("kdlab.checks")
SHARED_HPARAMS = ("alpha", "temperature", "beta")  # top-level names methods may interpolate


def check_method(cfg: DictConfig) -> None:
    """The recorded ``method`` must name the KD loss that trains (the ``distill=`` option)."""
    if not HydraConfig.initialized():
        return
    choice = HydraConfig.get().runtime.choices.get("distill")
    if choice not in (None, "null") and choice != cfg.method:
        raise ValueError(
            f"method={cfg.method} but distill={choice}: results would be recorded under the "
            f"wrong method. Pass method={choice} (experiments set both)"
        )


def check_shared_hparams(cfg: DictConfig) -> None:
    """``alpha=``/``temperature=``/``beta=`` on a run without distillation is an error (it would
    change nothing); on a method that does not read it (e.g. an experiment's α under
    ``distill=crd``) it is ignored with a warning, and results.json records null for it."""
    distill = cfg.get("distill")
    raw = OmegaConf.to_yaml(distill, resolve=False) if distill is not None else ""
    for name in SHARED_HPARAMS:
        value = cfg.get(name)
        if value is None or f"${{{name}}}" in raw:
            continue
        if distill is None:
            raise ValueError(
                f"{name}={value} is set, but this run trains without distillation "
                f"(method={cfg.method}): {name} would change nothing. Remove {name}=, or use a "
                "distillation experiment (e.g. +experiment=r56_cnn_logit)"
            )
        log.warning(
            "%s=%s is ignored: distill=%s does not read the top-level %s (its settings are in "
            "conf/distill/%s.yaml, overridable as distill.<setting>=…)",
            name, value, cfg.method, name, cfg.method,
        )  # fmt: skip
