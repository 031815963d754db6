"""``device_check.json`` and ``device_check.md``: the device check's results, rewritten after
every step (the markdown tables are what docs/benchmarks.md takes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _num(v: Any, fmt: str = ",.0f") -> str:
    return format(v, fmt) if isinstance(v, int | float) and not isinstance(v, bool) else "—"


def _rows(report: dict, kind: str) -> list[dict]:
    out = []
    for step in report["steps"]:
        for row in (step.get("result") or {}).get("rows", []):
            if row.get("kind") == kind:
                out.append(row)
    return out


def _rate(r: dict) -> tuple[str, str]:
    if r.get("error"):
        return f"error: {r['error'][:120]}", "—"
    return _num(r.get("images_per_s")), f"{_num(r.get('min'))}–{_num(r.get('max'))}"


def markdown(report: dict) -> str:
    """The report as markdown: machine, steps, then one table per kind of result."""
    lines = ["# kdlab device check", ""]
    env = next(
        (
            s["result"].get("info")
            for s in report["steps"]
            if s["step"] == "env" and s.get("result")
        ),
        None,
    )
    if env:
        hw = env["hardware"]
        gpu = hw.get("gpu_info") or {}
        lines += [
            f"Machine: {hw.get('gpu') or 'no GPU'} ({gpu.get('memory_gb', '—')} GB, capability "
            f"{gpu.get('capability', '—')}, CUDA {gpu.get('cuda', '—')}, cuDNN "
            f"{gpu.get('cudnn', '—')}); {hw['cpu']}, {hw['cores']} cores; torch {hw['torch']}, "
            f"Python {env['python']}, lightning {env['versions'].get('lightning')}.",
            f"nvidia-smi: {env.get('nvidia_smi')}",
            "",
        ]
    lines += [
        f"Mode: {report['mode']}; started {report['started']}; "
        f"{report.get('elapsed_s', 0)} s of {report.get('budget_s') or 'unlimited'} s.",
        "",
        "| step | status | seconds | budget s |",
        "|---|---|---:|---:|",
    ]
    for s in report["steps"]:
        lines.append(
            f"| {s['step']} | {s['status']} | {_num(s.get('seconds'), '.1f')} | "
            f"{_num(s.get('budget_s'), 'd')} |"
        )
    pairs = _rows(report, "pair")
    if pairs:
        lines += [
            "",
            "## Training steps (images/s; device pipeline, synthetic images, 100 classes)",
            "",
            "| pair | method | precision | mode | deterministic | batch | images/s "
            "(median) | min–max | peak MB |",
            "|---|---|---|---|---|---:|---:|---:|---:|",
        ]
        for r in pairs:
            rate, spread = _rate(r)
            lines.append(
                f"| {r['pair']} | {r['method']} | {r['precision']} | {r['mode']} | "
                f"{'yes' if r.get('deterministic') else 'no'} | {r['batch']} | {rate} | "
                f"{spread} | {_num(r.get('peak_mem_mb'))} |"
            )
    teachers = _rows(report, "teacher")
    if teachers:
        lines += [
            "",
            "## Teacher forward: plain eval() vs kdlab's fast path",
            "",
            "| teacher | path | precision | mode | batch | images/s (median) | min–max | peak MB |",
            "|---|---|---|---|---:|---:|---:|---:|",
        ]
        for r in teachers:
            rate, spread = _rate(r)
            lines.append(
                f"| {r['teacher']} | {r['path']} | {r['precision']} | {r['mode']} | "
                f"{r['batch']} | {rate} | {spread} | {_num(r.get('peak_mem_mb'))} |"
            )
    det = next(
        (
            s["result"].get("info")
            for s in report["steps"]
            if s["step"] == "determinism" and s.get("result")
        ),
        None,
    )
    if det:
        lines += ["", "## Determinism (trainer.deterministic=true, two identical runs)", ""]
        if "weights" in det:
            w = det["weights"]
            lines.append(
                f"{det['steps']} steps, batch {det['batch']}: **"
                f"{'identical' if det['identical'] else 'NOT identical'}** — "
                f"{w['differing']} of {w['tensors']} tensors differ (max |Δ| "
                f"{w['max_abs_diff']:.3g}); results.json metrics equal: "
                f"{det['metrics_equal']}; run seconds "
                f"{[r['seconds'] for r in det['runs']]}."
            )
        else:
            lines.append(f"error: {det.get('error')}")
    prec = _rows(report, "precision")
    if prec:
        lines += [
            "",
            "## bf16-mixed vs fp32: loss of one batch",
            "",
            "| pair | method | fp32 loss | bf16 loss | relative Δ | max logit Δ | ok |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for r in prec:
            if r.get("error"):
                lines.append(f"| {r['pair']} | {r['method']} | error: {r['error'][:120]} | | | | |")
                continue
            lines.append(
                f"| {r['pair']} | {r['method']} | {r['loss_fp32']:.5f} | "
                f"{r['loss_bf16']:.5f} | {r['rel_diff']:.2e} | "
                f"{r['logits_max_abs_diff']:.3g} | {'yes' if r['ok'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> None:
    """Both files, each replaced atomically (a kill never leaves half a file)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("device_check.json", json.dumps(report, indent=2, default=str)),
        ("device_check.md", markdown(report)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
