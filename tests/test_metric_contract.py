"""A new metric is one class with its display name: subclassing ``StageMetric`` makes every
val/test pass compute it, results.json record it and the report show it, with no other file
naming it. Stage metrics are a torchmetrics ``MetricCollection``."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torchmetrics import MeanMetric, MetricCollection

from kdlab.metrics.classification import StageMetrics
from kdlab.metrics.stage import REGISTRY, StageMetric
from kdlab.report.build import make_report
from kdlab.results import metric_results


@pytest.fixture
def brier():
    """The Brier score, defined here and nowhere else (removed again after the test)."""

    class Brier(StageMetric, MeanMetric):
        key, display, digits = "brier", "Brier", 3

        def stage_update(self, logits, targets, t_logits, nll) -> None:
            onehot = torch.nn.functional.one_hot(targets, logits.shape[-1]).float()
            self.update((logits.softmax(-1) - onehot).pow(2).sum(-1))

    yield Brier
    REGISTRY.pop("brier")


def report_of_two_seeds(tmp_path, key: str, values: tuple[float, float]) -> list[dict]:
    """results.csv of a report over two baseline runs that recorded ``key``."""
    for seed, value in enumerate(values):
        run = tmp_path / "runs" / f"s{seed}"
        run.mkdir(parents=True)
        record = {
            "dataset": "cifar10",
            "teacher": None,
            "student": "r18",
            "method": "baseline",
            "seed": seed,
            "epochs": 1,
            "status": "finished",
            "val_acc_best": 90.0,
            "test_acc_best": 89.0,
            key: value,
        }
        (run / "results.json").write_text(json.dumps(record))
    make_report([tmp_path / "runs"], tmp_path / "report", figures=False)
    return list(csv.DictReader(open(tmp_path / "report" / "results.csv")))


def test_stage_metrics_are_a_metric_collection_of_every_registered_metric():
    m = StageMetrics(10, with_teacher=False)
    assert isinstance(m, MetricCollection)
    assert set(m.keys()) == {"acc", "nll", "ece"}
    assert set(StageMetrics(10, with_teacher=True).keys()) == {
        "acc",
        "nll",
        "ece",
        "agreement",
        "kl",
        "teacher_acc",
    }


def test_a_new_metric_is_computed_recorded_and_reported(brier, tmp_path):
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([0, 0, 1])
    metrics = StageMetrics(2, with_teacher=False)
    metrics.update(logits, targets)
    p = logits.softmax(-1)
    by_hand = (
        (p[0, 0] - 1) ** 2
        + p[0, 1] ** 2
        + (p[1, 0] - 1) ** 2
        + p[1, 1] ** 2
        + p[2, 0] ** 2
        + (p[2, 1] - 1) ** 2
    ) / 3
    assert torch.allclose(metrics["brier"].compute(), by_hand)

    best = {"test/acc": 90.0, "test/nll": 0.3, "test/ece": 0.02, "test/brier": 0.15}
    final = {"test_final/acc": 89.0, "test_final/brier": 0.17}
    res = metric_results(best, final, with_teacher=False, members=1)
    assert res["test_brier"] == 0.15 and res["test_brier_final"] == 0.17

    rows = report_of_two_seeds(tmp_path, "test_brier", (0.1, 0.2))
    assert float(rows[0]["test_brier_mean"]) == pytest.approx(0.15)
    assert float(rows[0]["test_brier_std"]) == pytest.approx(0.0707107, rel=1e-5)
    md = (tmp_path / "report" / "results.md").read_text()
    assert "| Brier |" in md and "0.150 ± 0.071" in md


def test_a_measurement_the_report_does_not_know_still_reaches_the_csv(tmp_path):
    rows = report_of_two_seeds(tmp_path, "test_cka_layer3", (3.0, 5.0))
    assert float(rows[0]["test_cka_layer3_mean"]) == 4.0
    assert "teacher_test_acc_mean" in rows[0]  # the shown metrics are always columns
