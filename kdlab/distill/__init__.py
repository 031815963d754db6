"""KD losses (one module per method) sharing the ``KDLoss`` interface, and ensemble logits.

Teacher loading lives in ``kdlab.distill.teacher`` (imported directly, not re-exported here,
so importing a loss never pulls in checkpoint I/O).
"""

from kdlab.distill.base import (
    CrossEntropy,
    KDLoss,
    validate_alpha,
    validate_beta,
    validate_label_smoothing,
    validate_temperature,
)
from kdlab.distill.ensemble import ensemble_logits
from kdlab.distill.feature import FeatureKD
from kdlab.distill.logit import LogitKD

__all__ = [
    "CrossEntropy",
    "FeatureKD",
    "KDLoss",
    "LogitKD",
    "ensemble_logits",
    "validate_alpha",
    "validate_beta",
    "validate_label_smoothing",
    "validate_temperature",
]
