"""What a failed job leaves in its folder, and a job's identity read from its config.

A Hydra multirun aborts at the first job that raises, which hides every later job. ``main()`` in
``kdlab.train`` therefore catches a job's exception in multirun mode and calls
:func:`record_failure`, so the job's folder still holds a ``results.json`` (``status: failed``)
and an ``error.txt`` with the traceback.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("kdlab.sweep")

# The keys of results.json that identify a job (copied into failure records and the summary).
ID_KEYS = (
    "experiment", "method", "alpha", "temperature", "beta", "method_params", "method_label", "seed",
    "tags",
)  # fmt: skip


def method_identity(cfg: DictConfig) -> dict[str, Any]:
    """The method's settings from the config (a failed job has no built loss to ask)."""
    from kdlab.utils.method_params import config_tree, flat_hparams, label, params

    distill = cfg.get("distill")
    tree = config_tree(distill) if distill is not None else None
    method_params = params(tree)
    return {**flat_hparams(method_params), "method_params": method_params,
            "method_label": label(tree) if tree else None}  # fmt: skip


def record_failure(cfg: DictConfig, err: BaseException, out_dir: str | Path) -> dict[str, Any]:
    """Write ``results.json`` (``status: failed``) and ``error.txt`` for a job that raised.

    The record carries the job's identity (experiment, method settings, seed) so the report and
    the summary can say *which* point of the grid is missing without parsing folder names.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = err
    while root.__cause__ is not None:  # Hydra wraps constructor errors: report the real one
        root = root.__cause__
    res: dict[str, Any] = {"status": "failed", "error": f"{type(root).__name__}: {root}"}
    for key in ("experiment", "method", "seed"):
        res[key] = cfg.get("name" if key == "experiment" else key)
    res["tags"] = list(cfg.get("tags") or [])
    try:
        res |= method_identity(cfg)
    except Exception:  # an invalid method config: fall back to the top-level names
        res |= {k: cfg.get(k) for k in ("alpha", "temperature", "beta")}
    try:
        res["dataset"] = cfg.data.name
    except Exception:  # a config that does not even resolve is exactly what we are recording
        res["dataset"] = None
    res["output_dir"] = str(out)
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    (out / "error.txt").write_text(tb)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    log.error("job failed: %s (traceback in %s)", res["error"], out / "error.txt")
    return res
