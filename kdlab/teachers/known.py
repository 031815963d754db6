"""Released teacher checkpoints kdlab knows, with the accuracy their authors published.

A run on a released teacher should measure what its authors did; a gap of more than half a
point is almost always a wrong normalisation, a mis-mapped layer or another dataset, and it
shows up at once when the measured number stands beside the published one. The table
(``known.csv`` beside this file) maps a file's sha256 (or the hash prefix its release name
carries, or, where no hash is public, its last two path parts) to architecture, dataset,
published top-1 and source. ``KDLAB_KNOWN_TEACHERS`` names more tables of the same form
(a lab's own released teachers), separated like ``PATH``.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TABLE = Path(__file__).with_name("known.csv")
TOLERANCE_PP = 0.5  # |measured − published| above this warns


@dataclass(frozen=True)
class Known:
    arch: str
    dataset: str
    top1: float
    source: str
    file: str

    def record(self) -> dict:
        """What results.json and eval.json store beside the measured accuracy."""
        return {"published_top1": self.top1, "published_source": f"{self.source} ({self.file})"}


def read_table(path: str | Path | None = None) -> list[dict[str, str]]:
    """The rows of ``path``, else of kdlab's table and every ``KDLAB_KNOWN_TEACHERS`` table."""
    if path is None:
        extra = [p for p in os.environ.get("KDLAB_KNOWN_TEACHERS", "").split(os.pathsep) if p]
        return [row for p in (TABLE, *extra) for row in read_table(p)]
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(line for line in f if not line.startswith("#")))
    except OSError as e:
        raise ValueError(f"known-teacher table {path} cannot be read ({e})") from e


def recognise(
    path: str | Path, sha256: str, table: list[dict[str, str]] | None = None
) -> Known | None:
    """The table's entry for the file at ``path`` whose sha256 is ``sha256``, or None."""
    rows = read_table() if table is None else table
    tail = "/".join(Path(path).parts[-2:])
    for row in rows:
        h = row["sha256"].strip().lower()
        if (h and sha256.lower().startswith(h)) or (not h and tail == row["file"]):
            return Known(
                row["arch"], row["dataset"], float(row["top1"]), row["source"], row["file"]
            )
    return None


def announce(known: Known | None, arch: str, dataset: str) -> None:
    """Log the recognition, and warn when the file is not what this run builds or reads."""
    if known is None:
        return
    log.info("recognised: %s (%s), published top-1 %.2f", known.source, known.file, known.top1)
    if (known.arch, known.dataset) != (arch, dataset):
        log.warning(
            "%s was released as %s on %s, but this run uses %s on %s",
            known.file,
            known.arch,
            known.dataset,
            arch,
            dataset,
        )


def compare(published: float | None, measured: float | None, what: str = "teacher") -> str | None:
    """A warning naming both numbers when they differ by more than ``TOLERANCE_PP``."""
    if published is None or measured is None or abs(measured - published) <= TOLERANCE_PP:
        return None
    message = (
        f"the {what} measures {measured:.2f} % test top-1 here but {published:.2f} % was "
        f"published ({measured - published:+.2f} pp): check the normalisation (data.normalize), "
        f"the layer mapping and that data= is the dataset it was trained on"
    )
    log.warning(message)
    return message
