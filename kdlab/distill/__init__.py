"""KD losses, one module per method, sharing the ``KDLoss`` interface (``kdlab.distill.base``).

Teachers (store, freezing, ensembles, caches) live in ``kdlab.teachers``; this package holds
losses only, so a new method is one module here plus one config in ``conf/distill/``.
"""

from kdlab.distill.base import (
    CrossEntropy,
    KDLoss,
    validate_alpha,
    validate_beta,
    validate_label_smoothing,
    validate_temperature,
    validate_weight,
)
from kdlab.distill.combine import Combined
from kdlab.distill.feature import FeatureKD
from kdlab.distill.logit import LogitKD

__all__ = [
    "Combined",
    "CrossEntropy",
    "FeatureKD",
    "KDLoss",
    "LogitKD",
    "validate_alpha",
    "validate_beta",
    "validate_label_smoothing",
    "validate_temperature",
    "validate_weight",
]
