"""Evaluation metrics of one stage (val or test), all torchmetrics so DDP reduces them exactly.

Accuracy and agreement are reported in percent. Agreement is top-1 accuracy of the
student against the teacher's argmax, and KL is torchmetrics' ``KLDivergence`` on log-probs,
KL(teacher ‖ student) at T = 1, mean per sample.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError
from torchmetrics.regression import KLDivergence

from kdlab.metrics.stage import StageMetric, registered


class PercentAccuracy(MulticlassAccuracy):
    """Micro top-1 accuracy in percent, so logged values and results.json agree."""

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(num_classes=num_classes, average="micro", **kwargs)

    def compute(self) -> Tensor:
        return super().compute() * 100.0


class _ClassAccuracy(StageMetric, PercentAccuracy):
    """A percent accuracy stage metric: built with the class count."""

    @classmethod
    def build(cls, num_classes: int) -> _ClassAccuracy:
        return cls(num_classes)


class Accuracy(_ClassAccuracy):
    key, display, record = "acc", "Test acc (best val)", "test_acc_best"
    final_display = "Test acc (final)"

    def stage_update(self, logits, targets, t_logits, nll) -> None:
        self.update(logits, targets)


class Agreement(_ClassAccuracy):
    """Top-1 agreement of the student with the teacher's argmax."""

    key, display, needs_teacher = "agreement", "Agreement", True

    def stage_update(self, logits, targets, t_logits, nll) -> None:
        self.update(logits, t_logits.argmax(-1))


class KL(StageMetric, KLDivergence):
    """KL(teacher ‖ student) at T = 1, mean per sample."""

    key, display, digits, needs_teacher = "kl", "KL", 3, True

    @classmethod
    def build(cls, num_classes: int) -> KL:
        return cls(log_prob=True, reduction="mean")

    def stage_update(self, logits, targets, t_logits, nll) -> None:
        self.update(t_logits.log_softmax(-1), logits.log_softmax(-1))


class NLL(StageMetric, MeanMetric):
    """Mean cross-entropy of the hard labels."""

    key, display, digits = "nll", "NLL", 3

    def stage_update(self, logits, targets, t_logits, nll) -> None:
        self.update(nll)


class ECE(StageMetric, MulticlassCalibrationError):
    """Expected calibration error, 10 equal-width bins, L1."""

    key, display, digits = "ece", "ECE", 4

    @classmethod
    def build(cls, num_classes: int) -> ECE:
        return cls(num_classes=num_classes, n_bins=10, norm="l1")

    def stage_update(self, logits, targets, t_logits, nll) -> None:
        self.update(logits.softmax(-1), targets)


class TeacherAccuracy(_ClassAccuracy):
    key, display, needs_teacher = "teacher_acc", "Teacher acc", True
    record, final = "teacher_test_acc", False  # the teacher is frozen: one value

    def stage_update(self, logits, targets, t_logits, nll) -> None:
        self.update(t_logits, targets)


class StageMetrics(MetricCollection):
    """Every registered stage metric (those that need a teacher only ``with_teacher``)."""

    def __init__(self, num_classes: int, with_teacher: bool) -> None:
        chosen = {
            k: c.build(num_classes)
            for k, c in registered().items()
            if with_teacher or not c.needs_teacher
        }
        super().__init__(chosen, compute_groups=False)

    def update(self, logits: Tensor, targets: Tensor, t_logits: Tensor | None = None) -> Tensor:
        """Update every metric with one batch; returns the batch's CE loss."""
        logits = logits.float()
        nll = F.cross_entropy(logits, targets, reduction="none")
        t_logits = None if t_logits is None else t_logits.float()
        for metric in self.values(copy_state=False):
            if t_logits is not None or not metric.needs_teacher:
                metric.stage_update(logits, targets, t_logits, nll)
        return nll.mean()
