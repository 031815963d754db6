"""OmegaConf resolvers used by the configs (registered on import of ``kdlab.train``).

``${kdlab.precision:}`` picks the precision from the hardware (bf16-mixed on GPUs that support
it, 16-mixed on older GPUs, 32-true on CPU); ``${kdlab.tag:${distill},${seed}}`` turns the
distillation method's settings and the seed into the short tag used in run names and sweep
folder names (``a0.5_T4_s0``); ``${kdlab.strong_view:${distill}}`` is true when a loss of
the distillation config reads a strong view of each training image (``needs_strong_view``).
"""

from __future__ import annotations

import hashlib
from pathlib import PurePath

from omegaconf import OmegaConf


def auto_precision() -> str:
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def run_tag(distill=None, seed=None) -> str:
    """``a0.5_T4_s0``: the distillation method's settings (see ``method_params.tag``) + seed."""
    from kdlab.utils.method_params import config_tree, names_loss, tag

    return tag(config_tree(distill) if names_loss(distill) else None, seed)


def strong_view(distill=None) -> bool:
    """Whether any loss in the distillation config declares ``needs_strong_view`` (the data
    option ``data.strong_view`` follows the method by default; an override still wins)."""
    from kdlab.utils.method_params import config_tree, names_loss

    def needs(tree) -> bool:
        cls, args = tree
        nested = [v for v in args.values() if isinstance(v, tuple)]
        nested += [
            t
            for v in args.values()
            if isinstance(v, dict)
            for t in v.values()
            if isinstance(t, tuple)
        ]
        return bool(getattr(cls, "needs_strong_view", False)) or any(map(needs, nested))

    return names_loss(distill) and needs(config_tree(distill))


def _choice(group: str, default: str, root) -> str:
    """The option chosen for config ``group`` (Hydra's runtime choices), else ``default``:
    from the config's own ``hydra`` node while Hydra launches (sweep folder names), from
    Hydra's runtime config inside the run."""
    from hydra.core.hydra_config import HydraConfig

    choices = None
    if root is not None and "hydra" in root:
        choices = OmegaConf.select(root, "hydra.runtime.choices")
    elif HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    choice = choices.get(group) if choices is not None else None
    return default if choice in (None, "null") else str(choice)


def method_choice(default: str = "baseline", *, _root_=None) -> str:
    """The run's method: the ``distill=`` option that trains it, else ``default`` (a run
    without distillation)."""
    return _choice("distill", default, _root_)


def experiment_choice(default: str = "custom", *, _root_=None) -> str:
    """The run's experiment name: the ``+experiment=`` file, else ``default``."""
    return _choice("experiment", default, _root_)


def run_name(name: str, method: str) -> str:
    """The one name of a run's folders: the experiment, with the method appended when the name
    does not already say it (``resnet56_resnet20`` + dkd → ``resnet56_resnet20_dkd``;
    ``r56_cnn_logit`` + logit and every teacher or baseline stay as they are)."""
    if method in (None, "baseline", "teacher") or f"_{method}_" in f"_{name}_":
        return str(name)
    return f"{name}_{method}"


def wandb_group(name: str, mode, sweep_dir: str, output_dir: str) -> str:
    """One W&B group per ``-m`` call (``<name>_<sweep timestamp>``), a group of its own per run.

    Every job of a sweep shares the sweep folder, whose name is the sweep's start time, so the
    group is identical for all of them; a single run uses its own folder name instead.
    """
    folder = sweep_dir if "MULTIRUN" in str(mode) else output_dir
    return f"{name}_{PurePath(str(folder)).name}"


def wandb_id(output_dir: str) -> str:
    """A stable W&B run id from the output folder: a resumed run continues the same W&B run."""
    return hashlib.sha1(str(output_dir).encode()).hexdigest()[:16]


def job_type(method: str) -> str:
    """W&B job type: teacher and baseline as they are, every KD method (logit, feature…) → distill."""
    return method if method in ("teacher", "baseline") else "distill"


def wandb_tags(name: str, method: str, dataset: str, tags=None):
    """W&B tags: experiment, method, dataset and job type, then the run's own ``tags=[…]``."""
    from kdlab.labels import tags_of

    base = [str(name), str(method), str(dataset), job_type(str(method))]
    return OmegaConf.create(list(dict.fromkeys(base + tags_of({"tags": tags}))))


def is_terminal() -> bool:
    """``${kdlab.tty:}``: standard output is a terminal (progress bars), not a log file."""
    from kdlab.utils.progress import is_terminal as tty

    return tty()


def default_workers(most: int = 4) -> int:
    """``${kdlab.workers:4}``: DataLoader workers that fit the machine — at most ``most``, and
    one core left for the training process (PyTorch warns about more workers than cores)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(int(most), (cores or 1) - 1))


def register() -> None:
    OmegaConf.register_new_resolver("kdlab.precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("kdlab.tag", run_tag, replace=True)
    OmegaConf.register_new_resolver("kdlab.method", method_choice, replace=True)
    OmegaConf.register_new_resolver("kdlab.experiment", experiment_choice, replace=True)
    OmegaConf.register_new_resolver("kdlab.run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("kdlab.strong_view", strong_view, replace=True)
    OmegaConf.register_new_resolver("kdlab.wandb_group", wandb_group, replace=True)
    OmegaConf.register_new_resolver("kdlab.wandb_id", wandb_id, replace=True)
    OmegaConf.register_new_resolver("kdlab.job_type", job_type, replace=True)
    OmegaConf.register_new_resolver("kdlab.wandb_tags", wandb_tags, replace=True)
    OmegaConf.register_new_resolver("kdlab.tty", is_terminal, replace=True)
    OmegaConf.register_new_resolver("kdlab.workers", default_workers, replace=True)
