"""The report's PNG figures: written, readable, of the expected pixel size, with the right cells."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from kdlab.report.collect import collect_runs
from kdlab.report.curves import epoch_series, plot_curves, seed_band
from kdlab.report.plots import heatmap_figure, heatmap_groups, plot_deltas, plot_heatmaps
from kdlab.report.stats import group_runs

ALPHAS, TEMPS = (0.3, 0.5, 0.7), (2, 3, 4)


def write_run(
    root: Path, name: str, curve: list[tuple[int, float]] | None = None, **fields
) -> None:
    base = {
        "dataset": "cifar10",
        "teacher": None,
        "student": "r18",
        "method": "baseline",
        "alpha": None,
        "temperature": None,
        "beta": None,
        "status": "finished",
    }
    base.update(fields)
    d = root / name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(base))
    if curve is not None:  # CSVLogger-style rows: train rows with empty val columns in between
        (d / "csv").mkdir()
        lines = ["epoch,step,train/loss,val/acc,val/agreement,val/kl"]
        for ep, acc in curve:
            lines += [f"{ep},{ep * 10 + 5},1.5,,,", f"{ep},{ep * 10 + 9},,{acc},{acc - 1},0.5"]
        (d / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A 3 × 3 α × T logit grid (one combination missing) plus baseline, 2 seeds, with logs."""
    for s in (0, 1):
        write_run(
            tmp_path,
            f"base/{s}",
            [(0, 50.0 + s), (1, 60.0 + s)],
            seed=s,
            val_acc_best=60,
            test_acc_best=59,
        )
        for a in ALPHAS:
            for t in TEMPS:
                if (a, t) == (0.7, 4):
                    continue
                write_run(
                    tmp_path,
                    f"kd_{a}_{t}/{s}",
                    [(0, 52.0), (1, 62.0 + 2 * s)],
                    teacher="r34",
                    method="logit",
                    alpha=a,
                    temperature=t,
                    seed=s,
                    val_acc_best=60 + a + t / 10,
                    test_acc_best=60 + s,
                )
    return tmp_path


def test_heatmap_has_one_cell_per_alpha_t_with_the_val_mean(sweep):
    groups = group_runs(collect_runs([sweep]))
    (gs,) = heatmap_groups(groups).values()
    fig = heatmap_figure(gs, "t")
    ax = fig.axes[0]
    arr = ax.images[0].get_array()
    assert arr.shape == (len(ALPHAS), len(TEMPS))
    assert bool(arr.mask[2, 2])  # α=0.7, T=4 was not run: an empty cell, not a zero
    assert float(arr[1, 0]) == pytest.approx(60 + 0.5 + 0.2)
    assert len(ax.texts) == len(ALPHAS) * len(TEMPS) - 1  # one annotation per run cell


def test_pngs_are_written_readable_and_sized(sweep, tmp_path):
    groups = group_runs(collect_runs([sweep]))
    out = tmp_path / "figs"
    out.mkdir()
    (heat,) = plot_heatmaps(groups, out)
    (delta,) = plot_deltas(groups, out)
    (curves,) = plot_curves(groups, out)
    expected = {heat: (400, 500), delta: (400, 700), curves: (380, 1200)}
    for path, (h, w) in expected.items():
        img = mpimg.imread(path)
        assert img.shape[:2] == (h, w), path.name
        assert img.std() > 0.01  # not a blank canvas


def test_epoch_series_takes_logged_rows_only(sweep):
    s = epoch_series(sweep / "base" / "0" / "csv" / "metrics.csv", "val/acc")
    assert s.to_dict() == {0: 50.0, 1: 60.0}
    assert epoch_series(sweep / "base" / "0" / "csv" / "metrics.csv", "val/missing").empty


def test_seed_band_is_mean_and_sample_std_over_seeds(sweep):
    groups = group_runs(collect_runs([sweep]))
    kd = next(g for g in groups.values() if g.alpha == 0.3 and g.temperature == 2)
    ep, mean, std = seed_band(kd, "val/acc")
    np.testing.assert_allclose(ep, [0, 1])
    np.testing.assert_allclose(mean, [52.0, 63.0])
    np.testing.assert_allclose(std, [0.0, np.sqrt(2.0)])  # 62 and 64: sample std √2
