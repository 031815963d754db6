"""OmegaConf resolvers used by the configs (registered on import of ``kdlab.train``).

``${kdlab.precision:}`` picks the precision from the hardware (bf16-mixed on GPUs that support
it, 16-mixed on older GPUs, 32-true on CPU, SPEC §2); ``${kdlab.tag:...}`` turns α, T, β and the
seed into the short tag used in run names and sweep folder names (``a0.5_T4_s0``).
"""

from __future__ import annotations

from omegaconf import OmegaConf


def auto_precision() -> str:
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_tag(alpha=None, temperature=None, beta=None, seed=None) -> str:
    """``a0.5_T4_b0.5_s0`` with the parts that are set (null parts are left out)."""
    parts = [
        f"{key}{_fmt(value)}"
        for key, value in (("a", alpha), ("T", temperature), ("b", beta), ("s", seed))
        if value is not None
    ]
    return "_".join(parts) or "run"


def register() -> None:
    OmegaConf.register_new_resolver("kdlab.precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("kdlab.tag", run_tag, replace=True)
