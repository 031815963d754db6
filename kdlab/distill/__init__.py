"""KD losses, one module per method, sharing the ``KDLoss`` interface (``kdlab.distill.base``).

Teachers (store, freezing, ensembles, caches) live in ``kdlab.teachers``; this package holds
losses only, so a new method is one module here plus one config in ``conf/distill/``. Logit
losses share ``LogitLoss`` (``kdlab.distill.logit_loss``), which the modifiers CTKD and SDD wrap.
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
from kdlab.distill.logit_loss import LogitLoss

__all__ = [
    "Combined",
    "CrossEntropy",
    "FeatureKD",
    "KDLoss",
    "LogitKD",
    "LogitLoss",
    "validate_alpha",
    "validate_beta",
    "validate_label_smoothing",
    "validate_temperature",
    "validate_weight",
]
