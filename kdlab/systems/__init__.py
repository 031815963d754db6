"""LightningModules: ``Classifier`` (teachers, baselines) and ``Distiller`` (KD students)."""

from kdlab.systems.build import build_system
from kdlab.systems.classifier import Classifier
from kdlab.systems.distiller import Distiller

__all__ = ["Classifier", "Distiller", "build_system"]
