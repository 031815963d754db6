"""Training curves from each run's CSV log, averaged over seeds with ± std bands.

Lightning's CSVLogger writes one row per logging event with NaN where a metric was not logged,
so a metric's per-epoch series is its last non-missing value in each epoch. One figure per
teacher → student pair overlays the student's baseline and the best-on-val configuration of
each method (the curves a paper shows); teachers and baselines without a pair get one figure
per dataset.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kdlab.report import fmt  # noqa: E402
from kdlab.report.capacity import pairs  # noqa: E402
from kdlab.report.collect import ReportWarning, Run  # noqa: E402
from kdlab.report.plots import DPI, save_figure, slug  # noqa: E402
from kdlab.report.stats import NO_TEACHER_METHODS, Group, GroupKey, best_configs, find_baseline  # noqa: E402

PANELS = (
    ("val/acc", "val acc (%)"),
    ("val/agreement", "val agreement (%)"),
    ("val/kl", "val KL(t‖s)"),
)
CURVES_SIZE = (12.0, 3.8)  # inches → 1200 × 380 px, always three panels


def metrics_csv(run: Run) -> Path | None:
    """The run's CSVLogger file: ``csv/metrics.csv``, else any metrics.csv below the run."""
    direct = run.dir / "csv" / "metrics.csv"
    if direct.is_file():
        return direct
    found = sorted(run.dir.rglob("metrics.csv"))
    return found[0] if found else None


def epoch_series(path: str | Path, metric: str) -> pd.Series:
    """epoch → the last logged value of ``metric`` in that epoch (empty when never logged)."""
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        warnings.warn(f"cannot read training log {path}: {e}", ReportWarning, stacklevel=2)
        return pd.Series(dtype=float)
    if metric not in df or "epoch" not in df:
        return pd.Series(dtype=float)
    sub = df[["epoch", metric]].dropna()
    return sub.groupby("epoch")[metric].last().astype(float)


def seed_band(group: Group, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(epochs, mean, std)`` over the group's seeds; std is NaN where one seed has the epoch."""
    series = []
    for run in group.runs.values():
        path = metrics_csv(run)
        if path is not None:
            s = epoch_series(path, metric)
            if len(s):
                series.append(s)
    if not series:
        return np.array([]), np.array([]), np.array([])
    table = pd.concat(series, axis=1).sort_index()
    return (
        table.index.to_numpy(dtype=float),
        table.mean(axis=1).to_numpy(),
        table.std(axis=1, ddof=1).to_numpy(),
    )


def _name(g: Group) -> str:
    if g.method in NO_TEACHER_METHODS:
        return f"{fmt.method(g.method)} {fmt.arch(g.student)}"
    return f"{fmt.method(g.method)} ({g.label})"


def curves_figure(lines: list[Group], title: str) -> Figure | None:
    """Three panels (val acc, agreement, KL); one mean line ± std band per group."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=CURVES_SIZE, dpi=DPI, layout="constrained")
    drawn = 0
    for ax, (metric, ylabel) in zip(axes, PANELS, strict=True):
        for i, g in enumerate(lines):  # fixed colour per group, even where a panel lacks it
            ep, mean, std = seed_band(g, metric)
            if ep.size == 0:
                continue
            c = f"C{i}"
            ax.plot(ep, mean, marker="o", ms=3, color=c, label=f"{_name(g)}, n={len(g.runs)}")
            band = np.nan_to_num(std)
            ax.fill_between(ep, mean - band, mean + band, color=c, alpha=0.25)
            drawn += 1
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    if drawn == 0:
        plt.close(fig)
        return None
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def curve_sets(groups: dict[GroupKey, Group]) -> dict[str, tuple[str, list[Group]]]:
    """file stem → (title, groups to overlay): per pair, and leftover teachers/baselines."""
    best = best_configs(groups)
    sets: dict[str, tuple[str, list[Group]]] = {}
    used: set[GroupKey] = set()
    for ds in sorted({g.dataset for g in groups.values()}):
        for t, s in pairs(groups, ds):
            base = find_baseline(ds, s, groups)
            lines = ([base] if base else []) + [
                g for (d, tt, ss, _m), g in best.items() if (d, tt, ss) == (ds, t, s)
            ]
            used.update(g.key for g in lines)
            sets[f"curves_{slug(ds, f'{t}-{s}')}"] = (f"{ds}: {fmt.arch(t)} → {fmt.arch(s)}", lines)
        rest = [
            g
            for g in groups.values()
            if g.dataset == ds and g.method in NO_TEACHER_METHODS and g.key not in used
        ]
        if rest:
            sets[f"curves_{slug(ds)}_baselines"] = (f"{ds}: teachers and baselines", rest)
    return sets


def plot_curves(groups: dict[GroupKey, Group], out_dir: str | Path) -> list[Path]:
    """Write every curve figure that has logged data; returns the written paths."""
    paths = []
    for stem, (title, lines) in curve_sets(groups).items():
        fig = curves_figure(lines, title)
        if fig is None:
            continue
        paths.append(save_figure(fig, Path(out_dir) / f"{stem}.png"))
    return paths
