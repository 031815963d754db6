"""What a run is labelled with beyond its settings: the user's tags and its debug preset.

``tags=[ablation,v2]`` on the command line labels a run (results.json ``tags``, W&B tags, the
sweep summary; ``python -m kdlab.report --tag ablation`` keeps only such runs). A run started
with ``debug=<preset>`` (``conf/debug/``) is a debug run: results.json ``"debug": "<preset>"``,
its own ``logs/debug/`` tree, never a teacher-store export, and the report leaves it out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

TAG = re.compile(r"^[\w.+=:@/-]{1,64}$")  # W&B's 64-character limit; no spaces or commas


def tags_of(cfg: Mapping) -> list[str]:
    """The run's tags as a list of strings (one bare tag is accepted as a list of one)."""
    raw = cfg.get("tags")
    if raw is None:
        return []
    values = [raw] if isinstance(raw, str | int | float) else list(raw)
    tags = [str(v) for v in values]
    bad = [t for t in tags if not TAG.match(t)]
    if bad:
        raise ValueError(
            f"tags={bad} not allowed: a tag is 1-64 letters, digits or _ . + = : @ / -, without "
            "spaces or commas; pass e.g. tags=[ablation,v2]"
        )
    return list(dict.fromkeys(tags))


def is_debug(cfg: Mapping) -> bool:
    """A run started with a ``debug=`` preset."""
    return bool(cfg.get("debug_preset"))


def run_labels(cfg: Mapping) -> dict[str, Any]:
    """``{"tags": [...], "debug": <preset or None>}`` for results.json."""
    return {"tags": tags_of(cfg), "debug": cfg.get("debug_preset") or None}
