"""Grouping runs and the statistics a paper needs: mean ± sample std, paired Δ, best-on-val.

Every comparison with a baseline is *paired by seed* (same seed → same init and data order),
which removes the seed-to-seed variance both runs share; seeds present on only one side are
reported and left out of the test rather than mixed into it. The best configuration is picked
on validation accuracy only, so the test numbers stay an unbiased estimate (the capacity-gap study).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from kdlab.report.collect import ReportWarning, Run, is_metric

GROUP_FIELDS = ("dataset", "teacher", "student", "method", "params")
FLAT_PARAMS = ("alpha", "temperature", "beta")  # results written before method_params existed
DELTA_METRIC = "test_acc_best"  # the protocol's headline number (test acc at best val)
NO_TEACHER_METHODS = ("teacher", "baseline")

GroupKey = tuple


def _norm(v):
    """Make 0.3, 0.30000000000000004 and 3 vs 3.0 the same group-key value (at any depth)."""
    if isinstance(v, dict):
        return {str(k): _norm(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_norm(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    return round(float(v), 6)


def run_params(run: Run) -> dict:
    """The run's method settings: ``method_params``, or the flat α/T/β of older results."""
    params = run.get("method_params")
    if isinstance(params, dict):
        return params
    return {k: run.get(k) for k in FLAT_PARAMS if run.get(k) is not None}


# Optimisers that change what a method does (they treat its gradients apart), named in the
# method like the published tables do ("KD+DOT"); every other optimiser is part of the recipe.
METHOD_OPTIMIZERS = {"DOT": "dot"}


def run_method(run: Run) -> str | None:
    """The run's method, ``<method>+dot`` when it trained with the DOT optimiser."""
    method = run.get("method")
    opt = run.get("optimizer")
    name = str(opt.get("name", "")).rsplit(".", 1)[-1] if isinstance(opt, dict) else ""
    suffix = METHOD_OPTIMIZERS.get(name)
    return f"{method}+{suffix}" if suffix and method else method


def group_key(run: Run) -> GroupKey:
    """(dataset, teacher, student, method, settings as canonical JSON): runs differing in any
    method setting never share a group; the dataset is part of every key."""
    params = json.dumps(_norm(run_params(run)), sort_keys=True)
    return (run.get("dataset"), run.get("teacher"), run.get("student"), run_method(run), params)


def sort_value(v) -> tuple:
    """Sortable form of any JSON value: None first, then numbers, then strings, then lists."""
    if v is None:
        return (0,)
    if isinstance(v, bool | int | float):
        return (1, float(v))
    if isinstance(v, str):
        return (2, v)
    if isinstance(v, dict):
        return (3, tuple((k, sort_value(x)) for k, x in sorted(v.items())))
    return (3, tuple(sort_value(x) for x in v))


def sort_key(key: tuple) -> tuple:
    """Total order on group keys (and on their prefixes, e.g. (teacher, student) pairs):
    teachers and baselines lead the tables (no teacher sorts first), then each method's
    configurations by the values of their settings."""
    head = tuple(sort_value(v) for v in key[:4])
    if len(key) < 5:
        return head
    params = json.loads(key[4])
    return (*head, sort_value(list(params.values())), sort_value(params))


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float  # sample std (ddof=1); NaN with fewer than two values
    n: int


def mean_std(values: Iterable[float | None]) -> MeanStd:
    """Mean and *sample* standard deviation of the non-missing values."""
    xs = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if xs.size == 0:
        return MeanStd(math.nan, math.nan, 0)
    std = float(xs.std(ddof=1)) if xs.size > 1 else math.nan
    return MeanStd(float(xs.mean()), std, int(xs.size))


@dataclass
class Group:
    """The runs of one configuration, one per seed."""

    key: GroupKey
    runs: dict[int, Run] = field(default_factory=dict)

    dataset = property(lambda self: self.key[0])
    teacher = property(lambda self: self.key[1])
    student = property(lambda self: self.key[2])
    method = property(lambda self: self.key[3])
    params = property(lambda self: json.loads(self.key[4]))
    alpha = property(lambda self: self.params.get("alpha"))
    temperature = property(lambda self: self.params.get("temperature"))
    beta = property(lambda self: self.params.get("beta"))

    @property
    def label(self) -> str:
        """The configuration as the training run described it (``α=0.5, T=4``), else built from
        the flat α/T/β; "—" for runs without method settings."""
        for run in self.runs.values():
            if run.get("method_label"):
                return str(run.get("method_label"))
        parts = [
            f"{sym}={v:g}"
            for sym, v in (("α", self.alpha), ("T", self.temperature), ("β", self.beta))
            if v is not None
        ]
        return ", ".join(parts) if parts else "—"

    @property
    def seeds(self) -> list[int]:
        return sorted(self.runs)

    def values(self, metric: str) -> dict[int, float]:
        """seed → value for the seeds where ``metric`` was recorded."""
        return {s: float(r.get(metric)) for s, r in self.runs.items() if r.get(metric) is not None}

    def stat(self, metric: str) -> MeanStd:
        return mean_std(self.values(metric).values())


def metric_columns(frame) -> list[str]:
    """Every numeric measurement of the report (``frame`` from :func:`metric_frame`): the shown
    ones in display order, then the others (CKA of stage pairs, the final weights' NLL, a
    metric added later, …) by name."""
    from kdlab.report.fmt import shown_metrics

    found = set(frame.columns.get_level_values(0)) if len(frame.columns) else set()
    shown = list(shown_metrics())  # always columns, so scripts can rely on them
    return shown + sorted(found - set(shown))


def metric_frame(groups: dict[GroupKey, Group]):
    """One row per group, columns (metric, mean|std) over its seeds, for every numeric
    measurement in the runs' results.json (nested records flattened with dotted names)."""
    import pandas as pd

    rows = [
        {"_group": i, **run.data} for i, g in enumerate(groups.values()) for run in g.runs.values()
    ]
    if not rows:
        return pd.DataFrame()
    df = pd.json_normalize(rows)
    cols = [c for c in df.columns if is_metric(c) and _numeric(df[c])]
    agg = df.groupby("_group")[cols].agg(["mean", "std"])
    return agg.reindex(range(len(groups)))


def _numeric(column) -> bool:
    values = column.dropna()
    return bool(len(values)) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


def group_runs(runs: Iterable[Run]) -> dict[GroupKey, Group]:
    """Group runs by configuration; a seed seen twice warns and keeps the later run."""
    groups: dict[GroupKey, Group] = {}
    for run in runs:
        key = group_key(run)
        g = groups.setdefault(key, Group(key))
        seed = int(run.get("seed"))
        if seed in g.runs:
            warnings.warn(
                f"seed {seed} appears twice in group {label(g)}: keeping {run.path}, "
                f"dropping {g.runs[seed].path}",
                ReportWarning,
                stacklevel=2,
            )
        g.runs[seed] = run
    return {k: groups[k] for k in sorted(groups, key=sort_key)}


@dataclass(frozen=True)
class PairedDelta:
    """Mean of (treatment − baseline) over shared seeds, its 95 % CI and paired t-test."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    t: float
    p: float
    seeds: tuple[int, ...]
    unpaired: tuple[int, ...]  # seeds present in only one of the two groups


def paired_delta(
    treat: dict[int, float], base: dict[int, float], confidence: float = 0.95
) -> PairedDelta:
    """Paired-by-seed difference ``treat − base`` with a t-based CI and scipy's paired t-test.

    With one shared seed the mean is reported but CI and p are NaN; with zero-variance
    differences the CI collapses onto the mean and p is NaN (the t statistic is undefined).
    """
    seeds = tuple(sorted(set(treat) & set(base)))
    unpaired = tuple(sorted(set(treat) ^ set(base)))
    a = np.array([treat[s] for s in seeds], dtype=float)
    b = np.array([base[s] for s in seeds], dtype=float)
    d = a - b
    n = len(seeds)
    if n == 0:
        return PairedDelta(0, *(math.nan,) * 6, seeds, unpaired)
    mean = float(d.mean())
    if n < 2:
        return PairedDelta(
            n, mean, math.nan, math.nan, math.nan, math.nan, math.nan, seeds, unpaired
        )
    sd = float(d.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    if sd == 0.0:
        t_stat, p = math.nan, math.nan
    else:
        res = sps.ttest_rel(a, b)
        t_stat, p = float(res.statistic), float(res.pvalue)
    return PairedDelta(n, mean, sd, mean - half, mean + half, t_stat, p, seeds, unpaired)


def find_baseline(dataset: str, student: str, groups: dict[GroupKey, Group]) -> Group | None:
    """The baseline group of ``student`` on ``dataset`` (teacher null), if any.

    Several candidates (e.g. baselines with different label smoothing) are unusual: the one with
    most seeds is used and the choice is warned about.
    """
    cands = [
        grp
        for grp in groups.values()
        if grp.method == "baseline" and grp.dataset == dataset and grp.student == student
    ]
    if not cands:
        return None
    best = max(cands, key=lambda c: len(c.runs))
    if len(cands) > 1:
        warnings.warn(
            f"{len(cands)} baseline groups for {student} on {dataset}; "
            f"comparing with {label(best)} ({len(best.runs)} seeds)",
            ReportWarning,
            stacklevel=2,
        )
    return best


def delta_vs_baseline(group: Group, groups: dict[GroupKey, Group]) -> PairedDelta | None:
    """Δ of ``DELTA_METRIC`` against the matching baseline; None for teachers/baselines."""
    if group.method in NO_TEACHER_METHODS:
        return None
    base = find_baseline(group.dataset, group.student, groups)
    if base is None:
        return None
    return paired_delta(group.values(DELTA_METRIC), base.values(DELTA_METRIC))


def best_configs(groups: dict[GroupKey, Group]) -> dict[tuple, Group]:
    """(dataset, teacher, student, method) → the group with the highest *mean val* accuracy.

    Ties keep the first group in key order, so the choice is deterministic.
    """
    best: dict[tuple, Group] = {}
    for key, grp in groups.items():
        pair = key[:4]
        val = grp.stat("val_acc_best").mean
        if pair not in best or val > best[pair].stat("val_acc_best").mean:
            best[pair] = grp
    return best


def teacher_accuracy(dataset: str, arch: str, groups: dict[GroupKey, Group]) -> MeanStd:
    """Teacher test accuracy: its own "teacher" runs (mean over seeds) when present, else
    the ``teacher_test_acc`` recorded by the students it taught."""
    own = [
        g
        for g in groups.values()
        if g.method == "teacher" and g.dataset == dataset and g.student == arch
    ]
    if own:
        return mean_std(v for g in own for v in g.values("test_acc_best").values())
    taught = [g for g in groups.values() if g.dataset == dataset and g.teacher == arch]
    return mean_std(v for g in taught for v in g.values("teacher_test_acc").values())


def label(group: Group) -> str:
    """Short human-readable name of a group, e.g. ``cifar10 r50→r18 logit α=0.5, T=4``."""
    pair = f"{group.teacher}→{group.student}" if group.teacher else group.student
    config = group.label
    return " ".join([group.dataset, pair, group.method] + ([config] if config != "—" else []))
