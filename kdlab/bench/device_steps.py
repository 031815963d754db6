"""The steps of the device check, each run in its own process by ``kdlab.bench.device_check``.

A step writes its JSON (``{"rows": [...]}`` or ``{"info": {...}}``) to ``step_json`` after
every row it finishes, so the orchestrator reads what a killed step had done. Sizes come from
``device_check.SIZES`` (GPU, or toy sizes for ``--smoke-cpu``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kdlab.bench.device_check import SIZES


def _saver(path: Path, key: str = "rows"):
    def save(value: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({key: value}, indent=2, default=str))
        os.replace(tmp, path)

    return save


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    names = (
        "torch",
        "torchvision",
        "lightning",
        "torchmetrics",
        "timm",
        "numpy",
        "hydra-core",
        "omegaconf",
        "antlr4-python3-runtime",
        "rich",
        "pandas",
        "scipy",
    )
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def env_info() -> dict[str, Any]:
    """What ran: the machine, the GPU as nvidia-smi and torch see it, and whether kdlab imports."""
    import torch

    from kdlab.bench.hardware import hardware

    info: dict[str, Any] = {
        "hardware": hardware(),
        "versions": _versions(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
    }
    try:
        q = "name,driver_version,memory.total,power.limit,clocks.max.sm,pstate"
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        info["nvidia_smi"] = f"unavailable: {err}"
    flags = {
        "cudnn_allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision,
    }
    info["torch_flags"] = {}
    for name, read in flags.items():  # some of these moved between torch releases
        try:
            info["torch_flags"][name] = read()
        except Exception as err:
            info["torch_flags"][name] = f"{type(err).__name__}: {err}"
    imports = {}
    for mod in ("kdlab.bench.pairs", "kdlab.train", "hydra", "omegaconf"):
        try:
            m = __import__(mod, fromlist=["_"])
            imports[mod] = getattr(m, "__file__", "ok")
        except Exception as err:  # recorded: the later steps will fail for this reason
            imports[mod] = f"{type(err).__name__}: {err}"
    info["imports"] = imports
    return info


def run_step(name: str, step_json: Path, work: Path, smoke: bool, data_root: str | None) -> int:
    """Run the named step here; returns the process exit status."""
    import torch

    size = SIZES["smoke" if smoke else "gpu"]
    device = torch.device("cpu" if smoke else "cuda")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KDLAB_CACHE", str(work / "cache"))  # memory-format choices, shared
    save = _saver(step_json)
    if name == "env":
        _saver(step_json, "info")(env_info())
        return 0
    if name == "determinism":
        from kdlab.bench.determinism import determinism_check

        res = determinism_check(
            work / "determinism",
            data_root,
            size["det_steps"],
            size["det_batch"],
            "cpu" if smoke else "gpu",
            smoke,
        )
        _saver(step_json, "info")(res)
        return 1 if "error" in res else 0  # "identical": false is a finding, not a failure
    if name == "precision":
        from kdlab.bench.agreement import agreement_rows
        from kdlab.bench.pairs import METHODS, PAIRS

        rows = agreement_rows(list(PAIRS), METHODS, device, size["batch"], size["n_train"], save)
        return 0 if all("error" not in r for r in rows) else 1
    from kdlab.bench import pairs as P

    kwargs = {
        "device": device,
        "batch": size["batch"],
        "timing": size["timing"],
        "n_train": size["n_train"],
        "on_row": save,
    }
    if name == "pairs_bf16":
        rows = P.pair_rows(
            list(P.PAIRS),
            P.METHODS,
            ["bf16"],
            ["eager"],
            teacher_batches=size["teacher_batches"],
            **kwargs,
        )
    elif name == "pairs_fp32":
        rows = P.pair_rows(
            list(P.PAIRS),
            P.METHODS,
            ["fp32"],
            ["eager"],
            teacher_batches=size["teacher_batches"],
            **kwargs,
        )
    elif name == "recent_bf16":
        rows = P.pair_rows(
            ["resnet56-resnet20"], P.RECENT, ["bf16"], ["eager"], teacher_batches=(), **kwargs
        )
    elif name == "deterministic_cost":
        P.use_deterministic_algorithms()
        rows = P.pair_rows(
            list(P.PAIRS),
            P.METHODS,
            ["bf16"],
            ["eager"],
            teacher_batches=(),
            deterministic=True,
            **kwargs,
        )
    elif name == "compiled":
        if smoke:  # inductor compiles for minutes on a CPU: the chain is checked without it
            save([{"name": "compiled", "skipped": "--smoke-cpu: no compile on the CPU"}])
            return 0
        rows = P.pair_rows(
            list(P.PAIRS),
            P.COMPILED,
            ["bf16"],
            ["compiled"],
            teacher_batches=size["teacher_batches"][:1],
            **kwargs,
        )
    else:
        raise SystemExit(f"unknown step {name!r}")
    if name == "deterministic_cost":  # a method without deterministic kernels is a finding
        return 0
    return 0 if all(r.get("error") is None for r in rows) else 1
