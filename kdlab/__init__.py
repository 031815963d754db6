"""kdlab: knowledge-distillation experiments on CIFAR-10/100 (Lightning + Hydra)."""

__version__ = "0.1.0"
