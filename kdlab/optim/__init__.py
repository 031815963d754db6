"""Optimisers kdlab adds to ``torch.optim`` (chosen by ``_target_`` in ``conf/optim/``)."""

from kdlab.optim.dot import DOT

__all__ = ["DOT"]
