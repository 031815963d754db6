"""Start-up messages that the user did not cause and cannot act on, filtered once.

Each filter names the message and why it says nothing to a kdlab user; anything else from the
libraries still reaches the console and train.log.
"""

from __future__ import annotations

import logging
import re
import warnings

# Lightning's informational lines that hold no news for a kdlab run:
_LIGHTNING_INFO = (
    # kdlab launches SLURM jobs through submitit, which starts its processes itself
    r"The `srun` command is available on your system but is not used",
    # the accelerator in use is in the epoch line and results.json; this repeats it per run
    r"(GPU|TPU|HPU|IPU) available: ",
    # an advertisement for a hosted logger
    r"💡 Tip:",
    # printed for the default fraction 1.0 ("all batches"): only a number set by the user tells
    r"`Trainer\(limit_\w+_batches=1\.0\)` was configured",
)
_WARNINGS = (
    # torch's pytree deprecation inside Lightning's own code (fixed upstream, not ours to fix)
    r".*isinstance\(treespec, LeafSpec\)",
    # short epochs (smoke runs, small subsets): kdlab logs every epoch's means itself
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # a resumed run writes into its own checkpoint folder on purpose
    r"Checkpoint directory .* exists and is not empty",
    # the frozen teacher is in eval mode on purpose (kdlab.teachers)
    r"Found \d+ module\(s\) in eval mode",
)


class _DropInfo(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


_INSTALLED = False


def quiet_libraries() -> None:
    """Install the filters (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    drop = _DropInfo(_LIGHTNING_INFO + _WARNINGS)
    # a logger's filters see the records made by that logger: Lightning's messages are made by
    # its rank-zero helpers' loggers
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch",
        "lightning.fabric",
    ):
        logging.getLogger(name).addFilter(drop)
    for pattern in _WARNINGS + _LIGHTNING_INFO:
        warnings.filterwarnings("ignore", message=pattern)
