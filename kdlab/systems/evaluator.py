"""Testing a trained network outside its training run, with the training run's own metrics."""

from __future__ import annotations

from torch import Tensor, nn

from kdlab.systems.classifier import Classifier


class Evaluator(Classifier):
    """``Trainer.test`` of ``net`` (and, with ``teacher``, its agreement, KL and the teacher's
    own accuracy): the metric objects and names a training run tests with, so an evaluation
    and a run's record can be compared key by key."""

    def __init__(self, net: nn.Module, teacher: nn.Module | None = None) -> None:
        self.has_teacher = teacher is not None  # read by Classifier when it builds the metrics
        super().__init__(net, optimizer=_no_optimizer)
        self.teacher = teacher.eval() if teacher is not None else None

    def eval_teacher_logits(self, x: Tensor, y: Tensor | None = None) -> Tensor | None:
        return None if self.teacher is None else self.teacher(x)


def _no_optimizer(params):
    raise RuntimeError("an Evaluator only tests")
