"""Fidelity and representation metrics beside torchmetrics' own (CKA, ...)."""

from kdlab.metrics.cka import LinearCKA

__all__ = ["LinearCKA"]
