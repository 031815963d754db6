"""The resolved config tree at the start of every run, and the TensorBoard loggers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import read_results, run_train, tiny_overrides

pytestmark = pytest.mark.slow


def _run(tiny_cifar10, out: Path, *extra: str):
    return run_train(
        ["+experiment=baseline_cnn", *tiny_overrides(tiny_cifar10, out), *extra], cwd=out.parent
    )


def test_the_config_tree_is_printed_at_the_start_and_saved(tiny_cifar10, tmp_path):
    out = tmp_path / "run"
    proc = _run(tiny_cifar10, out, "logger=csv", "seed=7")
    saved = (out / "config_tree.log").read_text()
    assert saved.startswith("config\n")
    for line in ("├── name: baseline_cnn", "├── seed: 7", "├── data", "│       batch_size: 16"):
        assert line in saved, line
    assert f"root: {tiny_cifar10}" in saved  # resolved, not ${oc.env:…}
    assert "hydra:" not in saved.replace("${hydra:", "")
    assert "├── seed: 7" in proc.stdout
    assert proc.stdout.index("├── seed: 7") < proc.stdout.index("results (finished)")


def test_print_config_false_keeps_the_file_but_prints_nothing(tiny_cifar10, tmp_path):
    out = tmp_path / "quiet"
    proc = _run(tiny_cifar10, out, "logger=csv", "extras.print_config=false")
    assert "├── seed: 0" in (out / "config_tree.log").read_text()
    assert "├── seed" not in proc.stdout and "├── seed" not in proc.stderr


def _scalars(event_dir: Path) -> dict[str, list[float]]:
    """Every scalar of every event file (fit and each test pass close and reopen the writer)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[float]] = {}
    for events in sorted(event_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return scalars


def test_tensorboard_event_file_holds_the_same_metric_names(tiny_cifar10, tmp_path):
    out = tmp_path / "tb"
    _run(tiny_cifar10, out, "logger=tensorboard")
    scalars = _scalars(out / "tensorboard")
    for tag in (
        "val/acc",
        "val/acc_best",
        "val/loss",
        "train/loss_epoch",
        "train/acc",
        "lr",
        "test/acc",
    ):
        assert tag in scalars, sorted(scalars)
    assert scalars["test/acc"][-1] == pytest.approx(read_results(out)["test_acc_best"])
    assert (out / "csv" / "metrics.csv").is_file() and not (out / "wandb").exists()


def test_many_loggers_write_wandb_csv_and_tensorboard(tiny_cifar10, tmp_path):
    out = tmp_path / "many"
    _run(tiny_cifar10, out, "logger=many")
    assert "val/acc" in _scalars(out / "tensorboard")
    assert "val/acc" in (out / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1
