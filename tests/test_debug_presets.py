"""debug=<preset>: each preset does what it says, in its own logs/debug/ tree, never exported."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from kdlab import CONF_DIR
from kdlab.labels import is_debug
from kdlab.utils.resolvers import register
from tests.conftest import read_results, run_train

register()
PRESETS = ("fdr", "limit", "overfit", "profiler", "anomaly")


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_over_an_experiment_into_the_debug_tree(preset):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["+experiment=teacher_r50", f"debug={preset}"],
            return_hydra_config=True,
        )
    assert cfg.debug_preset == preset and is_debug(cfg)
    run_dir = cfg.hydra.run._get_node("dir")._value()  # unresolved: Hydra's own values are unset
    assert run_dir.startswith("${paths.log_dir}/debug/runs/${run_name}/${debug_preset}_")
    assert cfg.hydra.sweep._get_node("dir")._value().startswith("${paths.log_dir}/debug/multiruns/")
    assert set(cfg.logger) == {"csv"}  # no W&B runs from a debug run
    assert cfg.callbacks.batch_count._target_ == "kdlab.utils.debug.BatchCount"
    assert cfg.export_teacher is True  # the experiment's; the run itself refuses to export
    assert cfg.trainer.max_epochs == 200  # presets leave the experiment's epochs alone


def debug_run(
    preset: str,
    data_root: Path,
    logs: Path,
    cwd: Path,
    *extra: str,
    check=True,
    experiment: str = "baseline_cnn",
):
    """A debug run (the notebook CNN baseline) on the tiny data; returns (run folder, process)."""
    args = [
        f"+experiment={experiment}",
        f"debug={preset}",
        f"data.root={data_root}",
        "data.val_size=50",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        f"paths.log_dir={logs}",
        "extras.print_config=false",
        *extra,
    ]
    proc = run_train(args, cwd=cwd, check=check)
    runs = sorted((logs / "debug" / "runs").glob(f"*/{preset}_*"))
    return (runs[-1] if runs else None), proc


def batches(run: Path) -> dict:
    return json.loads((run / "debug_batches.json").read_text())


@pytest.mark.slow
def test_fdr_runs_exactly_one_batch_per_stage_and_a_teacher_is_not_exported(tiny_cifar10, tmp_path):
    logs = tmp_path / "logs"
    run, _ = debug_run("fdr", tiny_cifar10, logs, tmp_path, experiment="teacher_cnn_wide")
    assert run.parent.parent == logs / "debug" / "runs"  # its own tree, not logs/runs
    assert not (logs / "runs").exists()
    assert batches(run) == {"train": [1], "validate": [1], "sanity": 0, "test": [1, 1]}
    res = read_results(run)
    assert res["debug"] == "fdr" and res["status"] == "finished"
    assert res["method"] == "teacher" and "teacher_store_path" not in res  # export_teacher: true
    assert not (logs / "teachers").exists()


@pytest.mark.slow
def test_limit_runs_two_epochs_of_a_few_batches(tiny_cifar10, tmp_path):
    run, _ = debug_run("limit", tiny_cifar10, tmp_path / "logs", tmp_path)
    assert batches(run) == {"train": [3, 3], "validate": [2, 2], "sanity": 2, "test": [2, 2]}
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert read_results(run)["debug"] == "limit"


@pytest.mark.slow
def test_overfit_drives_the_training_loss_down_on_the_same_batches(tiny_cifar10, tmp_path):
    run, _ = debug_run("overfit", tiny_cifar10, tmp_path / "logs", tmp_path, "optim.lr=3e-3")
    counts = batches(run)
    assert counts["train"] == [4] * 20
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert len(losses) == 20
    assert losses[-1] < 0.5 * losses[0], losses  # it memorises its four batches


@pytest.mark.slow
def test_profiler_writes_lightnings_table_into_the_run_folder(tiny_cifar10, tmp_path):
    run, _ = debug_run(
        "profiler",
        tiny_cifar10,
        tmp_path / "logs",
        tmp_path,
        "trainer.limit_train_batches=3",
        "trainer.max_steps=3",
    )
    table = (run / "fit-profiler.txt").read_text()
    assert "Action" in table and "run_training_epoch" in table and "Mean duration" in table


@pytest.mark.slow
def test_anomaly_turns_a_nan_gradient_into_an_error_naming_the_operation(tiny_cifar10, tmp_path):
    # a finite loss whose backward is NaN (a non-finite loss would stop the run as diverged
    # before any backward): only anomaly detection names the operation
    run, proc = debug_run(
        "anomaly",
        tiny_cifar10,
        tmp_path / "logs",
        tmp_path,
        "+callbacks.nan._target_=helpers_rerun.NanGradient",
        check=False,
    )
    assert proc.returncode != 0
    assert "returned nan values" in proc.stderr or "returned nan values" in proc.stdout
