"""``train.log`` opened only once the run owns its folder.

Hydra opens the job's log file at the start of every launch. A launch that kdlab then refuses
(the folder holds another config, or a live run) must leave the folder exactly as it was, so
the file handler keeps the launch's records in memory until :func:`claim_log_files` says the
folder is this run's; a refused launch prints them on the console only.
"""

from __future__ import annotations

import logging

MAX_PENDING = 10_000  # records kept before the claim (start-up logs a few dozen)


class RunLogFile(logging.FileHandler):
    """A ``FileHandler`` that writes nothing before :func:`claim_log_files`."""

    def __init__(
        self,
        filename: str,
        mode: str = "a",
        encoding: str | None = None,
        delay: bool = True,
        errors: str | None = None,
    ) -> None:
        super().__init__(filename, mode, encoding, delay=True, errors=errors)
        self.pending: list[logging.LogRecord] = []
        self.claimed = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.claimed:
            super().emit(record)
        elif len(self.pending) < MAX_PENDING:
            self.pending.append(record)

    def claim(self) -> None:
        if self.claimed:
            return
        self.claimed = True
        pending, self.pending = self.pending, []
        for record in pending:
            super().emit(record)


def claim_log_files() -> None:
    """The run owns its folder: write what was logged so far and everything from now on."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RunLogFile):
            handler.claim()
