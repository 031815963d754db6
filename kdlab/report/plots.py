"""Summary figures: the α × T validation heatmap per pair and the Δ-vs-baseline bar chart.

The heatmap shows *validation* accuracy because that is what the configuration is chosen on;
test numbers appear only in the Δ chart, for the best-on-val configurations. Figures have a
fixed size (no tight bounding box) so their pixel size is predictable for papers and tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display (CI, SLURM nodes)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from kdlab.report import fmt  # noqa: E402
from kdlab.report.capacity import distilled_methods, pairs  # noqa: E402
from kdlab.report.stats import (  # noqa: E402
    NO_TEACHER_METHODS,
    Group,
    GroupKey,
    best_configs,
    delta_vs_baseline,
    sort_value,
)

DPI = 100


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG at the report's DPI and free it (long sweeps make many figures)."""
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


HEATMAP_SIZE = (5.0, 4.0)  # inches → 500 × 400 px
DELTA_SIZE = (7.0, 4.0)  # → 700 × 400 px


def slug(*parts: object) -> str:
    """A file-name-safe join of the parts (``r50→r18`` becomes ``r50-r18``)."""
    text = "_".join(str(p) for p in parts if p is not None).replace("→", "-")
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)


AXIS_NAMES = {"alpha": "α (KD weight)", "temperature": "temperature T", "beta": "β"}


def flat_settings(params: dict, prefix: str = "") -> dict[str, object]:
    """``{"terms.kd.temperature": 4, …}``: every scalar setting of a group by its path."""
    out: dict[str, object] = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out |= flat_settings(v, f"{prefix}{k}.")
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


def heatmap_axes(groups: list[Group]) -> tuple[str, str] | None:
    """The two settings a method's heatmap spans: α × T when every group has both, else the
    first two scalar settings whose values differ between the groups (None if fewer vary)."""
    settings = [flat_settings(g.params) for g in groups]
    if all(s.get("alpha") is not None and s.get("temperature") is not None for s in settings):
        return "alpha", "temperature"
    keys = [k for k in settings[0] if all(k in s for s in settings)]
    varying = [k for k in keys if len({repr(s[k]) for s in settings}) > 1]
    return (varying[0], varying[1]) if len(varying) >= 2 else None


def heatmap_matrix(
    groups: list[Group],
    metric: str = "val_acc_best",
    axes: tuple[str, str] = ("alpha", "temperature"),
) -> tuple[list, list, np.ndarray]:
    """``(row values, column values, mean metric[row, col])``; NaN where a cell was not run."""
    values = [flat_settings(g.params) for g in groups]
    rows = sorted({v[axes[0]] for v in values}, key=sort_value)
    cols = sorted({v[axes[1]] for v in values}, key=sort_value)
    mat = np.full((len(rows), len(cols)), np.nan)
    for g, v in zip(groups, values, strict=True):
        mat[rows.index(v[axes[0]]), cols.index(v[axes[1]])] = g.stat(metric).mean
    return rows, cols, mat


def _tick(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def heatmap_figure(groups: list[Group], title: str, axes: tuple[str, str] | None = None) -> Figure:
    """One annotated cell per setting pair, coloured by mean val accuracy; the best in bold."""
    axes = axes or heatmap_axes(groups) or ("alpha", "temperature")
    rows, cols, mat = heatmap_matrix(groups, axes=axes)
    fig, ax = plt.subplots(figsize=HEATMAP_SIZE, dpi=DPI, layout="constrained")
    im = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis", origin="lower", aspect="auto")
    fig.colorbar(im, ax=ax, label="val acc (%)")
    ax.set_xticks(range(len(cols)), [_tick(t) for t in cols])
    ax.set_yticks(range(len(rows)), [_tick(a) for a in rows])
    ax.set_xlabel(AXIS_NAMES.get(axes[1], axes[1]))
    ax.set_ylabel(AXIS_NAMES.get(axes[0], axes[0]))
    ax.set_title(title, fontsize=10)
    best = np.unravel_index(np.nanargmax(mat), mat.shape) if np.isfinite(mat).any() else None
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(mat[i, j]):
                bold = "bold" if best == (i, j) else "normal"
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", color="w", weight=bold)
    return fig


def heatmap_groups(groups: dict[GroupKey, Group]) -> dict[tuple, list[Group]]:
    """(dataset, teacher, student, method) → its groups, for the distilled methods whose groups
    span two settings (``heatmap_axes``)."""
    by_method: dict[tuple, list[Group]] = {}
    for key, g in groups.items():
        if g.teacher is not None and g.method not in NO_TEACHER_METHODS:
            by_method.setdefault(key[:4], []).append(g)
    return {k: gs for k, gs in by_method.items() if heatmap_axes(gs) is not None}


def plot_heatmaps(groups: dict[GroupKey, Group], out_dir: str | Path) -> list[Path]:
    """One ``heatmap_<dataset>_<teacher>-<student>_<method>.png`` per pair and method."""
    paths = []
    for (ds, t, s, m), gs in heatmap_groups(groups).items():
        title = f"{ds}: {fmt.arch(t)} → {fmt.arch(s)} {fmt.method(m)} (val acc %)"
        fig = heatmap_figure(gs, title)
        paths.append(save_figure(fig, Path(out_dir) / f"heatmap_{slug(ds, f'{t}-{s}', m)}.png"))
    return paths


def delta_figure(groups: dict[GroupKey, Group], dataset: str) -> Figure | None:
    """Grouped bars: Δ test acc of each method's best-on-val config per pair, 95 % CI bars."""
    prs = pairs(groups, dataset)
    best = best_configs(groups)
    methods = [
        m for m in distilled_methods(groups, dataset) if any((dataset, *p, m) in best for p in prs)
    ]
    if not prs or not methods:
        return None
    fig, ax = plt.subplots(figsize=DELTA_SIZE, dpi=DPI, layout="constrained")
    width = 0.8 / len(methods)
    x = np.arange(len(prs))
    for k, m in enumerate(methods):
        means, errs = [], []
        for t, s in prs:
            g = best.get((dataset, t, s, m))
            d = delta_vs_baseline(g, groups) if g else None
            means.append(d.mean if d and d.n else np.nan)
            errs.append(d.ci_high - d.mean if d and d.n > 1 and np.isfinite(d.ci_high) else 0.0)
        ax.bar(
            x + (k - (len(methods) - 1) / 2) * width,
            means,
            width,
            yerr=errs,
            capsize=4,
            label=fmt.method(m),
        )
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(x, [f"{fmt.arch(t)}→{fmt.arch(s)}" for t, s in prs])
    ax.set_ylabel("Δ test acc vs baseline (pp)")
    ax.set_title(f"{dataset}: best-on-val config per method, 95 % CI", fontsize=10)
    ax.legend()
    return fig


def plot_deltas(groups: dict[GroupKey, Group], out_dir: str | Path) -> list[Path]:
    """One ``delta_<dataset>.png`` per dataset that has distilled runs with a baseline."""
    paths = []
    for ds in sorted({g.dataset for g in groups.values()}):
        fig = delta_figure(groups, ds)
        if fig is None:
            continue
        paths.append(save_figure(fig, Path(out_dir) / f"delta_{slug(ds)}.png"))
    return paths
