"""What a stage metric is to kdlab: a torchmetrics ``Metric`` that also says how it is fed, what
results.json calls it and how the report shows it.

Subclassing :class:`StageMetric` (with a ``key``) registers a metric: every val/test pass then
computes it (``val/<key>``, ``test/<key>``), results.json records it (``test_<key>``, and
``test_<key>_final`` for the final weights) and the report shows it under ``display`` with
``digits`` decimals. A new metric is that one class; nothing else names it.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

REGISTRY: dict[str, type[StageMetric]] = {}


class StageMetric:
    """Mixin for a torchmetrics ``Metric``: put it first among the bases."""

    key: ClassVar[str]
    display: ClassVar[str]
    digits: ClassVar[int] = 2
    needs_teacher: ClassVar[bool] = False  # computed only where a teacher's logits exist
    record: ClassVar[str | None] = None  # results.json key of the best weights; None: test_<key>
    final: ClassVar[bool] = True  # also recorded for the final weights (test_<key>_final)
    final_display: ClassVar[str | None] = None  # a column for the final weights' value too

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "key" in cls.__dict__:
            REGISTRY[cls.key] = cls

    @classmethod
    def build(cls, num_classes: int) -> StageMetric:
        return cls()

    @classmethod
    def result_key(cls) -> str:
        return cls.record or f"test_{cls.key}"

    def stage_update(
        self, logits: Tensor, targets: Tensor, t_logits: Tensor | None, nll: Tensor
    ) -> None:
        """One batch: float32 student logits, hard targets, the teacher's logits (or None) and
        the per-sample cross-entropy (computed once for every metric that needs it)."""
        raise NotImplementedError


def registered() -> dict[str, type[StageMetric]]:
    """Every stage metric kdlab knows, kdlab's own first (importing them registers them)."""
    import kdlab.metrics.classification  # noqa: F401

    return dict(REGISTRY)


def display_names() -> dict[str, tuple[str, int]]:
    """results.json key → (column name, decimals) of every metric the report shows, in order:
    the best weights' value of each, the final weights' where a metric asks for it."""
    out = {}
    for k, c in registered().items():
        out[c.result_key()] = (c.display, c.digits)
        if c.final and c.final_display:
            out[f"test_{k}_final"] = (c.final_display, c.digits)
    return out
