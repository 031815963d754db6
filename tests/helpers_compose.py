"""The training config as a launch composes it, without running: Hydra's runtime config is set
too, so the labels derived from Hydra's choices (name, method, run_name) resolve."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from kdlab import CONF_DIR
from kdlab.utils.resolvers import register


def compose_train(tmp: Path, *overrides: str) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, its paths under ``tmp``."""
    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=[f"paths.root={tmp}", f"paths.log_dir={tmp / 'logs'}", *overrides],
        )
    HydraConfig.instance().set_config(cfg)
    return cfg
