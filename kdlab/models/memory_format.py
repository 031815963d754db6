"""Which memory format a network runs in: NCHW (PyTorch's default) or channels_last (NHWC)."""

from __future__ import annotations


def resolve_channels_last(value: bool | str, device_type: str) -> bool:
    """``auto`` → on for CUDA only (NHWC convolutions are slower on many CPUs)."""
    if value == "auto":
        return device_type == "cuda"
    if isinstance(value, bool):
        return value
    raise ValueError(f"channels_last must be true, false or auto, got {value!r}")
