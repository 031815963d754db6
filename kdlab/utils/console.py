"""The rich console kdlab's commands print their tables to."""

from __future__ import annotations

import sys

from rich.console import Console

LOG_WIDTH = 160


def table_console() -> Console:
    """The terminal's own width on a terminal; elsewhere (a SLURM log, a pipe, CI) rich would
    squeeze tables into 80 columns and cut every name, so a log gets 160."""
    return Console() if sys.stdout.isatty() else Console(width=LOG_WIDTH)
