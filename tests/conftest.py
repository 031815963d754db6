"""Shared fixtures: tiny datasets in torchvision's layout and a runner for ``python -m kdlab.train``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from kdlab.data.synthetic import write_fake_cifar

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HAS_SHARED = (SHARED_DATA / "cifar-10-batches-py" / "test_batch").is_file()
needs_shared = pytest.mark.skipif(
    not HAS_SHARED, reason="real CIFAR-10 subset ../shared/data absent"
)


@pytest.fixture(autouse=True)
def no_hydra_config_left_behind():
    """Tests that compose a config publish it as Hydra's global run config; clear it afterwards,
    or a later test in the same worker would read another test's ``distill=`` choice."""
    yield
    HydraConfig.instance().cfg = None


@pytest.fixture
def fake_command(tmp_path, monkeypatch):
    """``fake_command(name, body)`` puts a shell script ``name`` first on PATH for this test
    (a stand-in for ``srun``, ``scontrol``, ``squeue`` …)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def put(name: str, body: str) -> Path:
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}")
        script.chmod(0o755)
        return script

    return put


@pytest.fixture(scope="session")
def tiny_cifar10(tmp_path_factory) -> Path:
    """400 train / 100 test synthetic CIFAR-10 images (root folder for data.root)."""
    root = tmp_path_factory.mktemp("cifar10")
    write_fake_cifar(root, "cifar10", n_train=400, n_test=100, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_cifar100(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar100")
    write_fake_cifar(root, "cifar100", n_train=400, n_test=100, seed=0)
    return root


def tiny_overrides(data_root: Path, out: Path, logs: Path | None = None) -> list[str]:
    """Overrides for a seconds-long run: 1 epoch of 2 batches of 16, 1 val and 1 test batch."""
    return [
        f"data.root={data_root}",
        "data.val_size=50",
        "data.batch_size=16",
        "data.eval_batch_size=50",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.log_every_n_steps=1",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        f"paths.log_dir={logs or out.parent / 'logs'}",
        f"hydra.run.dir={out}",
    ]


def run_train(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m kdlab.train ARGS`` in a subprocess with W&B offline and quiet."""
    env = dict(os.environ)
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(cwd),
        WANDB_DISABLE_GIT="true",
        PYTHONWARNINGS="ignore",
        HYDRA_FULL_ERROR="0",
        KDLAB_CACHE=str(cwd / "cache"),  # memory-format choices shared by this test's runs
        # test-only callbacks (tests/helpers_*.py) importable by the run
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO / "tests"), env.get("PYTHONPATH")) if p),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kdlab.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kdlab.train failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())
