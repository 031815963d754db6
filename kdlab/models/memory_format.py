"""Which memory format a network runs in: NCHW (PyTorch's default) or channels_last (NHWC).

Neither is faster everywhere: NHWC convolutions use tensor cores on CUDA, while on CPU it
depends on the network (the notebook CNN's max-pooling is about 4× faster on NHWC input; a
ResNet's convolutions may be slower). So ``channels_last=auto`` measures: a few forward (and,
for a trained network, backward) passes of a small probe batch in each format on the run's
device, on a copy of the network so its weights, statistics and the RNG are untouched.
"""

from __future__ import annotations

import copy
import logging
import time

import torch
from torch import nn

log = logging.getLogger(__name__)
MARGIN = 0.95  # NHWC must be at least 5 % faster to be chosen (timing noise)


def resolve_channels_last(value: bool | str, device_type: str) -> bool:
    """The static rule: ``auto`` → on for CUDA only; the fallback when a network cannot be
    measured (``choose_channels_last``)."""
    if value == "auto":
        return device_type == "cuda"
    if isinstance(value, bool):
        return value
    raise ValueError(f"channels_last must be true, false or auto, got {value!r}")


def _seconds(net: nn.Module, x: torch.Tensor, backward: bool, repeats: int) -> float:
    def step() -> None:
        out = net(x)
        if backward:
            out.float().sum().backward()

    step()  # warm-up (allocations, kernel choice)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter() - start


def choose_channels_last(
    value: bool | str, net: nn.Module, device: torch.device | str, train: bool = True,
    batch: int = 16, repeats: int = 3,
) -> bool:  # fmt: skip
    """``true``/``false`` as given; ``auto``: the faster format of ``net`` on ``device``.

    A trained network (``train=True``) is measured forward + backward on a copy (training-mode
    passes would move its BatchNorm statistics); a frozen one forward only under inference
    mode, in place (nothing changes), and left in NCHW.
    """
    device = torch.device(device)
    if value != "auto":
        return resolve_channels_last(value, device.type)
    size = int(getattr(net, "input_size", 32))
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            probe = copy.deepcopy(net).to(device).train() if train else net.to(device)
            x = torch.randn(batch, 3, size, size, device=device)
            with torch.inference_mode(not train):
                nchw = _seconds(probe, x, train, repeats)
                probe.to(memory_format=torch.channels_last)
                nhwc = _seconds(probe, x.contiguous(memory_format=torch.channels_last), train,
                                repeats)  # fmt: skip
                probe.to(memory_format=torch.contiguous_format)
    except Exception as err:  # a network the probe cannot run: keep the static rule
        log.info("channels_last=auto: could not measure %s (%s)", type(net).__name__, err)
        return resolve_channels_last("auto", device.type)
    chosen = nhwc < MARGIN * nchw
    log.info("channels_last=auto on %s for %s: NCHW %.1f ms, NHWC %.1f ms → %s", device.type,
             getattr(net, "arch", type(net).__name__), 1e3 * nchw / repeats,
             1e3 * nhwc / repeats, "channels_last" if chosen else "NCHW")  # fmt: skip
    return chosen
