"""Every KD method in conf/distill keeps the contract that lets the zoo grow without touching
the core: a real `python -m kdlab.train -m` sweep over one of its own settings trains, records
the settings it used in results.json, and lands in two folders and two report groups. A toy
method written outside the repository (its own module and config, nothing else) does the same.
"""

from __future__ import annotations

import json

import pytest
import yaml

from kdlab.report.build import make_report
from tests.helpers_sweep import REPO, make_world, results, run_train, tiny

pytestmark = pytest.mark.slow
METHODS = sorted(p.stem for p in (REPO / "conf" / "distill").glob("*.yaml"))
LEFT_TO_EXPERIMENT = {"alpha": 0.5, "temperature": 4, "beta": 0.5}  # null in logit/feature
PAIR = ["data=cifar100", "model=resnet8", "teacher=resnet14"]  # a tiny benchmark pair


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny CIFAR-100 and a resnet14 teacher (random weights: enough to distil from)."""
    import torch

    from kdlab.data.synthetic import write_fake_cifar
    from kdlab.models.export import export_weights
    from kdlab.models.zoo.resnet import resnet14
    from kdlab.teachers import store_path

    tmp = tmp_path_factory.mktemp("contract")
    world = {"root": tmp, "data": tmp / "data", "logs": tmp / "logs"}
    write_fake_cifar(world["data"], "cifar100", n_train=96, n_test=32)
    torch.manual_seed(0)
    cfg = {"_target_": "kdlab.models.zoo.resnet.resnet14", "num_classes": 100}
    store = store_path(world["logs"] / "teachers", "cifar100", "resnet14", 0)
    export_weights(resnet14(100), store, cfg, dataset="cifar100", seed=0)
    return world


def sweep_setting(method: str) -> tuple[str, list[float]]:
    """A setting of the method's own config and two valid values of it: the weight of its
    first weighted term that is not CE (halved), else its distillation weight α."""
    cfg = yaml.safe_load((REPO / "conf" / "distill" / f"{method}.yaml").read_text())
    weights = cfg.get("weights") or {}
    own = [k for k, w in weights.items() if k != "ce" and w]
    if own:
        w = float(weights[own[0]])
        return f"distill.weights.{own[0]}", [w, w / 2]
    assert "alpha" in cfg, f"conf/distill/{method}.yaml has neither weights nor alpha to sweep"
    return "distill.alpha", [0.3, 0.6]


def shared_overrides(method: str, swept: str) -> list[str]:
    """Values for the settings a method's config leaves null (an experiment sets them), but
    the swept one."""
    cfg = yaml.safe_load((REPO / "conf" / "distill" / f"{method}.yaml").read_text())
    return [
        f"distill.{k}={v}"
        for k, v in LEFT_TO_EXPERIMENT.items()
        if k in cfg and cfg[k] is None and f"distill.{k}" != swept
    ]


def lookup(params: dict, dotted: str):
    for part in dotted.split("."):
        params = params[part]
    return params


@pytest.mark.parametrize("method", METHODS)
def test_every_method_sweeps_records_its_settings_and_reports_apart(world, method):
    key, values = sweep_setting(method)
    sweep = world["root"] / f"sweep_{method}"
    run_train(
        world["root"],
        "-m",
        *PAIR,
        f"distill={method}",
        f"method={method}",
        "name=contract",
        *shared_overrides(method, key),
        *tiny(world),
        "trainer.limit_train_batches=1",
        f"{key}={','.join(map(str, values))}",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert len(jobs) == 2 and jobs[0].name.split("_", 1)[1] != jobs[1].name.split("_", 1)[1]
    used = []
    for job in jobs:
        res = results(job)
        assert res["status"] == "finished" and res["method"] == method
        assert res["method_params"] and res["method_label"]
        json.dumps(res["method_params"])
        used.append(lookup(res["method_params"], key.removeprefix("distill.")))
        if key == "distill.alpha":  # the flat key existing scripts read is the value that trained
            assert res["alpha"] == used[-1]
    assert sorted(used) == sorted(values)
    report = make_report([sweep], world["root"] / f"report_{method}", figures=False)
    assert len([g for g in report.groups.values() if g.method == method]) == 2


TOY_LOSS = '''
"""A toy method: the student's mean squared logit distance to the teacher, to a power."""

import torch

from kdlab.distill.base import KDLoss


class ToyKD(KDLoss):
    short_names = {"gamma": "g"}

    def __init__(self, gamma: float = 1.0, weight: float = 0.5) -> None:
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"gamma={gamma} must be > 0")
        self.gamma, self.weight = float(gamma), float(weight)

    def forward(self, s_logits, t_logits, targets, s_feats=None, t_feats=None, index=None):
        ce = torch.nn.functional.cross_entropy(s_logits.float(), targets)
        dist = (s_logits.float() - t_logits.float()).pow(2).mean().pow(self.gamma)
        return {"loss": ce + self.weight * dist, "ce": ce.detach(), "toy": dist.detach()}
'''


def test_a_new_method_is_its_module_and_config_only(tmp_path):
    """A method added outside kdlab (its module on PYTHONPATH, its config on Hydra's search
    path) trains, is recorded, tagged, swept and reported without any other file changing."""
    world = make_world(tmp_path)
    (tmp_path / "toy_method.py").write_text(TOY_LOSS)
    conf = tmp_path / "conf" / "distill"
    conf.mkdir(parents=True)
    (conf / "toy.yaml").write_text("_target_: toy_method.ToyKD\ngamma: 1.0\nweight: 0.5\n")
    sweep = tmp_path / "toy_sweep"
    run_train(
        tmp_path,
        "-m",
        "+experiment=r56_cnn_logit",
        "teacher=cnn",
        "distill=toy",
        *tiny(world),
        "distill.gamma=1,2",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert [j.name for j in jobs] == ["0_r56_cnn_logit_toy_g1_s0", "1_r56_cnn_logit_toy_g2_s0"]
    for job, gamma in zip(jobs, (1.0, 2.0), strict=True):
        res = results(job)
        assert res["method"] == "toy" and res["method_params"] == {"gamma": gamma, "weight": 0.5}
        assert res["method_label"] == f"gamma={gamma:g}"
        header = (job / "csv" / "metrics.csv").read_text().splitlines()[0]
        assert "train/loss_toy" in header.split(",") or "train/loss_toy_epoch" in header
    report = make_report([sweep], tmp_path / "report", figures=False)
    toy = [g for g in report.groups.values() if g.method == "toy"]
    assert sorted(g.params["gamma"] for g in toy) == [1.0, 2.0]
