"""The SLURM launcher config composes and submitit builds the job array from it (no cluster):
the generated sbatch script carries one GPU per job, one task per device, the time limit, the
array throttle, the partition, and the pre-timeout SIGUSR1 that kdlab.slurm.SlurmRequeue
handles (Lightning's auto-requeue is off). Site settings come from the git-ignored
conf/local/default.yaml (template shipped). tests/test_slurm_cluster.py runs a real SLURM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kdlab.utils.resolvers import register

REPO = Path(__file__).resolve().parents[1]
register()


def _launcher(conf: Path, tmp: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=[
                "+experiment=r50_r18_logit",
                "hydra/launcher=slurm",
                f"hydra.sweep.dir={tmp / 'sweep'}",
                f"paths.root={tmp}",
                f"paths.output_dir={tmp}",
                "hydra.job.name=train",
                *overrides,
            ],
        )
    return cfg


@pytest.fixture
def fake_srun(fake_command):
    """submitit's SlurmExecutor refuses to start without ``srun`` on PATH; nothing runs it."""
    fake_command("srun", "exit 1\n")


def _executor(cfg):
    """An AutoExecutor configured exactly as hydra-submitit-launcher's ``launch()`` does it."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith("SlurmLauncher")
    executor = submitit.AutoExecutor(
        folder=params.pop("submitit_folder"),
        cluster="slurm",
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor


def _sbatch(cfg, jobs: int) -> str:
    """The sbatch script submitit would submit for a ``jobs``-task array."""
    slurm = _executor(cfg)._executor
    slurm.parameters["map_count"] = jobs  # what map_array sets
    return slurm._make_submission_file_text("python -m submitit.core._submit X", "uid")


def test_slurm_launcher_builds_a_one_gpu_job_array(tmp_path, fake_srun):
    cfg = _launcher(
        REPO / "conf",
        tmp_path,
        "hydra.launcher.partition=gpu",
        "hydra.launcher.array_parallelism=4",
    )
    text = _sbatch(cfg, jobs=27)
    for line in [
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --time=1440",
        "#SBATCH --array=0-26%4",
        "#SBATCH --partition=gpu",
        "#SBATCH --signal=USR1@300",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --job-name=r50_r18_logit",
    ]:
        assert line in text.splitlines(), line
    assert "--account" not in text and "--qos" not in text  # unset: not sent
    assert "srun" in text  # Lightning's SLURM environment needs the tasks started by srun


def test_ddp_jobs_ask_one_task_per_device(tmp_path, fake_srun):
    cfg = _launcher(
        REPO / "conf",
        tmp_path,
        "trainer=ddp",
        "trainer.devices=4",
        "hydra.launcher.gpus_per_node=4",
    )
    text = _sbatch(cfg, jobs=1)
    assert "#SBATCH --ntasks-per-node=4" in text and "#SBATCH --gpus-per-node=4" in text


def test_submitit_executor_accepts_the_launcher_parameters(tmp_path, fake_srun):
    cfg = _launcher(
        REPO / "conf", tmp_path, "hydra.launcher.account=proj", "hydra.launcher.qos=high"
    )
    p = _executor(cfg)._executor.parameters
    assert (p["gpus_per_node"], p["ntasks_per_node"], p["time"]) == (1, 1, 1440)
    assert (p["account"], p["qos"], p["array_parallelism"]) == ("proj", "high", 64)
    assert p["additional_parameters"] == {"signal": "USR1@300"}
    assert Path(str(_executor(cfg).folder)).parent == tmp_path / "sweep" / ".submitit"


def test_site_config_template_fills_the_launcher(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    shutil.copy(conf / "local" / "example.yaml.txt", conf / "local" / "default.yaml")
    cfg = _launcher(conf, tmp_path)
    assert (cfg.hydra.launcher.partition, cfg.hydra.launcher.account) == ("gpu", "my_project")
    assert "module load cuda/12.4" in cfg.hydra.launcher.setup
    cmd = _launcher(conf, tmp_path, "hydra.launcher.partition=other")  # the command line wins
    assert cmd.hydra.launcher.partition == "other"


def test_site_config_is_git_ignored_but_the_template_is_not():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0

    if subprocess.run(["git", "rev-parse"], cwd=REPO, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    assert ignored("conf/local/default.yaml")
    assert not ignored("conf/local/example.yaml.txt")


def test_lightning_slurm_environment_leaves_requeueing_to_kdlab(monkeypatch):
    """Lightning's own auto-requeue (hpc_ckpt mid-epoch, scontrol requeue from any process that
    gets SIGUSR1) is off: kdlab.slurm.SlurmRequeue requeues, once, in the training process."""
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    from kdlab.slurm import slurm_environment

    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    assert type(slurm_environment()) is LightningEnvironment  # off SLURM
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "r50_r18_logit")
    env = slurm_environment()
    assert isinstance(env, SLURMEnvironment)
    assert not env.auto_requeue and env.requeue_signal == signal.SIGUSR1


def test_submitit_requeue_resubmits_the_same_job():
    """A requeued job re-runs the launcher call with the same job number and overrides, i.e.
    the same Hydra output folder, where kdlab.train finds checkpoints/last.ckpt."""
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    launcher = SlurmLauncher()
    args = (["alpha=0.5", "seed=1"], "hydra.sweep.dir", 3, "job_id_for_3", {})
    delayed = launcher.checkpoint(*args)
    assert delayed.function is launcher and delayed.args == args
