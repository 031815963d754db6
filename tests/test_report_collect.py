"""Robustness to real sweeps: bad or missing results are named and skipped; nothing usable errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdlab.report.__main__ import main
from kdlab.report.build import make_report
from kdlab.report.collect import ReportError, ReportWarning, collect_runs

GOOD = {
    "dataset": "cifar10",
    "teacher": None,
    "student": "r18",
    "method": "baseline",
    "alpha": None,
    "temperature": None,
    "beta": None,
    "seed": 0,
    "val_acc_best": 95.0,
    "test_acc_best": 94.5,
}


def job(root: Path, name: str, content: str | dict | None) -> Path:
    """A Hydra job folder; ``content`` None means the job never wrote results.json."""
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    if content is not None:
        text = content if isinstance(content, str) else json.dumps(content)
        (d / "results.json").write_text(text)
    return d


def test_bad_runs_are_named_in_warnings_and_good_ones_kept(tmp_path):
    job(tmp_path, "0", GOOD)
    job(tmp_path, "1", '{"dataset": "cifar10", "seed": 1, "val_acc')  # killed mid-write
    job(tmp_path, "2", {k: v for k, v in GOOD.items() if k != "test_acc_best"} | {"seed": 2})
    job(tmp_path, "3", GOOD | {"seed": 3, "status": "failed"})
    job(tmp_path, "4", GOOD | {"seed": 4, "val_acc_best": "high"})
    job(tmp_path, "5", None)
    problems: list[str] = []
    with pytest.warns(ReportWarning) as rec:
        runs = collect_runs([tmp_path], problems)
    assert [r.get("seed") for r in runs] == [0]
    msgs = [str(w.message) for w in rec]
    assert msgs == problems and len(msgs) == 5
    assert any("missing results" in m and str(tmp_path / "5") in m for m in msgs)
    assert any(str(tmp_path / "1" / "results.json") in m and "malformed JSON" in m for m in msgs)
    assert any("lacks required key(s) ['test_acc_best']" in m for m in msgs)
    assert any("the run is failed" in m and str(tmp_path / "3") in m for m in msgs)
    assert any("'val_acc_best' must be a number" in m for m in msgs)


def test_partial_sweep_lists_missing_jobs_in_results_md(tmp_path):
    job(tmp_path, "0", GOOD)
    job(tmp_path, "1", None)
    with pytest.warns(ReportWarning):
        res = make_report([tmp_path], figures=False)
    md = res.markdown.read_text()
    assert "## Skipped and missing runs" in md and str(tmp_path / "1") in md


def test_folder_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="no results.json found under"):
        collect_runs([tmp_path])


def test_folder_with_only_unusable_runs_is_an_error(tmp_path):
    job(tmp_path, "0", "not json")
    with (
        pytest.warns(ReportWarning),
        pytest.raises(ReportError, match="none of the 1 results.json"),
    ):
        collect_runs([tmp_path])


def test_missing_path_is_an_error_and_cli_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(ReportError, match="does not exist"):
        collect_runs([tmp_path / "nope"])
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: report path does not exist") and err.count("\n") == 1


def test_cli_prints_warnings_for_skipped_runs(tmp_path, capsys):
    job(tmp_path, "0", GOOD)
    job(tmp_path, "1", "{")
    assert main([str(tmp_path), "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "warning: skipping" in err and str(tmp_path / "1" / "results.json") in err


def test_low_data_runs_form_their_own_groups_and_pair_with_their_own_baseline(tmp_path):
    from kdlab.report.stats import delta_vs_baseline, group_runs

    kd = GOOD | {"teacher": "r50", "method": "logit", "method_params": {"alpha": 0.8}}
    for seed in (0, 1):
        job(tmp_path, f"base{seed}", GOOD | {"seed": seed, "test_acc_best": 90.0 + seed})
        job(tmp_path, f"kd{seed}", kd | {"seed": seed, "test_acc_best": 91.0 + seed})
        job(
            tmp_path,
            f"base5k{seed}",
            GOOD | {"seed": seed, "train_size": 5000, "test_acc_best": 60.0 + seed},
        )
        job(
            tmp_path,
            f"kd5k{seed}",
            kd | {"seed": seed, "train_size": 5000, "test_acc_best": 70.0 + seed},
        )
    groups = group_runs(collect_runs([tmp_path]))
    assert sorted({g.dataset for g in groups.values()}) == ["cifar10", "cifar10[5000]"]
    deltas = {
        g.dataset: delta_vs_baseline(g, groups) for g in groups.values() if g.method == "logit"
    }
    assert deltas["cifar10"].mean == pytest.approx(1.0)
    assert deltas["cifar10[5000]"].mean == pytest.approx(10.0)
