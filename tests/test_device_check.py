"""scripts/device_check.sh: its plan, its refusal without CUDA, its time limits, its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from kdlab.bench.device_check import NO_CUDA, STEPS, TOTAL_BUDGET_S, Step, run_one

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "device_check.sh"


def _script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_dry_run_lists_every_step_with_its_budget_within_eight_minutes(tmp_path):
    proc = _script("--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    for step, line in zip(STEPS, lines, strict=False):
        assert line.split()[:3] == [step.name, str(step.budget_s), "s"]
    assert len(lines) == len(STEPS) + 1
    assert sum(s.budget_s for s in STEPS) <= TOTAL_BUDGET_S <= 8 * 60
    assert lines[-1].startswith(f"total: {len(STEPS)} steps")
    assert not (tmp_path / "device_check").exists()  # a dry run writes nothing


def test_dry_run_of_chosen_steps_and_an_unknown_step(tmp_path):
    proc = _script("--dry-run", "--only", "env,precision", cwd=tmp_path)
    assert [ln.split()[0] for ln in proc.stdout.splitlines()[:-1]] == ["env", "precision"]
    bad = _script("--dry-run", "--only", "env,warp", cwd=tmp_path)
    assert bad.returncode != 0 and "unknown step(s) ['warp']" in bad.stderr


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_without_cuda_it_stops_with_one_line_and_a_nonzero_exit(tmp_path):
    proc = _script(str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == NO_CUDA
    assert not (tmp_path / "out" / "device_check.json").exists()


def test_a_step_past_its_budget_is_killed_and_reported_as_timeout(tmp_path):
    a = Namespace(out=str(tmp_path / "out"), smoke_cpu=True, data_root=None)
    logs = tmp_path / "logs"
    logs.mkdir()
    t0 = time.perf_counter()
    entry = run_one(Step("pairs_bf16", 1, "x"), 1.0, a, tmp_path / "work", logs)
    assert time.perf_counter() - t0 < 30
    assert entry["status"] == "timeout" and entry["rc"] is None
    assert entry["result"] == {}  # killed before its first row: nothing to report, no crash


@pytest.mark.slow
def test_smoke_run_writes_json_and_markdown_of_the_steps_it_ran(tmp_path):
    out = tmp_path / "out"
    proc = _script(
        str(out),
        "--smoke-cpu",
        "--only",
        "env,precision",
        "--work",
        str(tmp_path / "work"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "device_check.json").read_text())
    assert report["mode"] == "smoke-cpu"
    assert [s["step"] for s in report["steps"]] == ["env", "precision"]
    assert all(s["status"] == "ok" for s in report["steps"])
    env = report["steps"][0]["result"]["info"]
    assert env["imports"]["kdlab.train"].endswith("train.py")
    rows = report["steps"][1]["result"]["rows"]
    assert {(r["pair"], r["method"]) for r in rows} == {
        (p, m)
        for p in ("resnet56-resnet20", "resnet32x4-resnet8x4")
        for m in ("baseline", "logit_viewcache", "dkd", "crd", "reviewkd")
    }
    for r in rows:  # the same weights and batch: bf16 autocast moves the loss by < 2 %
        assert r["ok"] and 0 <= r["rel_diff"] < 0.02 and r["loss_fp32"] > 0
    md = (out / "device_check.md").read_text()
    assert "| env | ok |" in md and "## bf16-mixed vs fp32" in md
    assert md.count("| resnet32x4-resnet8x4 |") == 5
