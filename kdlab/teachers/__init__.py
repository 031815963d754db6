"""Frozen teachers: the store, strict loading, ensembles, fast inference and logit caches."""

from kdlab.teachers.ensemble import StackedMembers, ensemble_logits
from kdlab.teachers.frozen import EnsembleTeacher, FrozenTeacher
from kdlab.teachers.store import build_teacher, load_teacher_net, store_path, train_command

__all__ = [
    "EnsembleTeacher",
    "FrozenTeacher",
    "StackedMembers",
    "build_teacher",
    "ensemble_logits",
    "load_teacher_net",
    "store_path",
    "train_command",
]
