"""tags=[…]: in results.json, the W&B run (tags and config), the sweep summary; report --tag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kdlab.labels import run_labels, tags_of
from kdlab.report.collect import ReportError, ReportWarning, collect_runs
from tests.conftest import read_results, run_train, tiny_overrides
from tests.helpers_wandb import read_offline_run


def test_tags_are_a_list_of_names_and_a_bad_one_is_refused():
    assert tags_of(OmegaConf.create({"tags": ["a", "v2", "a"]})) == ["a", "v2"]
    assert tags_of({"tags": "solo"}) == ["solo"] and tags_of({}) == []
    assert run_labels({"tags": ["x"], "debug_preset": "fdr"}) == {"tags": ["x"], "debug": "fdr"}
    with pytest.raises(ValueError, match=r"tags=\['two words'\] not allowed"):
        tags_of({"tags": ["ok", "two words"]})


def _results(root: Path, name: str, **extra) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    data = {
        "dataset": "cifar10",
        "student": "cnn",
        "method": "baseline",
        "seed": 0,
        "val_acc_best": 50.0,
        "test_acc_best": 49.0,
        "status": "finished",
        **extra,
    }
    (run / "results.json").write_text(json.dumps(data))
    return run


def test_the_report_keeps_runs_carrying_every_given_tag_and_leaves_debug_runs_out(tmp_path):
    _results(tmp_path, "a", tags=["ablation", "v2"])
    _results(tmp_path, "b", tags=["ablation"], seed=1)
    _results(tmp_path, "c", seed=2)
    _results(tmp_path, "dbg", tags=["ablation"], debug="fdr", seed=3)
    with pytest.warns(ReportWarning, match=r"dbg.*a debug run \(debug=fdr\)"):
        every = collect_runs([tmp_path])
    assert sorted(r.dir.name for r in every) == ["a", "b", "c"]
    with pytest.warns(ReportWarning):
        tagged = collect_runs([tmp_path], tags=["ablation"])
    assert sorted(r.dir.name for r in tagged) == ["a", "b"]
    with pytest.warns(ReportWarning):
        both = collect_runs([tmp_path], tags=["ablation", "v2"])
    assert [r.dir.name for r in both] == ["a"]
    with_debug = collect_runs([tmp_path], tags=["ablation"], include_debug=True)
    assert sorted(r.dir.name for r in with_debug) == ["a", "b", "dbg"]
    with pytest.warns(ReportWarning), pytest.raises(ReportError, match="carries the tag"):
        collect_runs([tmp_path], tags=["nowhere"])


@pytest.mark.slow
def test_tags_reach_results_json_and_the_wandb_offline_run(tiny_cifar10, tmp_path):
    out = tmp_path / "run"
    run_train(
        ["+experiment=baseline_cnn", *tiny_overrides(tiny_cifar10, out), "tags=[abl,v2]"],
        cwd=tmp_path,
    )
    assert read_results(out)["tags"] == ["abl", "v2"]
    (wandb_dir,) = (out / "wandb").glob("offline-run-*")
    run = read_offline_run(wandb_dir)
    assert {"abl", "v2", "baseline_cnn", "baseline"} <= set(run["tags"])
    assert run["config"]["tags"] == ["abl", "v2"]


@pytest.mark.slow
def test_tags_reach_the_sweep_summary(tiny_cifar10, tmp_path):
    sweep = tmp_path / "sweep"
    over = [o for o in tiny_overrides(tiny_cifar10, tmp_path / "unused") if "hydra.run" not in o]
    run_train(
        [
            "+experiment=baseline_cnn",
            *over,
            "logger=csv",
            "tags=[grid1]",
            "-m",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [j["tags"] for j in summary["jobs"]] == [["grid1"], ["grid1"]]
