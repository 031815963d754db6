"""Number and table formatting shared by the markdown, CSV-free views and the terminal.

Kept apart so every table prints numbers the same way (2 decimals for percentages, ± sample
std, an em dash for "not available") and tests can state expected markdown exactly.
"""

from __future__ import annotations

import math
import re

from kdlab.report.stats import MeanStd

DASH = "—"
METHOD_NAMES = {
    "logit": "Logit-KD",
    "feature": "Feature-KD",
    "baseline": "Baseline",
    "teacher": "Teacher",
}


def shown_metrics() -> dict[str, tuple[str, int]]:
    """results.json key → (column name, decimals) of the measurements the tables show: the
    accuracies (best-val and final weights, val), then every other registered stage metric."""
    from kdlab.metrics.stage import display_names

    names = display_names()
    acc = {k: names.pop(k) for k in ("test_acc_best", "test_acc_final") if k in names}
    return acc | {"val_acc_best": ("Val acc", 2)} | names


def isnan(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x: float | None, digits: int = 2) -> str:
    return DASH if isnan(x) else f"{x:.{digits}f}"


def signed(x: float | None, digits: int = 2) -> str:
    return DASH if isnan(x) else f"{x:+.{digits}f}"


def pm(ms: MeanStd, digits: int = 2) -> str:
    """``mean ± std``; the mean alone for a single seed; a dash when nothing was recorded."""
    if ms.n == 0 or isnan(ms.mean):
        return DASH
    if isnan(ms.std):
        return num(ms.mean, digits)
    return f"{ms.mean:.{digits}f} ± {ms.std:.{digits}f}"


def duration(seconds: float) -> str:
    """``1 h 02 min``, ``25 min 16 s``, ``48 s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def pvalue(p: float | None) -> str:
    if isnan(p):
        return DASH
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def arch(name: str | None) -> str:
    """Paper spelling of a short arch name: ``r50`` → ``R50``; others unchanged."""
    if name is None:
        return DASH
    return name.upper() if re.fullmatch(r"r\d+", name) else name


def method(name: str) -> str:
    return METHOD_NAMES.get(name, name)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table (pipes inside cells are escaped)."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    out = [line(headers), "|" + "|".join("---" for _ in headers) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out) + "\n"
