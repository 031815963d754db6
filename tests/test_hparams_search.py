"""hparams_search=NAME: an Optuna search whose trials are ordinary runs, optimising val only."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kdlab import CONF_DIR
from kdlab.checks import check_run_settings
from kdlab.models.cnn import small_cnn
from kdlab.report.build import make_report
from kdlab.search import search_value
from kdlab.utils.resolvers import register
from tests.conftest import read_results, run_train

register()


def _compose(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_a_job_returns_its_best_val_accuracy_to_the_sweeper_and_never_a_test_metric():
    res = {"status": "finished", "val_acc_best": 71.5, "test_acc_best": 80.0}
    assert search_value(res, None) is res
    assert search_value(res, "val/acc_best") == 71.5
    assert math.isnan(search_value({"status": "failed", "error": "x"}, "val/acc_best"))
    assert math.isnan(search_value({"status": "finished", "val_acc_best": None}, "val/acc_best"))
    with pytest.raises(ValueError, match="select on the test set"):
        search_value(res, "test/acc_best")


@pytest.mark.parametrize(
    ("overrides", "params"),
    [
        (
            ["+experiment=r56_cnn_logit", "hparams_search=logit_optuna"],
            ["distill.alpha", "distill.temperature"],
        ),
        (
            [
                "+experiment=resnet32x4_resnet8x4",
                "distill=dkd",
                "method=dkd",
                "hparams_search=dkd_optuna",
            ],
            ["distill.terms.dkd.alpha", "distill.terms.dkd.beta", "distill.terms.dkd.temperature"],
        ),
    ],
)
def test_each_search_optimises_val_acc_best_over_settings_its_method_has(overrides, params):
    cfg = _compose(*overrides)
    assert cfg.optimized_metric == "val/acc_best"
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert list(cfg.hydra.sweeper.params) == params
    for p in params:  # every searched name is a setting the loss reads
        assert OmegaConf.select(cfg, p, throw_on_missing=True) is not None, p


def test_a_search_on_a_test_metric_is_refused_before_training():
    cfg = _compose(
        "+experiment=r56_cnn_logit", "hparams_search=logit_optuna", "optimized_metric=test/acc_best"
    )
    with pytest.raises(ValueError, match="would select on the test set"):
        check_run_settings(cfg)


@pytest.mark.slow
def test_three_trials_are_three_run_folders_and_the_summary_names_the_best(tiny_cifar10, tmp_path):
    teacher = tmp_path / "cnn_wide.pt"
    torch.manual_seed(0)
    torch.save(small_cnn(10, channels=[32, 64], hidden=512, arch="cnn_wide").state_dict(), teacher)
    sweep = tmp_path / "search"
    run_train(
        [
            "+experiment=cnn_wide_cnn_logit",
            "hparams_search=logit_optuna",
            "hydra.sweeper.n_trials=3",
            f"teacher.ckpt={teacher}",
            f"data.root={tiny_cifar10}",
            "data.val_size=50",
            "data.batch_size=16",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "logger=csv",
            "callbacks.progress_bar=null",
            "callbacks.model_summary=null",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"hydra.sweep.dir={sweep}",
            "extras.print_config=false",
        ],
        cwd=tmp_path,
    )
    trials = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    assert len(trials) == 3 and all((t / "checkpoints" / "best.ckpt").is_file() for t in trials)
    results = {t.name: read_results(t) for t in trials}
    assert len({(r["alpha"], r["temperature"]) for r in results.values()}) == 3
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    best = summary["best"]
    top = max(r["val_acc_best"] for r in results.values())
    assert best["metric"] == "val/acc_best" and best["value"] == top
    assert results[best["job"]]["val_acc_best"] == top
    assert float(best["settings"]["distill.alpha"]) == pytest.approx(results[best["job"]]["alpha"])
    optuna = OmegaConf.load(sweep / "optimization_results.yaml")
    assert optuna.best_value == top
    report = make_report([sweep], tmp_path / "report", figures=False)
    assert len(report.groups) == 3  # the report reads a search like any sweep
