"""The best trial of a hyper-parameter search, named in its sweep summary.

A sweep launched with ``hparams_search=NAME`` keeps ``optimized_metric`` and the sweeper's
``params`` in ``<sweep dir>/multirun.yaml`` (``SweepSummary`` writes it at the start where the
sweeper does not). The best trial is the
finished job with the highest (``direction: maximize``) or lowest value of that metric in its
results.json; its settings are the searched parameters as its overrides gave them. Read from the
folders, like the rest of the summary, so ``python -m kdlab.sweep DIR`` names it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kdlab.search import results_key


def search_settings(sweep_dir: str | Path) -> dict[str, Any] | None:
    """``{"metric", "direction", "params"}`` of a search sweep, None for any other sweep."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
    except Exception:  # an unreadable file: summarise the sweep without a best trial
        return None
    metric = OmegaConf.select(cfg, "optimized_metric", default=None)
    if not metric:
        return None
    sweeper = OmegaConf.select(cfg, "hydra.sweeper", default=None) or {}
    direction = str(sweeper.get("direction", "maximize"))
    params = list((sweeper.get("params") or {}).keys())
    return {"metric": str(metric), "direction": direction, "params": params}


def best_trial(jobs: list[dict[str, Any]], search: dict[str, Any]) -> dict[str, Any] | None:
    """The finished job with the best value of the searched metric (None when none has one)."""
    key = results_key(search["metric"])
    scored = [j for j in jobs if j["status"] == "finished" and isinstance(j.get(key), int | float)]
    if not scored:
        return None
    pick = min if search["direction"].startswith("min") else max
    best = pick(scored, key=lambda j: j[key])
    given = dict(o.split("=", 1) for o in best["overrides"] if "=" in o)
    settings = {p: given.get(p) for p in search["params"]}
    return {
        "job": best["job"],
        "dir": best["dir"],
        "metric": search["metric"],
        "value": best[key],
        "direction": search["direction"],
        "settings": settings,
        "method_label": best.get("method_label"),
        "trials": len(jobs),
        "scored": len(scored),
    }
