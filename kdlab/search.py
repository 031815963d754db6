"""Hyper-parameter search: what a job returns to Hydra's Optuna sweeper.

``hparams_search=NAME`` (``conf/hparams_search/``) makes the run a multirun driven by
hydra-optuna-sweeper and sets ``optimized_metric``; every trial is an ordinary job (its own
folder, results.json, checkpoints), and the sweeper asks each job for one number to maximise.
That number is the trial's best validation accuracy, ``val/acc_best`` → results.json
``val_acc_best``: a search that read test accuracy would select on the test set and report an
optimistic number, so test metrics are refused here.

A trial that failed, or that ended without a validation accuracy, returns NaN, which Optuna
records as a failed trial (the sweep goes on, and that configuration is never "best").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any


def results_key(metric: str) -> str:
    """``val/acc_best`` → ``val_acc_best`` (the results.json name of a logged metric)."""
    return metric.replace("/", "_")


def search_value(res: Mapping[str, Any], metric: str | None) -> Any:
    """``res`` unchanged when no metric is optimised, else the metric's value as a float."""
    if not metric:
        return res
    key = results_key(metric)
    if key.startswith("test"):
        raise ValueError(
            f"optimized_metric={metric!r} would select on the test set; optimise a validation "
            "metric, e.g. optimized_metric=val/acc_best"
        )
    value = res.get(key) if res.get("status", "finished") == "finished" else None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return float("nan")
    return float(value)


def returns_optimized_metric(task: Callable) -> Callable:
    """Decorate a Hydra task: it returns ``search_value(result, cfg.optimized_metric)``."""

    @functools.wraps(task)
    def wrapped(cfg) -> Any:
        return search_value(task(cfg), cfg.get("optimized_metric"))

    return wrapped
