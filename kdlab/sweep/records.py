"""What a failed job leaves in its folder, and the keys that identify a job in the summary.

A Hydra multirun aborts at the first job that raises, which hides every later job. ``main()`` in
``kdlab.train`` therefore returns a failed job's record in multirun mode instead of raising;
the record itself (``results.json`` with ``status: failed`` and ``error.txt``) is written by
``kdlab.results`` like every outcome. :func:`record_failure` writes one for a job folder named
explicitly (a config that never reached ``kdlab.train``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from kdlab.results import method_identity, write_failure

# The keys of results.json that identify a job (copied into the summary).
ID_KEYS = (
    "experiment",
    "method",
    "alpha",
    "temperature",
    "beta",
    "method_params",
    "method_label",
    "seed",
    "tags",
)

__all__ = ["ID_KEYS", "method_identity", "record_failure"]


def record_failure(cfg: DictConfig, err: BaseException, out_dir: str | Path) -> dict[str, Any]:
    """Write ``results.json`` (``status: failed``) and ``error.txt`` for a job that raised.

    The record carries the job's identity (experiment, method settings, seed) so the report and
    the summary can say *which* point of the grid is missing without parsing folder names.
    """
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths = dict(cfg.get("paths") or {}) | {"output_dir": str(out_dir)}
    return write_failure(cfg, err)
