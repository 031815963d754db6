"""The run's resolved config as a rich tree: printed when a job starts, kept as config_tree.log.

Every default is visible in ``conf/``, but what a run *used* is the composition of the defaults,
the experiment, the presets and the command line; seeing it resolved at the start catches a
wrong override before hours of training. :class:`ConfigTree` is a Hydra callback
(``conf/hydra/default.yaml``): at each job's start it renders the job's config (without Hydra's
own node) and prints it unless ``extras.print_config=false``; the run writes it to
``<run>/config_tree.log`` once it owns its folder (:func:`save_tree`: a refused launch must leave
the folder as it was). A value that cannot be resolved is shown as written, with the reason.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# The groups a reader looks for first; the rest follow in config order.
FIRST = (
    "name",
    "method",
    "seed",
    "tags",
    "data",
    "model",
    "teacher",
    "distill",
    "optim",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "paths",
)


def _yaml(node: Any) -> str:
    if not OmegaConf.is_config(node):
        return str(node)
    try:
        return OmegaConf.to_yaml(node, resolve=True)
    except Exception as err:  # e.g. an env var that is not set: show the interpolation itself
        return OmegaConf.to_yaml(node, resolve=False) + f"# not resolved: {err}\n"


def build_tree(cfg: DictConfig):
    """A ``rich.tree.Tree``: one branch per top-level key, its resolved YAML beneath."""
    from rich.syntax import Syntax
    from rich.tree import Tree

    keys = [k for k in FIRST if k in cfg] + [k for k in cfg if k not in FIRST and k != "hydra"]
    tree = Tree("config", guide_style="dim")
    for key in keys:
        try:
            value = cfg[key]
        except Exception as err:  # a leaf interpolation that does not resolve
            value = f"{cfg._get_node(key)._value()}  # not resolved: {err}"
        if OmegaConf.is_config(value):
            tree.add(str(key)).add(Syntax(_yaml(value).rstrip(), "yaml", theme="ansi_dark"))
        else:
            tree.add(f"{key}: {value}")
    return tree


def render(cfg: DictConfig) -> str:
    """The tree as plain text (no terminal colours), as config_tree.log holds it."""
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=120, color_system=None, force_terminal=False).print(build_tree(cfg))
    return buf.getvalue()


def save_tree(cfg: DictConfig, out: str | Path) -> Path:
    """``<out>/config_tree.log``: the job's config (``cfg`` without Hydra's node) as a tree."""
    path = Path(out) / "config_tree.log"
    path.write_text(render(cfg))
    return path


class ConfigTree(Callback):
    """Hydra callback: print the tree at every job start (``extras.print_config``)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        job = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        if (job.get("extras") or {}).get("print_config", True):
            from kdlab.utils.console import table_console

            table_console().print(build_tree(job))
