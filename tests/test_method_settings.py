"""A method's settings live under ``distill.*`` only: ``alpha=``/``temperature=``/``beta=`` are
command-line short names for them; a setting the chosen method does not take is dropped with a
warning (or refused without distillation, or when it is no shared name at all); folders made
when those settings were top-level keys still accept the same relaunch."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf

from kdlab.checks import check_method_settings
from kdlab.cli_args import command_line, expand_shorthands
from kdlab.run_config import differences
from tests.helpers_compose import compose_train as _compose
from tests.helpers_sweep import results, run_train, tiny


def test_short_names_become_distill_settings_on_the_command_line():
    assert expand_shorthands(["alpha=0.3,0.5", "+temperature=4", "beta=null", "seed=1"]) == [
        "++distill.alpha=0.3,0.5",
        "++distill.temperature=4",
        "++distill.beta=null",
        "seed=1",
    ]
    untouched = ["distill.alpha=0.3", "mixup_alpha=1", "data.mixup_alpha=0.2", "alphas=1"]
    assert expand_shorthands(untouched) == untouched
    assert command_line(["kdlab.train", "+experiment=x", "alpha=0.5", "-m", "seed=0,1"]) == [
        "kdlab.train",
        "-m",
        "+experiment=x",
        "++distill.alpha=0.5",
        "seed=0,1",
    ]


def test_the_short_name_and_the_full_name_make_the_same_run(tmp_path):
    short = _compose(tmp_path, "+experiment=r50_r18_logit", *expand_shorthands(["alpha=0.3"]))
    full = _compose(tmp_path, "+experiment=r50_r18_logit", "distill.alpha=0.3")
    assert short.distill.alpha == full.distill.alpha == 0.3
    assert differences(short, full) == []
    assert short.run_tag == full.run_tag == "a0.3_T4_s0"
    for key in ("alpha", "temperature", "beta"):
        assert key not in full  # no top-level copy of a method setting


def test_experiments_set_their_methods_settings_under_distill(tmp_path):
    cfg = _compose(tmp_path, "+experiment=resnet56_resnet20")
    assert (cfg.distill.alpha, cfg.distill.temperature) == (0.9, 4)
    assert check_method_settings(cfg) == []
    feature = _compose(tmp_path, "+experiment=r50_r34_feature")
    assert (feature.distill.alpha, feature.distill.beta) == (0.5, 0.5)
    assert check_method_settings(feature) == []


def test_a_setting_the_method_does_not_take_is_dropped_with_a_warning(tmp_path, caplog):
    dkd = _compose(tmp_path, "+experiment=resnet56_resnet20", "distill=dkd")
    with caplog.at_level(logging.WARNING, logger="kdlab.checks"):
        assert check_method_settings(dkd) == ["alpha", "temperature"]
    assert "distill.alpha=0.9 is ignored: distill=dkd has no setting alpha" in caplog.text
    caplog.clear()
    quiet = _compose(
        tmp_path,
        "+experiment=resnet56_resnet20",
        "distill=dkd",
        "~distill.alpha",
        "~distill.temperature",
    )
    nulls = _compose(
        tmp_path,
        "+experiment=resnet56_resnet20",
        "distill=dkd",
        *expand_shorthands(["alpha=null", "temperature=null"]),
    )
    with caplog.at_level(logging.WARNING, logger="kdlab.checks"):
        assert check_method_settings(quiet) == []
        assert check_method_settings(nulls) == ["alpha", "temperature"]
    assert "ignored" not in caplog.text  # a null setting says nothing


def test_a_setting_without_distillation_or_unknown_to_the_method_is_refused(tmp_path):
    baseline = _compose(
        tmp_path, "+experiment=baseline_resnet20", *expand_shorthands(["alpha=0.5"])
    )
    assert baseline.run_tag == "s0"  # the launch itself still names its folder
    with pytest.raises(ValueError, match="alpha=0.5 is set, but this run trains without"):
        check_method_settings(baseline)
    typo = _compose(tmp_path, "+experiment=r56_cnn_logit", "+distill.alpah=0.5")
    with pytest.raises(
        ValueError, match=r"distill.alpah is not a setting of distill=logit .*alpha"
    ):
        check_method_settings(typo)


def _saved(cfg) -> dict:
    """``cfg`` as a folder saves it: interpolations as written, the derived labels by value."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    return tree | {"name": cfg.name, "method": cfg.method}


def test_a_folder_from_when_the_settings_were_top_level_keys_compares_equal(tmp_path):
    dkd = _compose(tmp_path, "+experiment=resnet56_resnet20", "distill=dkd", "~distill.alpha")
    old = _saved(dkd)
    del old["distill"]["temperature"]
    old |= {"alpha": None, "temperature": 4, "beta": None}  # the recipe's T, read by no loss
    assert differences(old, dkd) == []
    kd = _compose(tmp_path, "+experiment=resnet56_resnet20", "distill.alpha=0.5")
    old = _saved(kd)
    old["distill"] |= {"alpha": "${alpha}", "temperature": "${temperature}"}
    old |= {"alpha": 0.5, "temperature": 4, "beta": None}
    assert differences(old, kd) == []
    old["alpha"] = 0.3  # the folder trained another α: still refused
    assert differences(old, kd) == [("distill.alpha", 0.3, 0.5)]


@pytest.mark.slow
def test_a_run_with_a_method_that_ignores_alpha_records_null(tmp_path):
    from tests.helpers_sweep import make_world

    world = make_world(tmp_path)
    out = tmp_path / "run"
    command = ["+experiment=r56_cnn_logit", "teacher=cnn", "distill=dist", *tiny(world)]
    command += ["alpha=0.5", f"hydra.run.dir={out}"]
    proc = run_train(tmp_path, *command)
    res = results(out)
    assert (res["status"], res["method"], res["alpha"], res["temperature"]) == (
        "finished",
        "dist",
        None,
        None,
    )
    assert "alpha" not in res["method_params"]
    assert "distill.alpha=0.5 is ignored: distill=dist has no setting alpha" in (
        proc.stdout + proc.stderr
    )
    saved = OmegaConf.load(out / ".hydra" / "config.yaml")
    assert saved.distill.alpha == 0.5  # the folder keeps what was asked for
    again = run_train(tmp_path, *command)  # the same command: the folder's config matches
    assert "already finished" in again.stdout + again.stderr


def test_a_sweep_relaunched_with_the_full_names_knows_its_older_jobs(tmp_path):
    from kdlab.sweep.grid import never_started

    planned = ["+experiment=x", "~distill.alpha", "distill.temperature=4,2", "seed=0"]
    OmegaConf.save(
        {
            "hydra": {
                "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"},
                "overrides": {"task": planned},
            }
        },
        tmp_path / "multirun.yaml",
    )
    older = [["+experiment=x", "alpha=null", "temperature=4", "seed=0"]]
    missing = never_started(tmp_path, older)
    assert [r["overrides"] for r in missing] == [
        [
            "+experiment=x",
            "~distill.alpha=null",
            "distill.temperature=2",
            "seed=0",
        ]  # as Hydra plans it
    ]
    assert len(never_started(tmp_path, [["alpha=0.5", "temperature=4", "seed=0"]])) == 2
