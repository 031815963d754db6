"""A sweep's grid as Hydra expands it: which keys vary, which jobs were planned, and the
refusal of a re-launch whose fixed settings changed.

Re-running the same ``-m`` command completes a sweep (finished jobs are skipped). Re-running it
with a changed setting that is not part of the grid (``optim.lr=0.01``) would skip every
finished job and present their old results as the new sweep's, so it is refused before Hydra
rewrites ``multirun.yaml``, naming the keys; grid values may change (more seeds, another α).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdlab.cli_args import SHORTHANDS, expand_shorthands
from kdlab.run_config import ConfigChanged, describe, differences


def _parsed(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides=[str(o) for o in overrides])


def grid_keys(overrides: list[str]) -> tuple[str, ...]:
    """Config keys (and group packages) that a sweep's overrides vary."""
    keys = []
    for o in _parsed(overrides):
        if o.is_sweep_override():
            keys.append(o.key_or_group.replace("/", "."))
    return tuple(keys)


def check_sweep_config(config: DictConfig, sweep_dir: Path) -> None:
    """Refuse a re-launch into ``sweep_dir`` whose settings outside the grid changed."""
    saved = Path(sweep_dir) / "multirun.yaml"
    if not saved.is_file() or config.get("rerun"):
        return
    old = OmegaConf.load(saved)
    old_overrides = list(OmegaConf.select(old, "hydra.overrides.task", default=[]) or [])
    new_overrides = list(config.hydra.overrides.task)
    varied = grid_keys(old_overrides) + grid_keys(new_overrides)
    if any(k.lstrip("+~").split("@")[0] in ("experiment",) for k in varied):
        return  # a grid over experiments changes every key: each job folder checks its own
    skip = tuple(k.lstrip("+~") for k in varied)
    # whole configs: differences() reads the derived labels (name, method) by value from each
    # one's own Hydra choices and ignores the hydra node itself
    diffs = differences(old, config, skip)
    if diffs:
        raise ConfigChanged(
            f"sweep folder {sweep_dir} was launched with other settings outside the grid "
            f"({describe(diffs)}); its finished jobs would be reported as this sweep's. Nothing "
            "was started or changed. Launch into a new sweep folder (drop hydra.sweep.dir=), or "
            "add rerun=true to train every job of this folder again (old outputs move to "
            "previous/)"
        )


def planned_jobs(sweep_dir: Path) -> list[list[str]] | None:
    """The override list of every job the latest launch planned (Hydra's basic sweeper), or
    None when another sweeper decides the jobs as it goes (Optuna)."""
    saved = Path(sweep_dir) / "multirun.yaml"
    if not saved.is_file():
        return None
    cfg = OmegaConf.load(saved)
    target = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="") or "")
    if not target.endswith("BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    overrides = list(OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or [])
    batches = BasicSweeper.split_arguments(_parsed(overrides), None)
    return [list(job) for batch in batches for job in batch]


def _job_key(overrides: list[str]) -> list[str]:
    """A job's overrides in one spelling: ``alpha=0.5`` (a job folder of an older launch),
    ``++distill.alpha=0.5`` and ``distill.alpha=0.5`` name the same job, and so do
    ``alpha=null`` and ``~distill.alpha`` (a method setting that is null is not set)."""
    unset = {f"distill.{k}" for k in SHORTHANDS}
    key = []
    for o in expand_shorthands([str(o) for o in overrides]):
        name, _, value = o.lstrip("+").partition("=")
        if name.lstrip("~") in unset and (name.startswith("~") or value == "null"):
            o = f"~{name.lstrip('~')}"
        key.append(o.lstrip("+"))
    return sorted(key)


def never_started(sweep_dir: Path, started: list[list[str]]) -> list[dict[str, Any]]:
    """Rows for planned jobs that have no folder (the sweep was stopped before them)."""
    planned = planned_jobs(sweep_dir)
    if planned is None:
        return []
    seen = [_job_key(o) for o in started]
    rows = []
    for overrides in planned:
        key = _job_key(overrides)
        if key in seen:
            seen.remove(key)
            continue
        rows.append(
            {
                "job": "-",
                "dir": None,
                "overrides": overrides,
                "status": "missing",
                "error": "never started (the sweep stopped before this job)",
            }
        )
    return rows
