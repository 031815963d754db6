"""Evaluation metrics of one stage (val or test), all torchmetrics so DDP reduces them exactly.

Accuracy and agreement are reported in percent. Agreement is top-1 accuracy of the
student against the teacher's argmax, and KL is torchmetrics' ``KLDivergence`` on log-probs,
KL(teacher ‖ student) at T = 1, mean per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError
from torchmetrics.regression import KLDivergence


class PercentAccuracy(MulticlassAccuracy):
    """Micro top-1 accuracy in percent, so logged values and results.json agree."""

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(num_classes=num_classes, average="micro", **kwargs)

    def compute(self) -> Tensor:
        return super().compute() * 100.0


class StageMetrics(nn.Module):
    """acc, nll (mean CE), ece and — with a teacher — agreement, kl and the teacher's acc."""

    def __init__(self, num_classes: int, with_teacher: bool) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict(
            {
                "acc": PercentAccuracy(num_classes),
                "nll": MeanMetric(),
                "ece": MulticlassCalibrationError(num_classes=num_classes, n_bins=10, norm="l1"),
            }
        )
        if with_teacher:
            self.metrics["agreement"] = PercentAccuracy(num_classes)
            self.metrics["kl"] = KLDivergence(log_prob=True, reduction="mean")
            self.metrics["teacher_acc"] = PercentAccuracy(num_classes)

    def update(self, logits: Tensor, targets: Tensor, t_logits: Tensor | None = None) -> Tensor:
        """Update every metric with one batch; returns the batch's CE loss."""
        logits = logits.float()
        nll = F.cross_entropy(logits, targets, reduction="none")
        m = self.metrics
        m["acc"].update(logits, targets)
        m["nll"].update(nll)
        m["ece"].update(logits.softmax(-1), targets)
        if t_logits is not None and "agreement" in m:
            t_logits = t_logits.float()
            m["agreement"].update(logits, t_logits.argmax(-1))
            m["kl"].update(t_logits.log_softmax(-1), logits.log_softmax(-1))
            m["teacher_acc"].update(t_logits, targets)
        return nll.mean()

    def items(self) -> list[tuple[str, Metric]]:
        return list(self.metrics.items())

    def __getitem__(self, name: str) -> Metric:
        return self.metrics[name]

    @torch.no_grad()
    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
