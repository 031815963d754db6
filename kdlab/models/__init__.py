"""CIFAR models with uniform stage access (see ``kdlab.models.base``)."""

from kdlab.models.base import StagedModel, check_stages, count_parameters, stage_shapes

__all__ = ["StagedModel", "check_stages", "count_parameters", "stage_shapes"]
