"""Every experiment in conf/experiment composes and builds: data module, model, KD loss,
teacher (from a teacher store written here) and the Lightning system; plus the W&B naming
resolvers and the launcher/trainer config groups of the sweep machinery.

Uses Hydra's compose API (no subprocess); ``paths.*`` are overridden because ``${hydra:...}``
is not available outside a Hydra run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from kdlab.utils.resolvers import job_type, register, wandb_group, wandb_id

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
register()


def _compose(tmp: Path, *overrides: str, hydra_node: bool = False):
    """The run config as ``python -m kdlab.train`` would see it (``${hydra:}`` made available)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=[
                f"paths.root={tmp}",
                f"paths.output_dir={tmp / 'out'}",
                f"paths.log_dir={tmp / 'logs'}",
                f"data.root={tmp / 'data'}",
                *overrides,
            ],
        )
    HydraConfig.instance().set_config(cfg)
    if not hydra_node:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def _write_teachers(cfg) -> None:
    """Export a freshly initialised teacher for every store entry this config will read."""
    from kdlab.models.export import export_weights
    from kdlab.teachers import store_path

    t = cfg.teacher
    seeds = list(t.seeds) if t.get("seeds") else [t.seed]
    model_cfg = OmegaConf.to_container(t.model, resolve=True)
    model_cfg.pop("_partial_", None)
    for seed in seeds:
        path = store_path(t.store, t.dataset, t.arch, seed)
        if not path.exists():
            net = instantiate(t.model)()
            export_weights(net, path, model_cfg, dataset=t.dataset, seed=seed)


def test_experiments_exist():
    assert {"teacher_r34", "baseline_r18", "r50_r18_logit", "r50_r34_feature"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name, tmp_path_factory):
    from kdlab.train import build_system

    tmp = tmp_path_factory.getbasetemp() / "configs"  # one store shared by all experiments
    cfg = _compose(tmp, f"+experiment={name}")
    assert cfg.name == name, "an experiment's name must match its file (sweep folders use it)"
    OmegaConf.resolve(cfg)  # every interpolation resolves (precision, run tag, paths…)
    dm = instantiate(cfg.data)
    assert dm.num_classes == cfg.data.num_classes
    net = instantiate(cfg.model)
    assert net.num_classes == cfg.data.num_classes
    if cfg.get("distill") is not None:
        assert cfg.method not in ("teacher", "baseline")
        assert instantiate(cfg.distill) is not None
        _write_teachers(cfg)
        teacher = instantiate(cfg.teacher)
        assert not any(p.requires_grad for p in teacher.parameters())
        teachers = [teacher]
    else:
        assert cfg.method in ("teacher", "baseline")
        teachers = []
    big = max(sum(p.numel() for p in m.parameters()) for m in [net, *teachers]) > 30e6
    if not big:  # the whole system too (skipped for R101/ViT-B/R152 to keep the suite quick)
        system = build_system(cfg, net)
        assert (getattr(system, "teacher", None) is not None) == bool(teachers)
    assert job_type(cfg.method) in ("teacher", "baseline", "distill")


def test_sweep_groups_and_stable_ids():
    assert wandb_group(
        "r50_r18_logit", "RunMode.MULTIRUN", "/l/multiruns/x/2026-01-02_03-04-05", "/l/m/0_j"
    ) == ("r50_r18_logit_2026-01-02_03-04-05")
    assert wandb_group(
        "r50_r18_logit", "RunMode.RUN", "/l/multiruns/x/t", "/l/runs/x/a0.5_s0_t1"
    ) == ("r50_r18_logit_a0.5_s0_t1")
    assert wandb_id("/runs/a") == wandb_id("/runs/a") != wandb_id("/runs/b")
    assert [job_type(m) for m in ("teacher", "baseline", "logit", "feature")] == [
        "teacher",
        "baseline",
        "distill",
        "distill",
    ]


def test_wandb_logger_config_names_the_run(tmp_path):
    cfg = _compose(
        tmp_path,
        "+experiment=r50_r18_logit",
        "distill.alpha=0.3",
        "distill.temperature=4",
        "seed=2",
    )
    wb = cfg.logger.wandb
    assert wb.name == "r50_r18_logit_a0.3_T4_s2"
    assert (wb.job_type, wb.mode, wb.resume) == ("distill", "offline", "allow")
    assert wb.id == wandb_id(str(tmp_path / "out"))
    assert {"r50_r18_logit", "logit", "distill"} <= set(wb.tags)


@pytest.mark.parametrize("group", ["trainer=ddp", "trainer=slurm", "hydra/launcher=local"])
def test_sweep_config_groups_compose(group, tmp_path):
    cfg = _compose(tmp_path, "+experiment=baseline_r18", group)
    if group == "trainer=ddp":
        assert (cfg.trainer.strategy, cfg.trainer.devices) == ("ddp", 2)
        assert cfg.trainer.use_distributed_sampler is True and cfg.trainer.sync_batchnorm is False
    if group == "trainer=slurm":
        (env,) = instantiate(cfg.trainer.plugins)
        from lightning.fabric.plugins.environments import LightningEnvironment

        assert isinstance(env, LightningEnvironment)  # off SLURM: the plain environment
    assert cfg.trainer.deterministic is True  # the groups extend the default trainer
