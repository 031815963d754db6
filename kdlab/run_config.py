"""A run folder's config is fixed: written once, and a launch with another config is refused.

Hydra would rewrite ``<run>/.hydra/`` at every launch, before kdlab sees the folder, so a
relaunch with ``seed=1`` into a finished seed-0 folder (or a launch that is then refused because
the folder is locked) would leave a config that no longer describes the weights and results
beside it. kdlab turns Hydra's writing off (``hydra.output_subdir: null``) and writes the same
three files itself, once, after it has checked the folder: :func:`write_hydra_files`.

Keys that cannot change a result (where logs go, how progress is shown, whether a finished run
is re-run) are ignored by the comparison; every other difference refuses the launch with the
differing keys and the two ways out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

HYDRA_DIR = ".hydra"
LAUNCHED = ".kdlab_jobs"  # <sweep>/.kdlab_jobs/<job>.json: the latest launch of each job

# Dotted prefixes that cannot change what a run computes.
IGNORED = (
    "logger",
    "paths",
    "hydra",
    "run_name",  # names folders only
    "rerun",
    "resume",
    "export_teacher",
    "tags",
    "extras",
    "site",
    "optimized_metric",
    "trainer.enable_progress_bar",
    "trainer.default_root_dir",
    "callbacks.progress_bar",
    "callbacks.epoch_log",
    "callbacks.model_summary",
    "callbacks.slurm_requeue",
    "data.root",
    "data.download",
    "data.verify",
    # assembled from the keys above by interpolation: its shape is kdlab's, not the run's
    "system",
)

# Settings kdlab added since a folder may have been made, each with the value that does what the
# older kdlab did (every run was CIFAR at 32 px then): an old folder reads as unchanged.
ADDED = {
    "data.reader._target_": ("kdlab.data.readers.cifar.CIFARReader",),
    "data.reader.dataset": ("${data.name}",),
    "data.image_size": (32,),
    "model.image_size": ("${data.image_size}", 32),
    "teacher.model.image_size": ("${data.image_size}", 32),
    # the memory-format choice moved from the system into a callback of its own
    "callbacks.fast_steps._target_": ("kdlab.systems.fast.FastSteps",),
    "callbacks.fast_steps.channels_last": ("${channels_last}",),
    "callbacks.fast_steps.compile": ("${compile}",),
}
# Labels derived from Hydra's choices (the distill= option, the experiment file): compared, and
# saved, by their value, since the interpolation only resolves inside the launch.
DERIVED = ("name", "method")
# Top-level keys that older configs had for the method's settings, which distill.* read by
# interpolation (``alpha: ${alpha}``); they live under distill.* alone now.
MOVED_SETTINGS = ("alpha", "temperature", "beta")
# Settings whose form changed: old form → today's form.
MOVED_TARGETS = {"kdlab.data.cifar.CIFARDataModule": "kdlab.data.module.ImageDataModule"}


class ConfigChanged(ValueError):
    """A launch into a folder (or a sweep) whose recorded config differs from this one."""


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def _ignored(key: str, extra: tuple[str, ...] = ()) -> bool:
    return any(key == p or key.startswith(p + ".") for p in IGNORED + extra)


def differences(old: DictConfig | dict, new: DictConfig | dict, skip: tuple[str, ...] = ()):
    """``[(key, old value, new value)]`` for every key that may change a result.

    Interpolations are compared as written (``${seed}``), not resolved: a saved config holds
    Hydra's own resolvers, which only resolve inside that launch. A key the old config lacks
    and the new one leaves null is a setting added to kdlab since then, still off: no change.
    """
    old, new = (_with_derived_values(c) for c in (old, new))
    a, b = _upgrade(_flat(old)), _upgrade(_flat(new))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if _ignored(key, skip):
            continue
        if key not in a and (b.get(key) is None or b.get(key) in ADDED.get(key, ())):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append((key, a.get(key, "<absent>"), b.get(key, "<absent>")))
    return diffs


def _with_derived_values(cfg: DictConfig | dict) -> dict:
    """``cfg`` as a plain tree, interpolations as written except the derived labels' values."""
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    tree = OmegaConf.to_container(cfg, resolve=False)
    for key in DERIVED:
        if key in cfg:
            try:
                tree[key] = cfg[key]
            except OmegaConfBaseException:  # not resolvable here (no kdlab resolvers loaded)
                pass
    return tree


def _upgrade(flat: dict[str, Any]) -> dict[str, Any]:
    """An older config in today's form: ``data.augment: true`` is crop 4 + flip, ``false`` none;
    moved class paths are their new names; a top-level ``alpha`` is ``distill.alpha``."""
    out = dict(flat)
    augment = out.pop("data.augment", None)
    if isinstance(augment, bool):
        out["data.augment.crop_padding"] = 4 if augment else 0
        out["data.augment.flip"] = augment
    elif augment is not None:
        out["data.augment"] = augment
    for key, value in out.items():
        if key.endswith("_target_") and value in MOVED_TARGETS:
            out[key] = MOVED_TARGETS[value]
    has_distill = any(key.startswith("distill.") for key in out)
    for name in MOVED_SETTINGS:
        if name not in out:
            continue
        value = out.pop(name)
        for key in out:
            if out[key] == f"${{{name}}}":
                out[key] = value
        if value is not None and has_distill:  # set where the method did not read it
            out.setdefault(f"distill.{name}", value)
    return out


def describe(diffs, limit: int = 8) -> str:
    shown = [f"{k}: {o!r} → {n!r}" for k, o, n in diffs[:limit]]
    more = f" (and {len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(shown) + more


def saved_config(out: Path) -> DictConfig | None:
    path = Path(out) / HYDRA_DIR / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def check_folder_config(cfg: DictConfig, out: Path) -> None:
    """Refuse a launch into ``out`` whose config differs from the one the folder records."""
    old = saved_config(out)
    if old is None:
        return
    diffs = differences(old, cfg)
    if diffs:
        raise ConfigChanged(
            f"run folder {out} was launched with another config ({describe(diffs)}); its "
            "checkpoints and results belong to that config, so nothing was started or changed. "
            "Either pass rerun=true to train this config in that folder (its old outputs move "
            "to previous/), or launch into a new folder (drop hydra.run.dir= / "
            "hydra.sweep.dir=, or give another one)"
        )


def write_hydra_files(cfg: DictConfig, out: Path) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` as Hydra writes them, unless they exist."""
    from hydra.core.hydra_config import HydraConfig

    folder = Path(out) / HYDRA_DIR
    if (folder / "config.yaml").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        OmegaConf.save(OmegaConf.create({"hydra": hc}), folder / "hydra.yaml")
        OmegaConf.save(OmegaConf.create(list(hc.overrides.task)), folder / "overrides.yaml")
    saved = cfg.copy()
    for key in DERIVED:  # by value: outside this launch the interpolation has no choices
        if key in saved:
            saved[key] = cfg[key]
    OmegaConf.save(saved, folder / "config.yaml")  # last: its presence means "all written"


def _note_path(out: Path) -> Path:
    return Path(out).parent / LAUNCHED / f"{Path(out).name}.json"


def mark_launched(out: Path) -> None:
    """Note that this launch of a sweep ran the job in ``out`` (time, SLURM task), beside the
    job folders: the summary tells the jobs of the latest launch from older ones by it and
    asks SLURM about the task that runs it now. The job folder itself stays untouched, so a
    finished job that is skipped changes no file."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from kdlab.slurm.cluster import task_id

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    note = _note_path(out)
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text(json.dumps({"time": time.time(), "slurm_task": task_id()}) + "\n")


def read_launched(out: Path) -> dict[str, Any]:
    try:
        return json.loads(_note_path(out).read_text())
    except (OSError, ValueError):
        return {}
