"""Training steps of the CIFAR-100 benchmark's small-student pairs, and the teacher's fast path.

``python -m kdlab.bench --pairs all`` times, per row, full training steps (device pipeline,
batch 64 as in the benchmark recipe, synthetic uint8 images, 100 classes) and records the peak
device memory of the row:

- ``pair/<teacher>-<student>/<method>/<bf16|fp32>/<eager|compiled>``: ``baseline`` (the student
  alone), ``logit_viewcache`` (logit KD, teacher logits looked up in a 162-view cache), ``dkd``,
  ``crd`` and ``reviewkd`` with their published ``conf/distill`` settings, on resnet56 →
  resnet20 and resnet32x4 → resnet8x4. Compiled rows exist for the methods whose student runs
  ``forward`` (``COMPILED``): feature methods read ``forward_stages``, which stays eager, so a
  compiled row of theirs would time the eager network.
- ``teacher/<arch>/<plain|fast>/<precision>/b<batch>``: the teacher's forward alone, ``plain``
  as an ``eval()`` network under ``no_grad``, ``fast`` as kdlab's frozen teacher runs it
  (BatchNorm folded, ``inference_mode``, its own memory-format choice, compiled in the compiled
  mode).

Peak memory is ``torch.cuda.max_memory_allocated`` from the start of a row's set-up to its end
(so it includes the view cache's table: N × 162 × 100 fp16); ``None`` on a CPU. A row that
raises is recorded with its error and the next row runs. ``on_row`` is called after each row so
a caller can save partial results (a killed run still leaves every finished row).
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from kdlab.bench import steps as S

PAIRS = {
    "resnet56-resnet20": ("resnet56", "resnet20"),
    "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4"),
}
METHODS = ("baseline", "logit_viewcache", "dkd", "crd", "reviewkd")
RECENT = ("sdd", "mlkd", "fcfd")  # methods since 2022: SD-DKD, MLKD (strong views), FCFD
COMPILED = ("baseline", "logit_viewcache", "dkd")  # their student's whole forward is compiled
PRECISIONS = {"bf16": torch.bfloat16, "fp32": None}
BATCH = 64  # the benchmark recipe's batch


def _peak_start(device: torch.device) -> None:
    gc.collect()  # the previous row's system must not count towards this row's peak
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _row(name: str, work: Callable[[], dict], device: torch.device, **info) -> dict[str, Any]:
    """Run one row; its error (if any) is recorded instead of raised."""
    _peak_start(device)
    try:
        result, error = work(), None
    except Exception as err:  # one broken row must not cost the rows after it
        result, error = {}, f"{type(err).__name__}: {err}"
    row = {"name": name, **info, **result, "peak_mem_mb": _peak_mb(device), "error": error}
    shown = f"{row['images_per_s']:.0f} img/s" if "images_per_s" in row else f"error: {error}"
    print(f"  {name}: {shown} (peak {row['peak_mem_mb']} MB)", flush=True)
    return row


def step_row(
    pair: str,
    method: str,
    precision: str,
    mode: str,
    device: torch.device,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    timing: tuple[int, int, int],
    deterministic: bool = False,
) -> dict[str, Any]:
    """images/s of full training steps of ``method`` on ``pair`` (``pair/…`` row; the caller
    has switched deterministic algorithms on when ``deterministic`` says so)."""
    t_arch, s_arch = PAIRS[pair]
    info = {
        "kind": "pair",
        "pair": pair,
        "method": method,
        "precision": precision,
        "mode": mode,
        "batch": batch,
        "deterministic": deterministic,
    }

    def work() -> dict:
        system = S.build_pair_system(
            method, t_arch, s_arch, len(images), mode == "compiled", device
        )
        opt = S.prepare(system, device, compile=mode == "compiled")
        amp = PRECISIONS[precision] is not None
        step = S.make_step(system, opt, device, amp)
        strong = bool(getattr(system.criterion, "needs_strong_view", False))
        it = S.endless(
            S.make_loader("device", images, labels, batch, device, 0, strong_view=strong)
        )
        res = S.time_it(lambda: step(next(it)), batch, device, *timing)
        return res | {"prepared": system.memory_formats() | {"compile": mode == "compiled"}}

    name = f"pair/{pair}/{method}/{precision}/{mode}" + ("/deterministic" if deterministic else "")
    return _row(name, work, device, **info)


def teacher_row(
    arch: str,
    path: str,
    precision: str,
    compiled: bool,
    device: torch.device,
    batch: int,
    timing: tuple[int, int, int],
) -> dict[str, Any]:
    """images/s of the teacher's forward, plain or on kdlab's fast path (``teacher/…`` row)."""
    from kdlab.models.zoo import build
    from kdlab.teachers import FrozenTeacher

    mode = "compiled" if compiled else "eager"
    info = {
        "kind": "teacher",
        "teacher": arch,
        "path": path,
        "precision": precision,
        "mode": mode,
        "batch": batch,
    }
    dtype = PRECISIONS[precision]

    def work() -> dict:
        torch.manual_seed(0)
        net = S.random_bn(build(arch, 100), 0)
        x = torch.randn(batch, 3, 32, 32, device=device)
        auto = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
        if path == "plain":
            net = net.eval().to(device)
            if compiled:
                net.compile()

            def forward() -> None:
                with torch.no_grad(), auto:
                    net(x)

            return S.time_it(forward, batch, device, *timing)
        teacher = FrozenTeacher(net, compile=compiled)
        prepared = teacher.prepare(device)
        teacher.to(device)

        def predict() -> None:
            with auto:
                teacher.predict(x)

        return S.time_it(predict, batch, device, *timing) | {"prepared": prepared}

    return _row(f"teacher/{arch}/{path}/{precision}/{mode}/b{batch}", work, device, **info)


def pair_rows(
    pairs: Sequence[str],
    methods: Sequence[str],
    precisions: Sequence[str],
    modes: Sequence[str],
    device: torch.device,
    batch: int = BATCH,
    timing: tuple[int, int, int] = (5, 20, 5),
    n_train: int = 20_000,
    teacher_batches: Sequence[int] = (64, 512),
    on_row: Callable[[list], None] | None = None,
    deterministic: bool = False,
) -> list[dict[str, Any]]:
    """Every ``pair/…`` row, then the ``teacher/…`` rows, for each precision and mode."""
    g = torch.Generator().manual_seed(0)
    n = max(n_train, batch * 4)
    images = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 100, (n,), generator=g)
    rows: list[dict[str, Any]] = []

    def add(row: dict) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(rows)

    for mode in modes:
        for precision in precisions:
            for pair in pairs:
                for method in methods:
                    if mode == "compiled" and method not in COMPILED:
                        continue
                    add(
                        step_row(
                            pair,
                            method,
                            precision,
                            mode,
                            device,
                            images,
                            labels,
                            batch,
                            timing,
                            deterministic,
                        )
                    )
            teachers = dict.fromkeys(PAIRS[p][0] for p in pairs)
            for arch in teachers:
                for tb in teacher_batches:
                    for path in ("plain", "fast"):
                        add(
                            teacher_row(
                                arch, path, precision, mode == "compiled", device, tb, timing
                            )
                        )
    return rows


def use_deterministic_algorithms() -> None:
    """What ``trainer.deterministic=true`` switches on (cuBLAS needs its workspace setting
    before its first use)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


def pairs_main(a) -> dict[str, Any]:
    """``python -m kdlab.bench --pairs …``: the rows above into ``--out`` (rewritten per row)."""
    from kdlab.bench.hardware import hardware

    if a.deterministic:
        use_deterministic_algorithms()
    device = torch.device(
        a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    pairs = list(PAIRS) if a.pairs == "all" else a.pairs.split(",")
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown:
        raise SystemExit(f"unknown pair(s) {unknown}; choose from {sorted(PAIRS)} or 'all'")
    settings = {
        "pairs": pairs,
        "methods": a.methods.split(","),
        "precisions": a.precisions.split(","),
        "modes": a.modes.split(","),
        "batch": a.batch_size,
        "timing": {"warmup": a.warmup, "steps": a.steps, "repeats": a.repeats},
        "n_train": a.n_train,
        "teacher_batches": [int(b) for b in a.teacher_batches.split(",") if b],
        "device": str(device),
        "deterministic": bool(a.deterministic),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    print(f"kdlab.bench --pairs: {settings}", flush=True)
    report: dict[str, Any] = {"hardware": hardware(), "settings": settings, "rows": []}
    out = Path(a.out)

    def save(rows: list) -> None:
        report["rows"] = rows
        out.write_text(json.dumps(report, indent=2, default=str))

    save([])
    pair_rows(
        pairs,
        settings["methods"],
        settings["precisions"],
        settings["modes"],
        device,
        a.batch_size,
        (a.warmup, a.steps, a.repeats),
        a.n_train,
        settings["teacher_batches"],
        on_row=save,
        deterministic=a.deterministic,
    )
    print(f"wrote {out}")
    return report
