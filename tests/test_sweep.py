"""Hydra multirun sweeps end to end: job folders, failure isolation, summary, W&B, scripts.

Real ``python -m kdlab.train -m`` subprocesses on a tiny synthetic dataset: a 2 α × 2 seed
sweep with the basic launcher and W&B offline, a 2-job sweep with the submitit local launcher,
and a sweep with one invalid α that must fail alone. The summary logic and the scripts'
``--dry-run`` job counts are checked without training.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdlab.sweep import collect_jobs, record_failure, summarize
from tests.helpers_sweep import REPO, results, run_train, tiny
from tests.helpers_wandb import read_offline_run

DISTIL = ["+experiment=r56_cnn_logit", "teacher=cnn"]  # the notebook pair, with a CNN teacher


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.helpers_sweep import make_world

    return make_world(tmp_path_factory.mktemp("sweep"))


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())


@pytest.mark.slow
def test_basic_sweep_alpha_by_seed_with_wandb(world):
    sweep = world["root"] / "sweep_basic"
    proc = run_train(
        world["root"],
        "-m",
        *DISTIL,
        *tiny(world, logger="wandb"),
        "alpha=0.3,0.5",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = _job_dirs(sweep)
    assert [j.name for j in jobs] == [
        "0_r56_cnn_logit_a0.3_T10_s0",
        "1_r56_cnn_logit_a0.3_T10_s1",
        "2_r56_cnn_logit_a0.5_T10_s0",
        "3_r56_cnn_logit_a0.5_T10_s1",
    ]
    groups, ids = set(), set()
    for job, (alpha, seed) in zip(jobs, [(0.3, 0), (0.3, 1), (0.5, 0), (0.5, 1)], strict=True):
        res = results(job)
        assert (res["status"], res["alpha"], res["seed"]) == ("finished", alpha, seed)
        assert res["output_dir"] == str(job)
        (wb,) = (job / "wandb").glob("offline-run-*")  # one W&B run per job, in its own folder
        run = read_offline_run(wb)
        assert (run["config"]["alpha"], run["config"]["seed"]) == (alpha, seed)
        assert run["config"]["distill"]["alpha"] == alpha  # the resolved config, not a template
        assert run["job_type"] == "distill"
        assert run["name"] == job.name.split("_", 1)[1]  # method, α, T and seed in the name
        assert "distill" in run["tags"] and "logit" in run["tags"]
        groups.add(run["group"])
        ids.add(run["id"])
    assert groups == {f"r56_cnn_logit_{sweep.name}"}  # one group for the whole sweep
    assert len(ids) == 4
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["total"], summary["finished"], summary["failed"]) == (4, 4, 0)
    assert "4 finished, 0 failed, 0 missing of 4" in proc.stdout


@pytest.mark.slow
def test_failing_job_does_not_hide_the_others(world):
    sweep = world["root"] / "sweep_fail"
    proc = run_train(
        world["root"],
        "-m",
        *DISTIL,
        *tiny(world),
        "alpha=0.5,1.5",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    assert proc.returncode != 0, "a sweep with a failed job must exit non-zero"
    ok, bad = _job_dirs(sweep)
    assert results(ok)["status"] == "finished" and results(ok)["test_acc_best"] is not None
    failed = results(bad)
    assert failed["status"] == "failed" and failed["alpha"] == 1.5
    assert failed["error"].startswith("ValueError: alpha=1.5 is outside [0, 1]")
    assert (failed["experiment"], failed["seed"], failed["temperature"]) == ("r56_cnn_logit", 0, 10)
    assert "Traceback" in (bad / "error.txt").read_text()
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [(j["job"], j["status"]) for j in summary["jobs"]] == [
        (ok.name, "finished"),
        (bad.name, "failed"),
    ]
    assert "1 finished, 1 failed" in proc.stdout


@pytest.mark.slow
def test_single_run_failure_still_raises(world):
    proc = run_train(world["root"], *DISTIL, *tiny(world), "alpha=1.5", check=False)
    assert proc.returncode != 0
    assert "alpha=1.5 is outside [0, 1]" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_submitit_local_launcher_sweep_and_a_killed_job(world):
    sweep = world["root"] / "sweep_local"
    # job 2 dies outright (os._exit, as an OOM kill would): no results.json, no Python cleanup;
    # submitit's result collection then raises, and the summary is written at exit instead
    probe = "+callbacks.k._target_=helpers_resume.ProbeStart,helpers_resume.CountTestSamples,helpers_resume.HardExit"
    proc = run_train(
        world["root"],
        "-m",
        *DISTIL,
        *tiny(world),
        probe,
        "hydra/launcher=local",
        "hydra.launcher.cpus_per_task=1",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    jobs = _job_dirs(sweep)
    assert len(jobs) == 3 and (sweep / ".submitit").is_dir()  # it really went through submitit
    assert [results(j)["status"] for j in jobs[:2]] == ["finished", "finished"]
    assert not (jobs[2] / "results.json").exists()
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["finished", "finished", "missing"]
    assert "2 finished, 0 failed, 1 missing of 3" in proc.stdout


def test_summary_lists_missing_and_failed_jobs(tmp_path):
    from omegaconf import OmegaConf

    for i, status in enumerate(["finished", "failed", None]):
        job = tmp_path / f"{i}_x_a0.5_s{i}"
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create([f"seed={i}"]), job / ".hydra" / "overrides.yaml")
        if status == "finished":
            (job / "results.json").write_text(json.dumps({"status": "finished", "seed": i}))
        elif status == "failed":
            cfg = OmegaConf.create({"name": "x", "alpha": 0.5, "seed": i, "data": {"name": "c"}})
            record_failure(cfg, RuntimeError("boom"), job)
    (tmp_path / "not_a_job").mkdir()
    rows = collect_jobs(tmp_path)
    assert [(r["status"], r["overrides"]) for r in rows] == [
        ("finished", ["seed=0"]),
        ("failed", ["seed=1"]),
        ("missing", ["seed=2"]),
    ]
    assert rows[1]["error"] == "RuntimeError: boom"
    summary = summarize(tmp_path)
    assert (summary["finished"], summary["failed"], summary["missing"]) == (1, 1, 1)
    assert json.loads((tmp_path / "sweep_summary.json").read_text())["total"] == 3


def _dry_run(script: str, *args: str, **env: str) -> tuple[int, list[str]]:
    import os

    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / script), "--dry-run", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    lines = proc.stdout.strip().splitlines()
    return int(re.fullmatch(r"total: (\d+) jobs", lines[-1]).group(1)), lines[:-1]


def test_run_ablation_dry_run_counts_the_grid():
    experiments = {p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")}
    total, cmds = _dry_run("run_ablation.sh", "--launcher", "slurm", "trainer.max_epochs=3")
    # 4 pairs × (logit 3 α × 3 T + feature 3 α) × 3 seeds + 2 baselines × 3 seeds
    assert total == 4 * (9 + 3) * 3 + 2 * 3 == 150
    assert len(cmds) == 4 * 2 + 2
    for cmd in cmds:
        assert " -m kdlab.train -m +experiment=" in cmd
        assert cmd.endswith("hydra/launcher=slurm trainer.max_epochs=3")  # extra args pass through
        assert re.search(r"\+experiment=(\S+)", cmd).group(1) in experiments
    assert sum(int(re.match(r"\[(\d+) jobs\]", c).group(1)) for c in cmds) == total
    assert _dry_run("run_ablation.sh", SEEDS="0,1,2,3,4")[0] == 4 * 12 * 5 + 2 * 5


def test_train_teachers_dry_run_counts_every_teacher():
    total, cmds = _dry_run("train_teachers.sh", "--launcher", "local")
    assert total == 3 * 3 + 5 + 2  # r34/r50/r101 × 3 seeds, preresnet20 × 5, r56 × 2 datasets
    assert all(c.split()[-1] == "hydra/launcher=local" for c in cmds)
    bad = subprocess.run(["bash", str(REPO / "scripts" / "train_teachers.sh"), "--launcher", "x"])
    assert bad.returncode == 2


def test_dashboard_panel_set_covers_the_standard_views():
    from kdlab.dashboard import panel_spec

    panels = panel_spec()
    metrics = {m for p in panels for m in (*p.y, *p.columns)}
    assert {
        "val/acc_best",
        "val/agreement",
        "val/kl",
        "train/grad_norm",
        "train/loss_kd",
    } <= metrics
    (grid,) = [p for p in panels if p.kind == "parallel"]
    assert grid.columns[:2] == ("alpha", "temperature")  # val acc by α × T


def test_dashboard_without_reports_api_lists_panels_and_fails(monkeypatch, capsys):
    from kdlab import dashboard

    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)  # import fails as if missing
    assert dashboard.main(["--entity", "e", "--group", "g"]) == 2
    out = capsys.readouterr()
    assert "val acc by α × T" in out.out and "pip install 'wandb[workspaces]'" in out.err
    assert dashboard.main(["--entity", "e", "--group", "g", "--list"]) == 0


def test_dashboard_builds_report_with_the_reports_api(monkeypatch):
    """The translation to the reports API, against a recording stand-in (no W&B contact)."""
    import types

    from kdlab import dashboard

    made = []

    def factory(kind):
        def build(**kw):
            made.append((kind, kw))
            return types.SimpleNamespace(kind=kind, save=lambda: None, url="u", **kw)

        return build

    names = [
        "Report",
        "PanelGrid",
        "Runset",
        "LinePlot",
        "ScatterPlot",
        "ParallelCoordinatesPlot",
        "ParallelCoordinatesPlotColumn",
    ]
    v2 = types.SimpleNamespace(**{n: factory(n) for n in names})
    monkeypatch.setitem(sys.modules, "wandb_workspaces", types.ModuleType("wandb_workspaces"))
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports", types.SimpleNamespace(v2=v2))
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", v2)
    report = dashboard.build_report("ent", "kdlab", "r50_r18_logit_2026-01-01_00-00-00")
    assert report.kind == "Report" and report.entity == "ent"
    (runset,) = [kw for k, kw in made if k == "Runset"]
    assert runset["filters"] == "Group = 'r50_r18_logit_2026-01-01_00-00-00'"
    cols = [kw["metric"] for k, kw in made if k == "ParallelCoordinatesPlotColumn"]
    assert cols == ["c::alpha", "c::temperature", "c::seed", "s::val/acc_best"]
    lines = [kw["y"] for k, kw in made if k == "LinePlot"]
    assert ["train/loss", "train/loss_ce", "train/loss_kd"] in lines and ["val/kl"] in lines
