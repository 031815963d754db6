"""Which memory format a network runs in: NCHW (PyTorch's default) or channels_last (NHWC).

Neither is faster everywhere: NHWC convolutions use tensor cores on CUDA, while on CPU it
depends on the network (the notebook CNN's max-pooling is about 4× faster on NHWC input; a
ResNet's convolutions may be slower). So ``channels_last=auto`` measures: a few forward (and,
for a trained network, backward) passes of a small probe batch in each format on the run's
device, on a copy of the network so its weights, statistics and the RNG are untouched.

The two formats give slightly different floating-point results, so a choice made anew by every
run (timings vary with load) would make two runs of one config differ. The first measurement of
a (device, threads, torch version, network) is therefore remembered in
``$KDLAB_CACHE/memory_format.json`` (default ``~/.cache/kdlab``) and reused by every later run.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from pathlib import Path

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
    value: bool | str,
    net: nn.Module,
    device: torch.device | str,
    train: bool = True,
    batch: int = 16,
    repeats: int = 3,
) -> bool:
    """``true``/``false`` as given; ``auto``: the faster format of ``net`` on ``device``.

    A trained network (``train=True``) is measured forward + backward on a copy (training-mode
    passes would move its BatchNorm statistics); a frozen one forward only under inference
    mode, in place (nothing changes), and left in NCHW.
    """
    device = torch.device(device)
    if value != "auto":
        return resolve_channels_last(value, device.type)
    size = int(getattr(net, "input_size", 32))
    key = _key(net, device, size, train)
    remembered = _remembered().get(key)
    if isinstance(remembered, bool):
        log.info(
            "channels_last=auto for %s: %s (measured earlier on this machine, %s)",
            getattr(net, "arch", type(net).__name__),
            "channels_last" if remembered else "NCHW",
            _cache_file(),
        )
        return remembered
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            probe = copy.deepcopy(net).to(device).train() if train else net.to(device)
            x = torch.randn(batch, 3, size, size, device=device)
            # formats change outside inference mode: a frozen network is probed in place, and
            # parameters rewritten there would become inference tensors no autograd graph may
            # use (a loss that runs the teacher's later stages on student features needs that)
            with torch.inference_mode(not train):
                nchw = _seconds(probe, x, train, repeats)
            probe.to(memory_format=torch.channels_last)
            x_nhwc = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(not train):
                nhwc = _seconds(probe, x_nhwc, train, repeats)
            probe.to(memory_format=torch.contiguous_format)
    except Exception as err:  # a network the probe cannot run: keep the static rule
        log.info("channels_last=auto: could not measure %s (%s)", type(net).__name__, err)
        return resolve_channels_last("auto", device.type)
    chosen = nhwc < MARGIN * nchw
    _remember(key, chosen)
    log.info(
        "channels_last=auto on %s for %s: NCHW %.1f ms, NHWC %.1f ms → %s",
        device.type,
        getattr(net, "arch", type(net).__name__),
        1e3 * nchw / repeats,
        1e3 * nhwc / repeats,
        "channels_last" if chosen else "NCHW",
    )
    return chosen


def _cache_file() -> Path:
    return Path(os.environ.get("KDLAB_CACHE", Path.home() / ".cache" / "kdlab")) / (
        "memory_format.json"
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return device.type


def _key(net: nn.Module, device: torch.device, size: int, train: bool) -> str:
    params = sum(p.numel() for p in net.parameters())
    arch = getattr(net, "arch", type(net).__name__)
    return (
        f"{_device_name(device)}|threads{torch.get_num_threads()}|torch{torch.__version__}|"
        f"{arch}|{params}|{size}px|{'train' if train else 'infer'}"
    )


def _remembered() -> dict[str, bool]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _remember(key: str, chosen: bool) -> None:
    """Add one decision to the cache file (a temporary file renamed into place)."""
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(_remembered() | {key: chosen}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as err:  # a read-only home: measure again next time
        log.info("channels_last=auto: cannot remember the choice in %s (%s)", path, err)
