"""``scripts/device_check.sh [OUT]``: what only a GPU can show, in one command of ≤ 8 minutes.

A session lent an accelerator has minutes, not hours, so everything is prepared: each step
below runs in its own process with its own time budget (a slow or hung step is killed and
costs only its own budget), and after every step ``OUT/device_check.json`` and
``OUT/device_check.md`` are rewritten, so a run stopped at any point still returns every
finished row. Each step also saves its rows as it goes, so a killed step keeps what it did.

Steps (``--dry-run`` prints them with their budgets):

- ``env``: GPU, driver, versions, and that kdlab's bench and training entry import;
- ``pairs_bf16`` / ``pairs_fp32``: ``kdlab.bench --pairs`` rows (kdlab/bench/pairs.py) of
  resnet56 → resnet20 and resnet32x4 → resnet8x4: baseline, logit KD from the view cache, DKD,
  CRD, ReviewKD, and the teacher's plain vs fast forward, with peak GPU memory per row;
- ``determinism``: two 50-step ``kdlab.train`` runs with ``trainer.deterministic=true`` must
  end with bitwise-identical weights (kdlab/bench/determinism.py);
- ``precision``: bf16-mixed against fp32 loss on one batch per method (kdlab/bench/agreement.py);
- ``deterministic_cost``: the bf16 rows again with deterministic algorithms on (what
  ``trainer.deterministic=true`` costs, and which methods it breaks);
- ``compiled``: ``torch.compile`` on for the methods whose student forward it compiles.

Without CUDA it stops with one line and exit status 2. ``--smoke-cpu`` runs every step on the
CPU at toy sizes (compiled rows skipped): a development check that the chain works, not a
measurement. Exit status 1 when a step failed or ran out of time (its results are still written).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

NO_CUDA = (
    "device_check: no CUDA device here (torch.cuda.is_available() is False); it measures "
    "a GPU. --dry-run lists the steps; --smoke-cpu runs them tiny on the CPU (development "
    "only)"
)


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: int  # on a GPU; the CPU smoke run gets SMOKE_BUDGET_S per step
    what: str


STEPS = (
    Step("env", 25, "GPU, driver, torch/CUDA/cuDNN and package versions; kdlab imports"),
    Step(
        "pairs_bf16",
        80,
        "kdlab.bench --pairs, bf16 autocast, eager: 2 pairs × (baseline, "
        "logit_viewcache, dkd, crd, reviewkd) + teacher plain/fast forward, peak memory",
    ),
    Step(
        "determinism",
        90,
        "two 50-step kdlab.train runs (resnet56→resnet20 logit KD, "
        "trainer.deterministic=true): bitwise-identical weights?",
    ),
    Step("precision", 40, "bf16-mixed vs fp32 loss on one batch, 2 pairs × 5 methods"),
    Step("pairs_fp32", 70, "the pair and teacher rows in fp32"),
    Step(
        "recent_bf16",
        30,
        "bf16 eager rows of SDD over DKD, MLKD (strong views) and FCFD on resnet56→resnet20",
    ),
    Step("deterministic_cost", 35, "bf16 eager pair rows with deterministic algorithms on"),
    Step(
        "compiled",
        100,
        "torch.compile on: bf16 rows of baseline, logit_viewcache, dkd and "
        "the teacher forward (feature methods' forward_stages is never compiled)",
    ),
)
TOTAL_BUDGET_S = 480  # 8 minutes with the wheel install and start-up around it
SMOKE_BUDGET_S = 300
SIZES = {  # GPU sizes, and toy sizes for --smoke-cpu
    "gpu": {
        "batch": 64,
        "timing": (5, 20, 5),
        "n_train": 20_000,
        "teacher_batches": (64, 512),
        "det_steps": 50,
        "det_batch": 64,
    },
    "smoke": {
        "batch": 8,
        "timing": (1, 1, 2),
        "n_train": 1024,
        "teacher_batches": (8,),
        "det_steps": 3,
        "det_batch": 16,
    },
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/device_check.sh", description=__doc__.split("\n")[0])
    p.add_argument("out", nargs="?", default="device_check", help="output folder")
    p.add_argument("--dry-run", action="store_true", help="print the steps and budgets only")
    p.add_argument(
        "--smoke-cpu",
        action="store_true",
        help="every step on the CPU at toy sizes (development check, not figures)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="CIFAR-10 root for the determinism runs (default: synthetic images)",
    )
    p.add_argument("--only", default=None, help="comma-separated steps to run (default: all)")
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help=f"total seconds for all steps (default {TOTAL_BUDGET_S}; smoke: unlimited)",
    )
    p.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "kdlab_device_check"),
        help="scratch folder: data, runs, caches (kept out of OUT)",
    )
    p.add_argument("--run-step", default=None, help=argparse.SUPPRESS)  # one step, in-process
    p.add_argument("--step-json", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def plan(a: argparse.Namespace) -> list[Step]:
    names = [s.name for s in STEPS]
    chosen = names if not a.only else a.only.split(",")
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise SystemExit(f"device_check: unknown step(s) {unknown}; steps: {', '.join(names)}")
    return [s for s in STEPS if s.name in chosen]


def dry_run(steps: list[Step], smoke: bool) -> None:
    for s in steps:
        budget = SMOKE_BUDGET_S if smoke else s.budget_s
        print(f"{s.name:<20} {budget:>4} s  {s.what}")
    total = sum(SMOKE_BUDGET_S if smoke else s.budget_s for s in steps)
    print(
        f"total: {len(steps)} steps, {total} s of step budgets"
        + ("" if smoke else f" (capped at {TOTAL_BUDGET_S} s)")
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_one(step: Step, timeout: float, a: argparse.Namespace, work: Path, logs: Path) -> dict:
    """Run ``step`` in its own process group; kill the whole group when its time is up."""
    step_json = work / "steps" / f"{step.name}.json"
    step_json.parent.mkdir(parents=True, exist_ok=True)
    step_json.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "kdlab.bench.device_check",
        str(a.out),
        "--run-step",
        step.name,
        "--step-json",
        str(step_json),
        "--work",
        str(work),
    ]
    cmd += (["--smoke-cpu"] if a.smoke_cpu else []) + (
        ["--data-root", a.data_root] if a.data_root else []
    )
    log_path = logs / f"{step.name}.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc, status = proc.wait(timeout=timeout), None
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, status = None, "timeout"
    seconds = round(time.perf_counter() - t0, 1)
    status = status or ("ok" if rc == 0 else "error")
    tail = log_path.read_text(errors="replace")[-1500:] if status != "ok" else ""
    result = json.loads(step_json.read_text()) if step_json.is_file() else {}
    print(f"[{step.name}] {status} in {seconds} s (budget {timeout:.0f} s)", flush=True)
    return {
        "step": step.name,
        "status": status,
        "rc": rc,
        "seconds": seconds,
        "budget_s": round(timeout),
        "log": str(log_path),
        "log_tail": tail,
        "result": result,
    }


def orchestrate(a: argparse.Namespace, steps: list[Step]) -> int:
    from kdlab.bench.device_report import write_report

    out = Path(a.out)
    work = Path(a.work)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    budget = a.budget or (None if a.smoke_cpu else TOTAL_BUDGET_S)
    report: dict[str, Any] = {
        "device_check": 1,
        "mode": "smoke-cpu" if a.smoke_cpu else "gpu",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "budget_s": budget,
        "plan": [asdict(s) for s in steps],
        "steps": [],
    }
    t0 = time.perf_counter()
    for step in steps:
        left = None if budget is None else budget - (time.perf_counter() - t0)
        timeout = SMOKE_BUDGET_S if a.smoke_cpu else step.budget_s
        if left is not None and left < min(timeout, 10):
            entry = {"step": step.name, "status": "skipped", "reason": "total budget spent"}
            print(f"[{step.name}] skipped: total budget spent", flush=True)
        else:
            timeout = timeout if left is None else min(timeout, left)
            entry = run_one(step, timeout, a, work, logs)
        report["steps"].append(entry)
        report["elapsed_s"] = round(time.perf_counter() - t0, 1)
        write_report(report, out)
    bad = [s["step"] for s in report["steps"] if s["status"] != "ok"]
    print(
        f"device_check: {len(steps) - len(bad)}/{len(steps)} steps ok in "
        f"{report['elapsed_s']} s → {out / 'device_check.json'}, {out / 'device_check.md'}"
        + (f"; not ok: {', '.join(bad)}" if bad else "")
    )
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.run_step:
        from kdlab.bench.device_steps import run_step

        return run_step(a.run_step, Path(a.step_json), Path(a.work), a.smoke_cpu, a.data_root)
    steps = plan(a)
    if a.dry_run:
        dry_run(steps, a.smoke_cpu)
        return 0
    import torch

    if not a.smoke_cpu and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    return orchestrate(a, steps)


if __name__ == "__main__":
    sys.exit(main())
