"""Shared pieces of the sweep/resume/DDP integration tests: tiny data, a teacher, a runner.

Every run goes through ``python -m kdlab.train`` in a subprocess (the real entry point, with
Hydra's multirun and launchers), on a 96/64-image synthetic CIFAR-10 in torchvision's layout,
with the 2-conv CNN, batch 16 and 1–2 batches per stage, so a run costs ~6 s of which most is
Python start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
N_TRAIN, N_TEST, VAL, BATCH = 96, 64, 32, 16


def make_world(tmp: Path) -> dict[str, Path]:
    """Synthetic CIFAR-10 under ``tmp/data`` and a CNN teacher in ``tmp/logs/teachers``."""
    from kdlab.data.synthetic import write_fake_cifar

    data, logs = tmp / "data", tmp / "logs"
    write_fake_cifar(data, "cifar10", N_TRAIN, N_TEST)
    write_cnn_teacher(logs / "teachers")
    return {"root": tmp, "data": data, "logs": logs}


def write_cnn_teacher(store: Path, dataset: str = "cifar10", seed: int = 0) -> Path:
    """A (randomly initialised) CNN teacher in the store layout; enough to distil from."""
    import torch

    from kdlab.models.cnn import small_cnn
    from kdlab.models.export import export_weights
    from kdlab.teachers import store_path

    torch.manual_seed(seed)
    net = small_cnn(num_classes=10, hidden=256)
    cfg = {"_target_": "kdlab.models.cnn.small_cnn", "num_classes": 10, "hidden": 256}
    return export_weights(
        net, store_path(store, dataset, "cnn", seed), cfg, dataset=dataset, seed=seed
    )


def tiny(world: dict[str, Path], epochs: int = 1, logger: str = "csv") -> list[str]:
    """Overrides that make any experiment a few-second CPU run on the synthetic data."""
    return [
        f"data.root={world['data']}",
        f"paths.log_dir={world['logs']}",
        f"data.val_size={VAL}",
        f"data.batch_size={BATCH}",
        f"data.eval_batch_size={BATCH}",
        "data.num_workers=0",
        f"trainer.max_epochs={epochs}",
        "trainer.limit_train_batches=2",
        "trainer.accelerator=cpu",
        f"logger={logger}",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]


def env(tmp: Path) -> dict[str, str]:
    """W&B offline and silent, test helpers importable, no site paths leaking in."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("KDLAB_", "WANDB_", "SLURM_"))}
    out |= {
        "PYTHONPATH": os.pathsep.join([str(TESTS), out.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp / "wandb"),
        "HYDRA_FULL_ERROR": "1",
        "KDLAB_CACHE": str(tmp / "cache"),  # memory-format choices shared by this test's runs
    }
    return out


def run_train(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m kdlab.train ARGS`` from ``tmp``; on an unexpected exit status, show its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "kdlab.train", *args],
        cwd=tmp,
        env=env(tmp),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def results(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "results.json").read_text())
