"""``python -m kdlab.bench [--quick] [--out bench.json]``: measured images/s, never estimates.

Rows (each: median images/s, min–max over ``--repeats`` windows of ``--steps`` steps, after
``--warmup`` steps that are not timed):

- ``pipeline/<dataloader|device>``: augmentation only (crop, flip, normalise; batches moved
  to the device), the DataLoader with ``--workers`` worker processes vs the device pipeline;
- ``step/<method>/<pipeline>/<eager|compiled>``: full training steps (data + forward +
  backward + clipping + optimiser) for baseline, logit KD, feature KD, a 3-teacher ensemble
  and logit KD served by the view cache (device pipeline only);
- ``teacher_forward``: the folded teacher alone under inference mode (view-cache economics);
- ``zoo/<method>/<teacher>-<student>``: full steps of KD, DKD, CRD, ReviewKD, SDD over DKD
  (SD-DKD), MLKD (with its strong views: two forward passes of each network) and FCFD (with its
  teacher paths) on a pair of the CIFAR-100 benchmark (resnet32x4 → resnet8x4; ``--quick``:
  resnet56 → resnet20), batch 64, device pipeline, with the published settings of
  ``conf/distill``;
- ``loop/<lightning|plain>``: the same logit-KD step in ``Trainer.fit`` and in a hand loop.

``--pairs all`` runs the small-student rows of the benchmark's pairs instead (every method in
bf16 and fp32, eager and compiled, with peak device memory; ``kdlab/bench/pairs.py``).
Compiled rows run on CUDA (or with ``--compile``); otherwise they are recorded as skipped with
the reason. Synthetic uint8 images in memory: no download. ``--quick`` uses small models
(the notebook's small CNN student, PreResNet-20 teachers) and few steps so it ends in about a minute on
2 CPU cores; the JSON records the models and settings that ran.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from kdlab.bench import steps as S
from kdlab.bench.economics import view_cache_economics
from kdlab.bench.hardware import hardware
from kdlab.bench.lightning_loop import lightning_rate


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kdlab.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small models, few steps, no compile")
    p.add_argument("--out", default="bench.json", help="JSON output path")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (128; quick 16)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed window (10; quick 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed windows (5; quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (5; quick 1)")
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--size", choices=sorted(S.MODELS), default=None, help="model pair")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compiled rows (default: on CUDA only; never with --quick)",
    )
    e = p.add_argument_group("epochs of the real system vs a plain loop (--epoch)")
    e.add_argument("--epoch", action="store_true", help="run the epoch rows instead")
    e.add_argument("--models", default="cnn,resnet20", help="conf/model names (cnn,resnet20)")
    e.add_argument("--pipelines", default="dataloader,device", help="data pipelines")
    e.add_argument("--epochs", type=int, default=3, help="epochs per run (first is not timed)")
    e.add_argument(
        "--data-root",
        default=os.environ.get("KDLAB_DATA", "data"),
        help="CIFAR-10 root (torchvision layout; default $KDLAB_DATA or ./data)",
    )
    e.add_argument(
        "--verify",
        default="md5",
        choices=["md5", "structure"],
        help="data.verify for the copy in --data-root",
    )
    e.add_argument("--val-size", type=int, default=5000, help="data.val_size")
    e.add_argument(
        "--train-batches",
        type=int,
        default=None,
        help="training batches per epoch (default: the whole split)",
    )
    from kdlab.bench import pairs as P

    r = p.add_argument_group("the benchmark's small-student pairs (--pairs; kdlab/bench/pairs.py)")
    r.add_argument("--pairs", default=None, help=f"'all' or some of {','.join(P.PAIRS)}")
    r.add_argument("--methods", default=",".join(P.METHODS), help="pair rows' methods")
    r.add_argument("--precisions", default=",".join(P.PRECISIONS), help="bf16,fp32")
    r.add_argument("--modes", default="eager", help="eager,compiled")
    r.add_argument("--teacher-batches", default="64,512", help="teacher forward rows' batches")
    r.add_argument(
        "--n-train",
        type=int,
        default=20_000,
        help="images in memory (CRD's bank and the view cache are sized for them)",
    )
    r.add_argument(
        "--deterministic",
        action="store_true",
        help="torch.use_deterministic_algorithms(True), as trainer.deterministic",
    )
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    a = p.parse_args(argv)
    q = a.quick
    if a.pairs:  # the benchmark recipe's batch; windows long enough for a GPU step
        a.batch_size, a.steps = a.batch_size or P.BATCH, a.steps or 20
    a.batch_size = a.batch_size or (16 if q else 128)
    a.steps, a.repeats = a.steps or (2 if q else 10), a.repeats or (3 if q else 5)
    a.warmup = a.warmup or (1 if q else 5)
    a.size = a.size or ("quick" if q else "full")
    if a.compile is None:
        a.compile = torch.cuda.is_available() and not q
    return a


def run(a: argparse.Namespace) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = device.type == "cuda"  # bf16 autocast, as the trainer's precision default
    b, timing = a.batch_size, (a.warmup, a.steps, a.repeats)
    n = max(b * (a.warmup + a.steps * a.repeats + 1), 1024)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    rows: list[dict] = []

    def add(name: str, result: dict | None = None, skipped: str | None = None, **info) -> None:
        rows.append({"name": name, **info, **(result or {}), "skipped": skipped})
        shown = f"{result['images_per_s']:.0f} img/s" if result else f"skipped: {skipped}"
        print(f"  {name}: {shown}", flush=True)

    pb = 128  # pipelines alone at the full-size batch
    for pipe in ("dataloader", "device"):
        it = S.endless(S.make_loader(pipe, images, labels, pb, device, a.workers))
        res = S.time_it(lambda: S.to_device(next(it), device), pb, device, *timing)  # noqa: B023
        add(f"pipeline/{pipe}", res, kind="pipeline", pipeline=pipe, batch=pb)
    for mode in ("eager", "compiled"):
        for method in S.METHODS:
            for pipe in ("dataloader", "device"):
                name = f"step/{method}/{pipe}/{mode}"
                if method == "logit_viewcache" and pipe == "dataloader":
                    continue  # the DataLoader path cannot report views (falls back online)
                if mode == "compiled" and not a.compile:
                    why = "--quick" if a.quick else "CPU: inductor compile time ≫ run (--compile)"
                    add(name, skipped=why, kind="step", method=method, pipeline=pipe, mode=mode)
                    continue
                system = S.build_system(
                    method.removesuffix("_viewcache"), a.size, compile=mode == "compiled"
                )
                if method == "logit_viewcache":
                    S.attach_random_view_cache(system, n)
                opt = S.prepare(system, device, compile=mode == "compiled")
                step = S.make_step(system, opt, device, amp)
                loader = S.make_loader(pipe, images, labels, b, device, a.workers)
                it = S.endless(loader)
                res = S.time_it(lambda: step(next(it)), b, device, *timing)  # noqa: B023
                add(name, res, kind="step", method=method, pipeline=pipe, mode=mode)
    zoo_labels = torch.randint(0, 100, (n,), generator=g)
    for method in S.ZOO_METHODS:  # the benchmark pair at the benchmark's batch of 64
        system = S.build_zoo_system(method, a.size, n)
        step = S.make_step(system, S.prepare(system, device), device, amp)
        strong = system.criterion.needs_strong_view
        loader = S.make_loader("device", images, zoo_labels, 64, device, a.workers, strong)
        it = S.endless(loader)
        res = S.time_it(lambda: step(next(it)), 64, device, *timing)  # noqa: B023
        t_arch, s_arch = S.ZOO_PAIRS[a.size]
        add(
            f"zoo/{method}/{t_arch}-{s_arch}",
            res,
            kind="zoo",
            method=method,
            base=S.ZOO_BASES.get(method),
            pair=f"{t_arch}-{s_arch}",
            batch=64,
        )
    system = S.build_system("logit", a.size)
    S.prepare(system, device)
    x = torch.randn(b, 3, 32, 32, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        res = S.time_it(lambda: system.teacher.predict(x), b, device, *timing)
    add("teacher_forward", res, kind="teacher")
    for loop in ("lightning", "plain"):
        system = S.build_system("logit", a.size)
        loader = S.make_loader("device", images, labels, b, device, a.workers)
        if loop == "lightning":
            res = lightning_rate(system, loader, device, b, *timing)
        else:
            step = S.make_step(system, S.prepare(system, device), device, amp)
            it = S.endless(loader)
            res = S.time_it(lambda: step(next(it)), b, device, *timing)  # noqa: B023
        add(f"loop/{loop}", res, kind="loop", method="logit", pipeline="device")
    return {"rows": rows, "view_cache": view_cache_economics(rows)}


def table(report: dict) -> None:
    """A rich table of every row (median, spread) and the view-cache economics."""
    from rich.table import Table

    from kdlab.utils.console import table_console

    t = Table(title=f"kdlab.bench ({report['hardware']['cpu']}; GPU {report['hardware']['gpu']})")
    for col in ("row", "images/s (median)", "min–max", "note"):
        t.add_column(col, justify="right" if col != "row" else "left")
    for r in report["rows"]:
        if r["skipped"]:
            t.add_row(r["name"], "—", "—", f"skipped: {r['skipped']}")
        else:
            t.add_row(r["name"], f"{r['images_per_s']:.1f}", f"{r['min']:.1f}–{r['max']:.1f}", "")
    con = table_console()
    con.print(t)
    for k, v in report["view_cache"].items():
        con.print(f"view cache · {k}: {v}")


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.epoch:
        return epoch_main(a)
    if a.pairs:
        from kdlab.bench.pairs import pairs_main

        return pairs_main(a)
    settings = {k: v for k, v in vars(a).items()}
    settings["models"] = {k: v[0] for k, v in S.MODELS[a.size].items()}
    settings["amp_bf16"] = torch.cuda.is_available()
    print(f"kdlab.bench: {settings}", flush=True)
    report = {"hardware": hardware(), "settings": settings, **run(a)}
    Path(a.out).write_text(json.dumps(report, indent=2))
    table(report)
    print(f"wrote {a.out}")
    return report


def epoch_main(a: argparse.Namespace) -> dict:
    """``--epoch``: seconds per epoch of kdlab.train and of a plain loop, and their ratio."""
    from kdlab.bench.epoch import epoch_rows

    batch = a.batch_size if a.batch_size != 128 else 64  # the benchmark students' batch
    data = [f"data.root={a.data_root}", f"data.verify={a.verify}", f"data.val_size={a.val_size}"]
    settings = {
        "models": a.models.split(","),
        "pipelines": a.pipelines.split(","),
        "epochs": a.epochs,
        "batch": batch,
        "threads": a.threads or 1,
        "data": data,
        "train_batches": a.train_batches,
    }
    print(f"kdlab.bench --epoch: {settings}", flush=True)
    rows = epoch_rows(
        settings["models"],
        settings["pipelines"],
        data,
        a.epochs,
        batch,
        settings["threads"],
        a.train_batches,
    )
    report = {"hardware": hardware(), "settings": settings, "rows": rows}
    Path(a.out).write_text(json.dumps(report, indent=2))
    from rich.table import Table

    from kdlab.utils.console import table_console

    t = Table(
        title=f"kdlab.bench --epoch ({report['hardware']['cpu']}; GPU {report['hardware']['gpu']})"
    )
    for col in ("model", "pipeline", "kdlab s/epoch", "plain s/epoch", "kdlab / plain"):
        t.add_column(col)
    by = {(r["model"], r["pipeline"], r.get("loop", "ratio")): r for r in rows}
    for m in settings["models"]:
        for pipe in settings["pipelines"]:
            t.add_row(
                m,
                pipe,
                f"{by[m, pipe, 'kdlab']['seconds_per_epoch']:.2f}",
                f"{by[m, pipe, 'plain']['seconds_per_epoch']:.2f}",
                f"{by[m, pipe, 'ratio']['ratio']:.2f}×",
            )
    table_console().print(t)
    print(f"wrote {a.out}")
    return report


if __name__ == "__main__":
    main()
