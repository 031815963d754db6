"""Two identical short runs of ``python -m kdlab.train`` must end with identical weights.

``trainer.deterministic=true`` (the default) promises bitwise-reproducible runs; on a CPU the
tests check it, on a GPU only a GPU can. The check runs the same distillation twice, one after
the other (so the second reads the first's remembered memory-format choice, as any later run
on that machine does), each for a fixed number of optimiser steps, and compares every tensor
of the two ``last.ckpt`` state dicts bit for bit, and the two results.json metrics.

The run is the benchmark pair resnet56 → resnet20 with logit KD (``+experiment=resnet56_resnet20``)
on CIFAR-10: the real subset when ``data_root`` holds ``cifar-10-batches-py``, else synthetic
images written in the same layout; the teacher is a randomly initialised resnet56 saved as a
plain state dict (its values do not matter for determinism).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

METRICS = ("val_acc_best", "test_acc_best", "test_acc_final", "test_nll", "test_kl")


def prepare_inputs(
    work: Path, data_root: str | None, n_train: int, n_test: int
) -> tuple[Path, Path]:
    """The data root the runs read and a random resnet56 teacher file (10 classes)."""
    import torch

    from kdlab.data.synthetic import write_fake_cifar
    from kdlab.models.zoo import build

    if data_root and (Path(data_root) / "cifar-10-batches-py").is_dir():
        root = Path(data_root)
    else:
        root = work / "data"
        if not (root / "cifar-10-batches-py").is_dir():
            write_fake_cifar(root, "cifar10", n_train=n_train, n_test=n_test)
    teacher = work / "teacher_resnet56_random.pt"
    torch.manual_seed(0)
    torch.save(build("resnet56", 10).state_dict(), teacher)
    return root, teacher


def train_command(
    root: Path,
    teacher: Path,
    run_dir: Path,
    steps: int,
    batch: int,
    val_size: int,
    accelerator: str,
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kdlab.train",
        "+experiment=resnet56_resnet20",
        "data=cifar10",
        f"data.root={root}",
        "data.download=false",
        "data.verify=structure",
        f"data.val_size={val_size}",
        f"data.batch_size={batch}",
        f"teacher.ckpt={teacher}",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={steps}",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.deterministic=true",
        f"trainer.accelerator={accelerator}",
        "fidelity.train_set=false",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    ]


def compare_checkpoints(a: Path, b: Path) -> dict[str, Any]:
    """Bitwise comparison of two checkpoints' state dicts."""
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=False)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=False)["state_dict"]
    differing, worst = [], 0.0
    for key in sorted(set(sa) | set(sb)):
        if key not in sa or key not in sb:
            differing.append(key)
            continue
        x, y = sa[key], sb[key]
        if x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y):
            differing.append(key)
            if x.shape == y.shape and x.is_floating_point():
                worst = max(worst, float((x.double() - y.double()).abs().max()))
    return {
        "tensors": len(set(sa) | set(sb)),
        "differing": len(differing),
        "differing_first": differing[:10],
        "max_abs_diff": worst,
    }


def determinism_check(
    work: Path,
    data_root: str | None = None,
    steps: int = 50,
    batch: int = 64,
    accelerator: str = "auto",
    smoke: bool = False,
) -> dict[str, Any]:
    """Run the same short distillation twice and compare the weights and metrics."""
    work.mkdir(parents=True, exist_ok=True)
    n_train, n_test, val = (300, 64, 50) if smoke else (3400, 256, 200)
    root, teacher = prepare_inputs(work, data_root, n_train, n_test)
    env = os.environ | {
        "KDLAB_LOGS": str(work / "logs"),
        "KDLAB_TEACHERS": str(work / "teachers"),
        "KDLAB_CACHE": str(work / "cache"),
        "WANDB_MODE": "disabled",
    }
    out: dict[str, Any] = {
        "name": "determinism",
        "kind": "determinism",
        "steps": steps,
        "batch": batch,
        "data_root": str(root),
        "runs": [],
    }
    for i in (1, 2):
        run_dir = work / f"run{i}"
        cmd = train_command(root, teacher, run_dir, steps, batch, val, accelerator)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        run = {
            "dir": str(run_dir),
            "rc": proc.returncode,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        res_path = run_dir / "results.json"
        if proc.returncode != 0 or not res_path.is_file():
            run["error"] = (proc.stderr or proc.stdout)[-2000:]
            out["runs"].append(run)
            out |= {"identical": False, "error": f"run {i} failed (rc {proc.returncode})"}
            return out
        res = json.loads(res_path.read_text())
        run |= {k: res.get(k) for k in METRICS + ("status", "channels_last", "epochs_trained")}
        out["runs"].append(run)
    out["command"] = " ".join(cmd[1:])
    out["weights"] = compare_checkpoints(
        *(work / f"run{i}" / "checkpoints" / "last.ckpt" for i in (1, 2))
    )
    r1, r2 = out["runs"]
    out["metrics_equal"] = all(r1.get(k) == r2.get(k) for k in METRICS)
    out["identical"] = out["weights"]["differing"] == 0 and out["metrics_equal"]
    return out
