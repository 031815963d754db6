"""kdlab: knowledge-distillation experiments on CIFAR-10/100 (Lightning + Hydra)."""

from pathlib import Path

__version__ = "0.1.0"

#: The Hydra config tree (``conf/``) that ``python -m kdlab.train`` composes.
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
