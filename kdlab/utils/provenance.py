"""What a run records about where it came from: git commit and results.json writing."""

from __future__ import annotations

import functools
import json
import math
import subprocess
from pathlib import Path
from typing import Any


@functools.cache
def git_commit() -> str | None:
    """The kdlab source tree's commit (``+dirty`` when it has uncommitted changes), or None;
    read once per process (the first call), so a record names the code the run started with."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _clean(value: Any) -> Any:
    """JSON-safe: tensors to floats, NaN/inf to None."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write atomically so a killed run never leaves a half-written results.json."""
    from kdlab.utils.checkpoint_io import write_atomic

    text = json.dumps(_clean(data), indent=2, sort_keys=False) + "\n"
    write_atomic(path, text.encode(), "results")
    return Path(path)
