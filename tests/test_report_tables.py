"""The report's tables and command line on a synthetic two-pair sweep with known numbers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdlab.report.__main__ import main
from kdlab.report.build import make_report
from kdlab.report.capacity import capacity_gap_markdown
from kdlab.report.collect import collect_runs
from kdlab.report.stats import group_runs


def write_run(root: Path, name: str, **fields) -> Path:
    base = {
        "dataset": "cifar10",
        "teacher": None,
        "student": "r18",
        "method": "baseline",
        "alpha": None,
        "temperature": None,
        "beta": None,
        "epochs": 1,
        "status": "finished",
    }
    base.update(fields)
    d = root / name
    (d / ".hydra").mkdir(parents=True, exist_ok=True)
    (d / "results.json").write_text(json.dumps(base))
    return d / "results.json"


def two_pair_sweep(root: Path) -> Path:
    """R34→R18 (logit, feature) and R50→R34 (logit); numbers chosen so every cell is exact."""
    logit = {"method": "logit", "beta": None}
    for s in (0, 1):
        write_run(root, f"base_r18/{s}", seed=s, val_acc_best=95.0, test_acc_best=[94.8, 95.0][s])
        write_run(
            root,
            f"base_r34/{s}",
            student="r34",
            seed=s,
            val_acc_best=95.2,
            test_acc_best=[95.0, 95.2][s],
        )
        # the "teacher" run of R34 takes precedence over the students' teacher_test_acc (95.31)
        kd18 = {"teacher": "r34", "seed": s, "teacher_test_acc": 95.31}
        write_run(
            root,
            f"r34_r18_a5/{s}",
            alpha=0.5,
            temperature=4,
            val_acc_best=95.6,
            test_acc_best=[94.9, 95.3][s],
            **kd18,
            **logit,
        )
        # higher test but lower val: must not be chosen
        write_run(
            root,
            f"r34_r18_a3/{s}",
            alpha=0.3,
            temperature=2,
            val_acc_best=95.4,
            test_acc_best=95.5,
            **kd18,
            **logit,
        )
        write_run(
            root,
            f"r34_r18_feat/{s}",
            method="feature",
            alpha=0.7,
            beta=0.5,
            val_acc_best=95.5,
            test_acc_best=[95.0, 95.0][s],
            **kd18,
        )
        write_run(
            root,
            f"r50_r34/{s}",
            teacher="r50",
            student="r34",
            seed=s,
            alpha=0.3,
            temperature=3,
            val_acc_best=95.7,
            test_acc_best=[95.3, 95.1][s],
            teacher_test_acc=95.36,
            **logit,
        )
    write_run(
        root,
        "teacher_r34/0",
        student="r34",
        method="teacher",
        seed=0,
        val_acc_best=95.5,
        test_acc_best=95.30,
    )
    return root


EXPECTED_CAPACITY = """\
| Teacher (acc) | Student (acc) | T–S gap | Logit-KD Δ | Feature-KD Δ | Best |
|---|---|---|---|---|---|
| R34 (95.30) | R18 (94.90 ± 0.14) | +0.40 | +0.20 ± 1.27 (α=0.5, T=4) | +0.10 ± 1.27 (α=0.7, β=0.5) | Logit-KD |
| R50 (95.36) | R34 (95.10 ± 0.14) | +0.26 | +0.10 ± 2.54 (α=0.3, T=3) | — | Logit-KD |
"""


def test_capacity_gap_table_matches_expected_markdown(tmp_path):
    groups = group_runs(collect_runs([two_pair_sweep(tmp_path)]))
    assert capacity_gap_markdown(groups, "cifar10") == EXPECTED_CAPACITY


def test_baseline_wins_best_when_kd_does_not_help(tmp_path):
    for s in (0, 1):
        write_run(tmp_path, f"b/{s}", seed=s, val_acc_best=95, test_acc_best=95.0)
        write_run(
            tmp_path,
            f"k/{s}",
            teacher="r34",
            method="logit",
            alpha=0.5,
            temperature=4,
            seed=s,
            val_acc_best=95,
            test_acc_best=94.0,
            teacher_test_acc=95.3,
        )
    md = capacity_gap_markdown(group_runs(collect_runs([tmp_path])), "cifar10")
    assert md.splitlines()[2].endswith("| Baseline |")
    assert "| -1.00 ± 0.00 (α=0.5, T=4) |" in md  # identical differences: a degenerate CI


def test_report_writes_csv_md_and_figures_to_default_out(tmp_path):
    sweep = two_pair_sweep(tmp_path / "sweep")
    res = make_report([sweep])
    assert res.out_dir == sweep / "report"
    rows = list(csv.DictReader(open(res.csv)))
    assert len(rows) == len(res.groups) == 7
    a5 = next(r for r in rows if r["method"] == "logit" and r["alpha"] == "0.5")
    assert float(a5["test_acc_best_mean"]) == pytest.approx(95.1)
    assert float(a5["delta_mean"]) == pytest.approx(0.2)
    assert a5["best_on_val"] == "True" and a5["seeds"] == "0 1"
    md = res.markdown.read_text()
    assert EXPECTED_CAPACITY in md
    assert "## Δ vs baseline (paired by seed)" in md
    names = {p.name for p in res.figures}
    assert {"heatmap_cifar10_r34-r18_logit.png", "delta_cifar10.png"} <= names


def test_cli_as_typed_with_out_and_rich_table(tmp_path):
    sweep = two_pair_sweep(tmp_path / "sweep")
    out = tmp_path / "paper"
    proc = subprocess.run(
        [sys.executable, "-m", "kdlab.report", str(sweep), "--out", str(out), "--no-figures"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Capacity gap (cifar10)" in proc.stdout and "Logit-KD" in proc.stdout
    assert (out / "results.csv").is_file() and (out / "results.md").is_file()


def test_results_json_path_defaults_to_parent_report_folder(tmp_path):
    path = write_run(tmp_path, "one", seed=0, val_acc_best=95, test_acc_best=94.5)
    assert main([str(path), "--no-figures"]) == 0
    assert (path.parent / "report" / "results.md").is_file()


def test_wall_times_come_from_the_runs_records(tmp_path):
    from kdlab.report.fmt import duration

    for s, secs in ((0, 1500.0), (1, 1532.0)):
        write_run(
            tmp_path,
            f"base/{s}",
            seed=s,
            val_acc_best=45.0,
            test_acc_best=46.0,
            duration_s=secs,
            epochs_trained=8,
        )
    make_report([tmp_path], tmp_path / "report", figures=False)
    md = (tmp_path / "report" / "results.md").read_text()
    assert "## Wall times" in md
    assert "| 2 | 8 | 25 min 16 s | 50 min 32 s |" in md
    assert (duration(48.4), duration(3725)) == ("48 s", "1 h 02 min")
