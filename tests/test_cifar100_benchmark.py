"""scripts/cifar100_benchmark.sh: ``--dry-run`` job counts for the whole table and for slices,
what its commands carry (method, published per-pair settings, released teachers, pass-through
arguments), errors, that every command composes, and one real tiny job end to end."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "cifar100_benchmark.sh"
PAIRS = {  # pair experiment: (teacher, student, DKD β, ReviewKD weight), published settings
    "resnet56_resnet20": ("resnet56", "resnet20", 2.0, 0.6),
    "resnet110_resnet20": ("resnet110", "resnet20", 8.0, 5.0),
    "resnet110_resnet32": ("resnet110", "resnet32", 2.0, 1.0),
    "resnet32x4_resnet8x4": ("resnet32x4", "resnet8x4", 8.0, 5.0),
    "wrn_40_2_wrn_16_2": ("wrn_40_2", "wrn_16_2", 6.0, 5.0),
    "wrn_40_2_wrn_40_1": ("wrn_40_2", "wrn_40_1", 6.0, 5.0),
    "vgg13_vgg8": ("vgg13", "vgg8", 6.0, 5.0),
    "vgg13_mobilenetv2": ("vgg13", "mobilenetv2", 6.0, 5.0),
    "r50_mobilenetv2": ("r50", "mobilenetv2", 8.0, 5.0),
    "r50_vgg8": ("r50", "vgg8", 8.0, 5.0),
    "resnet32x4_shufflev1": ("resnet32x4", "shufflev1", 8.0, 5.0),
    "resnet32x4_shufflev2": ("resnet32x4", "shufflev2", 8.0, 8.0),
    "wrn_40_2_shufflev1": ("wrn_40_2", "shufflev1", 8.0, 5.0),
}
METHODS = "kd fitnet at sp cc vid rkd pkt nst ft crd dkd dist reviewkd".split()
STUDENTS = sorted({s for _, s, _, _ in PAIRS.values()})


def dry_run(*args: str, **env: str) -> tuple[int, list[str]]:
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    lines = proc.stdout.strip().splitlines()
    return int(re.fullmatch(r"total: (\d+) jobs", lines[-1]).group(1)), lines[:-1]


def arg(cmd: str, key: str) -> str | None:
    m = re.search(rf"(?:^| ){re.escape(key)}=(\S+)", cmd)
    return m.group(1) if m else None


def test_whole_table_dry_run():
    experiments = {p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")}
    total, cmds = dry_run()
    # 13 pairs × 14 methods × 3 seeds + 9 student baselines × 3 seeds
    assert total == 13 * 14 * 3 + 9 * 3 == 573
    assert len(cmds) == 13 * 14 + 9
    assert sum(int(re.match(r"\[(\d+) jobs\]", c).group(1)) for c in cmds) == total
    for cmd in cmds:
        assert " -m kdlab.train -m +experiment=" in cmd and cmd.endswith(" seed=0,1,2")
        assert arg(cmd, "+experiment") in experiments
        assert "teacher.ckpt" not in cmd  # teachers from the store by default
    baselines = [c for c in cmds if "+experiment=baseline_" in c]
    assert sorted(arg(c, "+experiment") for c in baselines) == [f"baseline_{s}" for s in STUDENTS]
    runs = [c for c in cmds if c not in baselines]
    assert {(arg(c, "+experiment"), arg(c, "method")) for c in runs} == {
        (p, "logit" if m == "kd" else m) for p in PAIRS for m in METHODS
    }
    for cmd in runs:
        pair, method = arg(cmd, "+experiment"), arg(cmd, "method")
        assert arg(cmd, "distill") == method  # kdlab refuses a method other than the distill option
        _, _, beta, weight = PAIRS[pair]
        if method == "logit":  # KD as benchmarked: 0.1·CE + 0.9·KD at T 4
            assert (arg(cmd, "distill.alpha"), arg(cmd, "distill.temperature")) == ("0.9", "4")
        else:  # the pair's KD settings are removed, not left for a warning
            assert r" \~distill.alpha \~distill.temperature " in f"{cmd} "  # shell-quoted
        assert arg(cmd, "distill.terms.dkd.beta") == (str(beta) if method == "dkd" else None)
        assert arg(cmd, "distill.weights.reviewkd") == (
            str(weight) if method == "reviewkd" else None
        )


def test_a_slice_with_released_teachers_and_pass_through(tmp_path):
    (tmp_path / "cifar_teachers").mkdir()  # mdistiller's layout: DIR/cifar_teachers/<arch>_vanilla
    total, cmds = dry_run(
        "--launcher",
        "slurm",
        "trainer.max_epochs=3",
        PAIRS="resnet32x4_resnet8x4 r50_vgg8",
        METHODS="kd dkd",
        SEEDS="0,1",
        TEACHERS=str(tmp_path),
    )
    assert total == 2 * 2 + 2 * 2 * 2  # baselines resnet8x4 and vgg8, 2 pairs × 2 methods, 2 seeds
    assert [arg(c, "+experiment") for c in cmds] == [
        "baseline_resnet8x4",
        "baseline_vgg8",
        "resnet32x4_resnet8x4",
        "resnet32x4_resnet8x4",
        "r50_vgg8",
        "r50_vgg8",
    ]
    assert all(c.endswith("seed=0,1 hydra/launcher=slurm trainer.max_epochs=3") for c in cmds)
    base = tmp_path / "cifar_teachers"
    assert arg(cmds[2], "teacher.ckpt") == f"{base}/resnet32x4_vanilla/ckpt_epoch_240.pth"
    assert arg(cmds[4], "teacher.ckpt") == f"{base}/ResNet50_vanilla/ckpt_epoch_240.pth"
    assert "teacher.ckpt" not in cmds[0]
    # RepDistiller's layout (DIR/<arch>_vanilla), shared students run once, no baselines
    _, cmds = dry_run(PAIRS="vgg13_vgg8", METHODS="crd", TEACHERS="/models")
    assert arg(cmds[-1], "teacher.ckpt") == "/models/vgg13_vanilla/ckpt_epoch_240.pth"
    total, cmds = dry_run(PAIRS="resnet56_resnet20 resnet110_resnet20", METHODS="kd", SEEDS="0")
    assert total == 3 and [arg(c, "+experiment") for c in cmds][0] == "baseline_resnet20"
    assert dry_run(PAIRS="vgg13_vgg8", METHODS="kd", SEEDS="0", BASELINES="0")[0] == 1


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--launcher", "x"], {}, "--launcher must be basic, local or slurm"),
        (["--dry-run"], {"PAIRS": "r50_r18"}, "unknown pair 'r50_r18'"),
        (["--dry-run"], {"METHODS": "kd ab"}, "unknown method 'ab'"),
        ([], {"PAIRS": "vgg13_vgg8", "TEACHERS": "/no/such/dir"}, "vgg13_vanilla/ckpt_epoch_240"),
    ],
)
def test_bad_arguments_exit_2_before_anything_runs(args, env, message):
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": "false", **env},
    )
    assert proc.returncode == 2 and message in proc.stderr and not proc.stdout


def test_pair_experiments_name_the_scripts_settings():
    """Each pair experiment's comment states the DKD β and ReviewKD weight the script passes."""
    for pair, (t, s, beta, weight) in PAIRS.items():
        text = (REPO / "conf" / "experiment" / f"{pair}.yaml").read_text()
        assert f"  - baseline_{s}\n" in text and f"override /teacher: {t}\n" in text
        assert float(re.search(r"DKD β ([\d.]+)", text).group(1)) == beta
        assert float(re.search(r"ReviewKD weight ([\d.]+)", text).group(1)) == weight


def _compose(tmp: Path, overrides: list[str]):
    conf = REPO / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=[
                f"paths.root={tmp}",
                f"paths.output_dir={tmp / 'out'}",
                f"paths.log_dir={tmp / 'logs'}",
                *overrides,
            ],
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize("method", METHODS)
def test_every_command_composes_with_the_recipe(method, tmp_path):
    from kdlab.utils.resolvers import register

    register()
    _, cmds = dry_run(PAIRS="vgg13_mobilenetv2", METHODS=method, SEEDS="0", BASELINES="0")
    overrides = shlex.split(cmds[0].split(" -m kdlab.train -m ")[1])  # printed shell-quoted
    cfg = _compose(tmp_path, overrides)
    assert cfg.method == ("logit" if method == "kd" else method)
    assert cfg.hydra.runtime.choices.distill == cfg.method
    # the benchmark recipe, with the student's lr (0.01 for MobileNetV2)
    assert (cfg.data.name, cfg.data.batch_size, cfg.trainer.max_epochs) == ("cifar100", 64, 240)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov) == (0.01, 0.9, False)
    assert cfg.optim.weight_decay == 5e-4 and cfg.grad_clip is None
    assert list(cfg.scheduler.milestones) == [150, 180, 210] and cfg.scheduler.gamma == 0.1
    assert (cfg.teacher.arch, cfg.model._target_.rsplit(".", 1)[1]) == ("vgg13", "mobilenetv2")
    # run folders carry the method: different methods of a pair never share a sweep folder
    assert cfg.hydra.sweep.dir.split("/")[-2] == f"vgg13_mobilenetv2_{cfg.method}"
    with open_dict(cfg):
        del cfg["hydra"]
    loss = instantiate(cfg.distill)
    if method == "dkd":
        assert loss.terms["dkd"].beta == 6.0  # mdistiller configs/cifar100/dkd/vgg13_mv2.yaml
    if method == "reviewkd":
        assert loss.weights["reviewkd"] == 5.0
    if method == "kd":
        assert (loss.alpha, loss.temperature) == (0.9, 4)


@pytest.mark.slow
def test_one_tiny_job_with_a_released_teacher(tmp_path):
    """The script end to end on synthetic CIFAR-100: DKD resnet32x4 → resnet8x4 from a teacher
    file in mdistiller's layout (published parameter names, weights under "model"), then the
    report with --reference."""
    import torch

    from kdlab.data.synthetic import write_fake_cifar
    from kdlab.models.zoo.published import to_published_state
    from kdlab.models.zoo.resnet import resnet32x4

    write_fake_cifar(tmp_path / "data", "cifar100", 96, 32)
    ckpt = tmp_path / "dl" / "cifar_teachers" / "resnet32x4_vanilla" / "ckpt_epoch_240.pth"
    ckpt.parent.mkdir(parents=True)
    torch.manual_seed(0)
    state = to_published_state("resnet32x4", resnet32x4(num_classes=100).state_dict())
    torch.save({"model": state, "epoch": 240, "best_acc": 79.42}, ckpt)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDLAB_", "WANDB_", "SLURM_"))}
    env |= {
        "PYTHON": sys.executable,
        "PAIRS": "resnet32x4_resnet8x4",
        "METHODS": "dkd",
        "SEEDS": "0",
        "BASELINES": "0",
        "TEACHERS": str(tmp_path / "dl"),
        "OMP_NUM_THREADS": "1",
    }
    tiny = [
        f"data.root={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "data.val_size=32",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.accelerator=cpu",
        "logger=csv",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "fidelity.train_set=false",
    ]
    proc = subprocess.run(
        ["bash", str(SCRIPT), *tiny],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert proc.stdout.strip().splitlines()[-1] == "total: 1 jobs"
    (res,) = (tmp_path / "logs" / "multiruns" / "resnet32x4_resnet8x4_dkd").glob("*/*/results.json")
    assert res.parent.name.startswith("0_resnet32x4_resnet8x4_dkd_")
    data = json.loads(res.read_text())
    assert (data["status"], data["dataset"], data["teacher"], data["student"], data["method"]) == (
        "finished",
        "cifar100",
        "resnet32x4",
        "resnet8x4",
        "dkd",
    )
    assert data["method_params"]["terms"]["dkd"]["beta"] == 8.0
    from kdlab.report.__main__ import main

    out = tmp_path / "report"
    assert (
        main([str(tmp_path / "logs"), "--out", str(out), "--no-figures", "--reference", "cifar100"])
        == 0
    )
    md = (out / "results.md").read_text()
    assert re.search(r"\| resnet32x4 → resnet8x4 \| DKD \| .* \| 76\.32 \|", md)
