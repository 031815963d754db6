"""An interrupted run re-launched in the same folder resumes and ends exactly like an
uninterrupted one (CPU, deterministic, num_workers=0).

The interruption is ``helpers_resume.StopAfterEpochs`` (stands in for a kill after epoch 1).
The model is the small CNN, whose dropout and the DataLoader's shuffle draw from the global
RNGs, so equality also proves ``kdlab.utils.rng_state.RestoreRNGState`` puts those streams back.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers_sweep import make_world, results, run_train, tiny
from tests.helpers_wandb import read_offline_run

RUN = ["model=cnn", "model.dropout=0.1", "name=resume"]  # dropout draws from the global RNG
METRICS = ["val_acc_best", "test_acc_best", "test_acc_final", "test_nll", "test_ece"]


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_metrics(tmp_path):
    world = make_world(tmp_path)
    args = [*RUN, *tiny(world, epochs=2, logger="wandb")]
    full, part = tmp_path / "full", tmp_path / "interrupted"
    run_train(tmp_path, *args, f"hydra.run.dir={full}")

    # the relaunch must be the same config (a folder's config is fixed): both launches carry
    # the stopper, which acts once, and the probe, which records where fit started
    stop = "+callbacks.stopper._target_=helpers_resume.StopAfterEpochs"
    probe = "+callbacks.probe._target_=helpers_resume.ProbeStart"
    first = run_train(tmp_path, *args, stop, probe, f"hydra.run.dir={part}")
    assert "resuming from" not in first.stderr + first.stdout
    ckpt = torch.load(part / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, 2)
    momentum = [s["momentum_buffer"] for s in ckpt["optimizer_states"][0]["state"].values()]
    assert momentum and all(m.abs().sum() > 0 for m in momentum)  # SGD state is checkpointed
    assert "kdlab_rng_states" in ckpt
    assert results(part)["epochs_trained"] == 1

    second = run_train(tmp_path, *args, stop, probe, f"hydra.run.dir={part}")
    assert f"resuming from {part / 'checkpoints' / 'last.ckpt'}" in second.stderr + second.stdout
    start = json.loads((part / "fit_start.json").read_text())
    assert start == {"epoch": 1, "global_step": 2}  # continued after epoch 1, not restarted
    a, b = results(full), results(part)
    assert b["epochs_trained"] == a["epochs_trained"] == 2
    assert {k: b[k] for k in METRICS} == {k: a[k] for k in METRICS}

    # both halves log to the same W&B run (stable id from the output folder)
    runs = [read_offline_run(p) for p in sorted((part / "wandb").glob("offline-run-*"))]
    assert len(runs) == 2 and runs[0]["id"] == runs[1]["id"]
    assert runs[0]["id"] != read_offline_run(next((full / "wandb").glob("offline-run-*")))["id"]


@pytest.mark.slow
def test_last_checkpoint_follows_every_epoch_even_without_improvement(tmp_path):
    """lr = 0 keeps val acc flat, so best.ckpt stays at epoch 0; last.ckpt must still move on."""
    world = make_world(tmp_path)
    out = tmp_path / "flat"
    run_train(
        tmp_path, *RUN, *tiny(world, epochs=3, logger="csv"), "optim.lr=0.0", f"hydra.run.dir={out}"
    )
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and best["epoch"] == 0
    assert "kdlab_rng_states" in last
