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
    Group,
    GroupKey,
    best_configs,
    delta_vs_baseline,
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


def heatmap_matrix(
    groups: list[Group], metric: str = "val_acc_best"
) -> tuple[list[float], list[float], np.ndarray]:
    """``(alphas, temperatures, mean metric[α, T])``; NaN where a combination was not run."""
    alphas = sorted({g.alpha for g in groups})
    temps = sorted({g.temperature for g in groups})
    mat = np.full((len(alphas), len(temps)), np.nan)
    for g in groups:
        mat[alphas.index(g.alpha), temps.index(g.temperature)] = g.stat(metric).mean
    return alphas, temps, mat


def heatmap_figure(groups: list[Group], title: str) -> Figure:
    """One annotated cell per (α, T), coloured by mean val accuracy; the best value in bold."""
    alphas, temps, mat = heatmap_matrix(groups)
    fig, ax = plt.subplots(figsize=HEATMAP_SIZE, dpi=DPI, layout="constrained")
    im = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis", origin="lower", aspect="auto")
    fig.colorbar(im, ax=ax, label="val acc (%)")
    ax.set_xticks(range(len(temps)), [f"{t:g}" for t in temps])
    ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_xlabel("temperature T")
    ax.set_ylabel("α (KD weight)")
    ax.set_title(title, fontsize=10)
    best = np.unravel_index(np.nanargmax(mat), mat.shape) if np.isfinite(mat).any() else None
    for i in range(len(alphas)):
        for j in range(len(temps)):
            if np.isfinite(mat[i, j]):
                bold = "bold" if best == (i, j) else "normal"
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", color="w", weight=bold)
    return fig


def heatmap_groups(groups: dict[GroupKey, Group]) -> dict[tuple, list[Group]]:
    """(dataset, teacher, student, method) → its groups that have both α and T."""
    out: dict[tuple, list[Group]] = {}
    for key, g in groups.items():
        if g.alpha is not None and g.temperature is not None and g.teacher is not None:
            out.setdefault(key[:4], []).append(g)
    return out


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
        ax.bar(x + (k - (len(methods) - 1) / 2) * width, means, width, yerr=errs, capsize=4,
               label=fmt.method(m))  # fmt: skip
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
