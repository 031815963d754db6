"""``trainer=ddp`` on CPU with 2 processes (gloo): the same weights evaluated on the same test
set give the same metrics as one process, so accuracy, agreement, KL, NLL and ECE are reduced
over the whole set, not averaged per rank or taken from rank 0.

A distilled CNN is trained for one epoch in one process; its ``last.ckpt`` is copied into two
fresh run folders, and ``kdlab.train`` (which resumes from ``checkpoints/last.ckpt``) is started
there with ``trainer.max_epochs=1``: nothing is left to train, so both runs only test those
weights, once with 1 and once with 2 processes. 64 test images / (2 ranks × batch 16) divide
evenly, so DistributedSampler adds no padded duplicates and the sets are identical.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers_sweep import N_TEST, make_world, results, run_train, tiny

DISTIL = ["+experiment=r56_cnn_logit", "teacher=cnn"]
METRICS = ["test_acc_best", "test_nll", "test_ece", "test_agreement", "test_kl", "test_acc_final"]
COUNT = "+callbacks.count._target_=helpers_resume.CountTestSamples"


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(tmp_path):
    world = make_world(tmp_path)
    args = [*DISTIL, *tiny(world)]
    trained = tmp_path / "trained"
    run_train(tmp_path, *args, f"hydra.run.dir={trained}")
    runs = {}
    for name, extra in [("single", []), ("ddp", ["trainer=ddp", "trainer.devices=2"])]:
        run = tmp_path / name
        (run / "checkpoints").mkdir(parents=True)
        shutil.copy(trained / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
        # trainer=ddp resets the trainer group: re-apply the CPU setting after it
        proc = run_train(
            tmp_path, *args, *extra, "trainer.accelerator=cpu", COUNT, f"hydra.run.dir={run}"
        )
        runs[name] = results(run)
        # the post-fit work (fidelity pass, results.json) happens once, not once per process
        assert (proc.stdout + proc.stderr).count("results (finished)") == 1

    seen = [json.loads((tmp_path / "ddp" / f"test_rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["world_size"] for s in seen] == [2, 2]
    # each rank tests one half of the set (the file holds the last test pass)
    assert [s["seen"] for s in seen] == [N_TEST // 2, N_TEST // 2]
    single = json.loads((tmp_path / "single" / "test_rank0.json").read_text())
    assert single == {"seen": N_TEST, "world_size": 1}

    for key in METRICS:
        assert runs["ddp"][key] is not None, key
        assert runs["ddp"][key] == pytest.approx(runs["single"][key], rel=1e-5, abs=1e-6), key
    assert runs["single"]["test_agreement"] < 100  # a non-trivial comparison
