"""Find and read the ``results.json`` of every run under the paths a user gives the report.

Real sweeps are messy: jobs crash before writing results, get killed mid-write, or are still
running. The report must still summarise what finished, so every unusable file is *named* in a
``ReportWarning`` and skipped, and run folders without a results.json (Hydra wrote ``.hydra/``
but the job never finished) are listed as missing. Only "nothing usable at all" is an error.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
ARCHIVE = "previous"  # kdlab.runs.archive moves earlier attempts of a run folder here
# Without these a run cannot be grouped, paired by seed or ranked on val.
REQUIRED_KEYS = ("dataset", "student", "method", "seed", "val_acc_best", "test_acc_best")
SETTINGS = ("alpha", "temperature", "beta")  # numbers the report groups and labels by
# results.json keys that are measurements on a split (test_acc_best, teacher_test_acc, …);
# the rest are settings and facts of the run (seed, α, epochs, teacher_params, …).
MEASUREMENT = re.compile(r"(^|_)(test|val)_")


def is_metric(key: str) -> bool:
    return bool(MEASUREMENT.search(key))


class ReportWarning(UserWarning):
    """A run the report skipped or a choice it made for the user (shown, never silent)."""


class ReportError(ValueError):
    """The report cannot be produced at all (bad paths, no usable runs)."""


@dataclass(frozen=True)
class Run:
    """One finished run: where its results.json lies and what it holds."""

    path: Path
    data: dict[str, Any]

    @property
    def dir(self) -> Path:
        return self.path.parent

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


def _warn(msg: str, problems: list[str] | None) -> None:
    if problems is not None:
        problems.append(msg)
    warnings.warn(msg, ReportWarning, stacklevel=3)


def current(path: Path, root: Path) -> bool:
    """Not an earlier attempt: ``rerun=true`` and retries move those to ``<run>/previous/``."""
    return ARCHIVE not in path.relative_to(root).parts


def find_result_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """``(results.json files, run folders that lack one)`` under ``paths``, each sorted.

    A path may be a results.json, a single run folder, a multirun folder or a tree of sweeps.
    A run folder is recognised by the ``.hydra/`` folder Hydra writes at job start.
    """
    files: set[Path] = set()
    run_dirs: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise ReportError(f"report path does not exist: {p}")
        if p.is_file():
            if p.name != RESULTS_FILE:
                raise ReportError(
                    f"{p} is a file but not a {RESULTS_FILE}; give a run or sweep folder"
                )
            files.add(p.resolve())
            continue
        files.update(f.resolve() for f in p.rglob(RESULTS_FILE) if f.is_file() and current(f, p))
        run_dirs.update(
            h.parent.resolve() for h in p.rglob(".hydra") if h.is_dir() and current(h, p)
        )
    missing = sorted(d for d in run_dirs if not (d / RESULTS_FILE).exists())
    return sorted(files), missing


def _check(data: Any) -> str | None:
    """Why ``data`` is not a usable results.json, or None when it is."""
    if not isinstance(data, dict):
        return f"holds a {type(data).__name__}, not a JSON object"
    absent = [k for k in REQUIRED_KEYS if data.get(k) is None]
    if absent:
        return f"lacks required key(s) {absent}"
    numeric = [
        k
        for k in data
        if k in SETTINGS or k == "seed" or (is_metric(k) and not isinstance(data[k], list | dict))
    ]
    for k in numeric:
        v = data.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            return f"key {k!r} must be a number or null, got {v!r}"
    if not isinstance(data["seed"], int):
        return f"seed must be an integer, got {data['seed']!r}"
    if any(isinstance(data.get(k), float) and math.isnan(data[k]) for k in REQUIRED_KEYS):
        return "has NaN in a required metric"
    return None


def read_run(
    path: str | Path,
    problems: list[str] | None = None,
    left_out: list | None = None,
    include_debug: bool = False,
) -> Run | None:
    """Read one results.json; a warning naming the file and None when it cannot be used (or
    is a debug run, unless ``include_debug``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        _warn(f"skipping {path}: unreadable or malformed JSON ({e})", problems)
        return None
    status = data.get("status", "finished") if isinstance(data, dict) else None
    if status is not None and status != "finished":
        detail = data.get("reason") or data.get("error")
        msg = f"left out {path}: the run is {status}" + (f" ({detail})" if detail else "")
        if left_out is not None:
            left_out.append((path, data, msg))  # warned by collect_runs, which knows the rest
        else:
            _warn(msg, problems)
        return None
    why = _check(data)
    if why:
        _warn(f"skipping {path}: {why}", problems)
        return None
    if data.get("debug") and not include_debug:
        _warn(
            f"skipping {path}: a debug run (debug={data['debug']}); --include-debug reads it",
            problems,
        )
        return None
    if data.get("train_size"):
        # a low-data run is compared only with runs on the same number of training images
        data["dataset"] = f"{data['dataset']}[{data['train_size']}]"
    return Run(path=path, data=data)


POINT_KEYS = ("experiment", "teacher", "student", "method", "method_label", "seed")


def _same_point(finished: dict[str, Any], other: dict[str, Any]) -> bool:
    """Two records of one grid point and seed (the finished one has its dataset renamed for
    low-data runs, hence the comparison of the size itself)."""
    return all(finished.get(k) == other.get(k) for k in POINT_KEYS) and finished.get(
        "train_size"
    ) == other.get("train_size")


def collect_runs(
    paths: Iterable[str | Path],
    problems: list[str] | None = None,
    tags: Sequence[str] = (),
    include_debug: bool = False,
) -> list[Run]:
    """Every usable run under ``paths`` that carries all of ``tags``, oldest results.json first.

    Debug runs (results.json ``debug``) are left out unless ``include_debug``.

    Ordering by modification time makes "keep the later run" (for a seed that appears twice in
    a group) mean the run that finished last. Skipped and missing runs are warned about and,
    when ``problems`` is given, appended to it so the report can list them.
    Raises ``ReportError`` when no results.json is found or none is usable.
    """
    paths = list(paths)
    if not paths:
        raise ReportError("give at least one run or sweep folder")
    files, missing = find_result_files(paths)
    for d in missing:
        _warn(
            f"missing results: run folder {d} has no {RESULTS_FILE} (failed or unfinished job)",
            problems,
        )
    if not files:
        raise ReportError(
            f"no {RESULTS_FILE} found under {', '.join(map(str, paths))}; point the report at a "
            f"run folder or a sweep folder written by `python -m kdlab.train`"
        )
    left_out: list[tuple[Path, dict, str]] = []
    runs = [
        r for r in (read_run(f, problems, left_out, include_debug) for f in files) if r is not None
    ]
    for _, data, msg in left_out:
        twin = next((r for r in runs if _same_point(r.data, data)), None)
        if twin is not None:
            msg += f"; its seed {data.get('seed')} is taken from the finished run {twin.path}"
        _warn(msg, problems)
    if not runs:
        raise ReportError(
            f"none of the {len(files)} {RESULTS_FILE} file(s) under {', '.join(map(str, paths))} "
            f"is usable (see the warnings above)"
        )
    if tags:
        runs = [r for r in runs if set(tags) <= set(r.get("tags") or [])]
        if not runs:
            raise ReportError(
                f"no finished run under {', '.join(map(str, paths))} carries the tag(s) "
                f"{', '.join(tags)} (a run's tags come from tags=[…] on its command line)"
            )
    runs.sort(key=lambda r: (r.path.stat().st_mtime_ns, str(r.path)))
    return runs
