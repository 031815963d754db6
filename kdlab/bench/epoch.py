"""Whole epochs of the real ``python -m kdlab.train`` against a plain PyTorch loop.

A small student's step is short, so whatever the framework adds per step (loop bookkeeping,
metric updates, logging calls, callbacks, memory formats) decides the speed. These rows run the
real system — ``+experiment=baseline_cnn`` with its callbacks, metrics, logging, checkpoints
and per-epoch line — in a subprocess, and a hand-written loop on the same network, the same
loader (the data module's own DataLoader or device pipeline) and the same batch size, in one
``kdlab.bench --epoch`` run. Both use Adam and no augmentation, and an epoch includes the
validation pass (``--train-batches N`` shortens the training part of every epoch of both, for
slow models on a CPU). Reported: seconds per epoch (median of the epochs after the first, which
pays for start-up), images/s, and the ratio kdlab / plain.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from kdlab import CONF_DIR


class EpochTimer(L.Callback):
    """Seconds of every training epoch, validation included, written to ``path`` at the end."""

    def __init__(self, path: str) -> None:
        self.path, self.times, self.images, self.start = Path(path), [], [], 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start, self.seen = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += len(batch)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self.start)
        self.images.append(self.seen)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.path.write_text(json.dumps({"seconds": self.times, "images": self.images}))


def kdlab_epochs(
    model: str,
    pipeline: str,
    data: list[str],
    epochs: int,
    batch: int,
    threads: int,
    train_batches: int | None = None,
) -> dict:
    """Run ``python -m kdlab.train`` for ``epochs`` epochs and read its epoch times."""
    with tempfile.TemporaryDirectory() as tmp:
        timer = Path(tmp) / "epochs.json"
        args = [
            sys.executable,
            "-m",
            "kdlab.train",
            "+experiment=baseline_cnn",
            f"model={model}",
            *data,
            "data.augment=false",
            f"data.batch_size={batch}",
            f"data.pipeline={pipeline}",
            "data.num_workers=0",
            f"trainer.max_epochs={epochs}",
            "logger=csv",
            "trainer.accelerator=auto",
            "callbacks.early_stopping=null",
            "+callbacks.bench_timer._target_=kdlab.bench.epoch.EpochTimer",
            f"+callbacks.bench_timer.path={timer}",
            f"hydra.run.dir={tmp}/run",
            f"paths.log_dir={tmp}/logs",
        ]
        if train_batches:
            args.append(f"trainer.limit_train_batches={train_batches}")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), WANDB_MODE="offline")
        proc = subprocess.run(args, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"kdlab.train failed:\n{proc.stderr[-3000:]}")
        return json.loads(timer.read_text())


def plain_epochs(
    model: str,
    pipeline: str,
    data: list[str],
    epochs: int,
    batch: int,
    train_batches: int | None = None,
) -> dict:
    """The same network, loaders and optimiser in a hand-written loop (no framework at all)."""
    from hydra import compose, initialize_config_dir

    from kdlab.utils.resolvers import register

    register()  # the configs' own resolvers (kdlab.strong_view, …)
    overrides = [
        "+experiment=baseline_cnn",
        f"model={model}",
        *data,
        "data.augment=false",
        f"data.batch_size={batch}",
        f"data.pipeline={pipeline}",
        "data.num_workers=0",
        "seed=0",
        "paths.root=.",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        root = compose("train", overrides=overrides)
    dm = instantiate(root.data)
    dm.setup()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    net = instantiate(root.model).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    times, images, val_acc = [], [], []
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        net.train()
        for i, b in enumerate(dm.loader("train", train=True)):
            if train_batches and i >= train_batches:
                break
            b = b.to(device)
            loss = F.cross_entropy(net(b.x), b.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(b)
        net.eval()
        with torch.no_grad():
            correct = sum(
                int((net(v.x.to(device)).argmax(1) == v.y.to(device)).sum())
                for v in dm.loader("val")
            )
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        images.append(seen)
        val_acc.append(100.0 * correct / len(dm.splits["val"][1]))
    return {"seconds": times, "images": images, "val_acc": val_acc}


def epoch_rows(
    models: list[str],
    pipelines: list[str],
    data: list[str],
    epochs: int,
    batch: int,
    threads: int,
    train_batches: int | None = None,
) -> list[dict]:
    """One kdlab row, one plain row and their ratio per (model, pipeline)."""
    torch.set_num_threads(threads)
    rows = []
    for model in models:
        for pipe in pipelines:
            runs = {
                "kdlab": kdlab_epochs(model, pipe, data, epochs, batch, threads, train_batches),
                "plain": plain_epochs(model, pipe, data, epochs, batch, train_batches),
            }
            per = {}
            for loop, r in runs.items():
                secs = r["seconds"][1:] or r["seconds"]  # the first epoch pays for start-up
                per[loop] = statistics.median(secs)
                rows.append(
                    {
                        "name": f"epoch/{model}/{pipe}/{loop}",
                        "kind": "epoch",
                        "model": model,
                        "pipeline": pipe,
                        "loop": loop,
                        "batch": batch,
                        "epochs": r["seconds"],
                        "seconds_per_epoch": per[loop],
                        "images_per_s": r["images"][-1] / per[loop],
                        "skipped": None,
                    }
                )
                print(f"  {rows[-1]['name']}: {per[loop]:.2f} s/epoch", flush=True)
            ratio = per["kdlab"] / per["plain"]
            rows.append(
                {
                    "name": f"epoch/{model}/{pipe}/ratio",
                    "kind": "epoch_ratio",
                    "model": model,
                    "pipeline": pipe,
                    "ratio": ratio,
                    "skipped": None,
                }
            )
            print(f"  epoch/{model}/{pipe}: kdlab / plain = {ratio:.2f}×", flush=True)
    return rows
