"""A run's method is its ``distill=`` option: ``distill=dkd`` alone records dkd and names the
folders after it; a ``method=`` that agrees is accepted, one that disagrees is refused; configs
of older folders, which wrote the method out, still compare equal."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf, open_dict

from kdlab.checks import check_method
from kdlab.run_config import differences
from tests.helpers_compose import compose_train as _compose


@pytest.mark.parametrize(
    "overrides, method",
    [
        (["+experiment=resnet56_resnet20", "distill=dkd"], "dkd"),
        (["+experiment=resnet56_resnet20"], "logit"),
        (["+experiment=r56_cnn_logit", "distill=dist"], "dist"),
        (["+experiment=baseline_resnet20"], "baseline"),
        (["+experiment=teacher_resnet56"], "teacher"),
    ],
)
def test_the_method_is_the_distill_option(tmp_path, overrides, method):
    cfg = _compose(tmp_path, *overrides)
    assert cfg.method == method
    check_method(cfg)


def test_sweep_folders_are_named_after_the_distill_option(tmp_path):
    cfg = _compose(tmp_path, "+experiment=resnet56_resnet20", "distill=dkd")
    assert "resnet56_resnet20_dkd" in str(cfg.hydra.sweep.dir)  # resolved while Hydra launches
    with open_dict(cfg):
        del cfg["hydra"]
    assert cfg.method == "dkd"  # and inside the run, from Hydra's runtime config


def test_an_agreeing_method_is_accepted_and_a_disagreeing_one_refused(tmp_path):
    check_method(_compose(tmp_path, "+experiment=resnet56_resnet20", "distill=dkd", "method=dkd"))
    cfg = _compose(tmp_path, "+experiment=resnet56_resnet20", "distill=dkd", "method=logit")
    with pytest.raises(ValueError, match="method=logit but distill=dkd"):
        check_method(cfg)


def test_an_older_folder_that_wrote_the_method_out_compares_equal(tmp_path):
    cfg = _compose(tmp_path, "+experiment=resnet56_resnet20")
    with open_dict(cfg):
        del cfg["hydra"]
    old = OmegaConf.to_container(cfg, resolve=False)
    old |= {"method": "logit", "name": "resnet56_resnet20"}  # as older kdlab wrote them out
    assert differences(old, cfg) == []
    old["name"] = "resnet56_resnet20_b"
    assert [d[0] for d in differences(old, cfg)] == ["name"]


def test_one_folder_rule_names_every_experiment(tmp_path):
    cases = {
        ("+experiment=resnet56_resnet20",): "resnet56_resnet20_logit",
        ("+experiment=resnet56_resnet20", "distill=dkd"): "resnet56_resnet20_dkd",
        ("+experiment=r56_cnn_logit",): "r56_cnn_logit",
        ("+experiment=r56_cnn_logit", "distill=dist"): "r56_cnn_logit_dist",
        ("+experiment=baseline_cnn",): "baseline_cnn",
        ("+experiment=teacher_resnet56",): "teacher_resnet56",
    }
    for overrides, folder in cases.items():
        cfg = _compose(tmp_path, *overrides)
        assert cfg.run_name == folder
        assert f"/multiruns/{folder}/" in str(cfg.hydra.sweep.dir)


def test_a_sweep_folder_of_an_older_kdlab_accepts_the_same_relaunch(tmp_path):
    from kdlab.run_config import ConfigChanged
    from kdlab.sweep.grid import check_sweep_config

    cfg = _compose(tmp_path, "+experiment=baseline_resnet20", "seed=0")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    old = cfg.copy()
    old.method, old.name = "baseline", "baseline_resnet20"  # older kdlab wrote the values out
    OmegaConf.save(old, sweep / "multirun.yaml")
    check_sweep_config(cfg, sweep)
    old.method = "logit"
    OmegaConf.save(old, sweep / "multirun.yaml")
    with pytest.raises(ConfigChanged, match="method: 'logit' → 'baseline'"):
        check_sweep_config(cfg, sweep)
