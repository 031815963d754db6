"""The report's tables: results.csv (one row per group), results.md and the terminal view.

results.csv keeps full precision for further analysis; results.md holds the same numbers
rounded for a paper or README, in four sections: all configurations, Δ vs baseline with its
statistics, the best-on-val configuration per pair and method, and the capacity-gap table.
Skipped and missing runs are listed at the end so a partial sweep is never mistaken for a
complete one.
"""

from __future__ import annotations

import csv
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kdlab.report import fmt
from kdlab.report.capacity import capacity_gap_rows
from kdlab.report.stats import (
    DELTA_METRIC,
    FLAT_PARAMS,
    GROUP_FIELDS,
    Group,
    GroupKey,
    best_configs,
    delta_vs_baseline,
    metric_columns,
    metric_frame,
)

DELTA_FIELDS = ("n", "mean", "ci_low", "ci_high", "t", "p")


def summary_rows(groups: dict[GroupKey, Group]) -> list[dict]:
    """One flat dict per group: key fields, n, seeds, mean/std of every numeric measurement
    the runs recorded, Δ and its test."""
    best_ids = {id(g) for g in best_configs(groups).values()}
    frame = metric_frame(groups)
    metrics = metric_columns(frame)
    rows = []
    for i, (key, grp) in enumerate(groups.items()):
        row: dict = dict(zip(GROUP_FIELDS, key, strict=True))
        row |= {k: grp.params.get(k) for k in FLAT_PARAMS}  # the columns existing scripts read
        row["config"] = grp.label
        row["n"] = len(grp.runs)
        row["seeds"] = " ".join(map(str, grp.seeds))
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = (_cell(frame, i, m, s) for s in ("mean", "std"))
        d = delta_vs_baseline(grp, groups)
        for f in DELTA_FIELDS:
            row[f"delta_{f}"] = getattr(d, f) if d else None
        row["delta_unpaired_seeds"] = " ".join(map(str, d.unpaired)) if d else ""
        row["best_on_val"] = id(grp) in best_ids
        rows.append(row)
    return rows


def _cell(frame, row: int, metric: str, stat: str) -> float:
    """One aggregate as a float; NaN where no run of the group (or none at all) recorded it."""
    if (metric, stat) not in frame.columns:
        return float("nan")
    v = frame.at[row, (metric, stat)]
    return float("nan") if v is None or v != v else float(v)


def write_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(GROUP_FIELDS))
        w.writeheader()
        w.writerows(rows)
    return path


def _config(g: Group) -> str:
    return g.label


KEY_HEADERS = ["Dataset", "Teacher", "Student", "Method", "Config", "n"]


def groups_table(groups: dict[GroupKey, Group]) -> tuple[list[str], list[list[str]]]:
    shown = fmt.shown_metrics()
    headers = KEY_HEADERS + [name for name, _ in shown.values()]
    rows = []
    for g in groups.values():
        rows.append(
            [
                g.dataset,
                fmt.arch(g.teacher) if g.teacher else fmt.DASH,
                fmt.arch(g.student),
                fmt.method(g.method),
                _config(g),
                str(len(g.runs)),
            ]
            + [fmt.pm(g.stat(k), digits) for k, (_, digits) in shown.items()]
        )
    return headers, rows


def delta_table(groups: dict[GroupKey, Group]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "Dataset",
        "Teacher → Student",
        "Method",
        "Config",
        "n paired",
        "Δ test acc",
        "95 % CI",
        "t",
        "p",
        "Unpaired seeds",
    ]
    rows = []
    for g in groups.values():
        d = delta_vs_baseline(g, groups)
        if d is None:
            continue
        ci = fmt.DASH if fmt.isnan(d.ci_low) else f"[{d.ci_low:+.2f}, {d.ci_high:+.2f}]"
        rows.append(
            [
                g.dataset,
                f"{fmt.arch(g.teacher)} → {fmt.arch(g.student)}",
                fmt.method(g.method),
                _config(g),
                str(d.n),
                fmt.signed(d.mean),
                ci,
                fmt.num(d.t),
                fmt.pvalue(d.p),
                " ".join(map(str, d.unpaired)) or fmt.DASH,
            ]
        )
    return headers, rows


def best_table(groups: dict[GroupKey, Group]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "Dataset",
        "Teacher",
        "Student",
        "Method",
        "Best config (on val)",
        "n",
        "Val acc",
        "Test acc (best val)",
        "Δ vs baseline",
    ]
    rows = []
    for g in best_configs(groups).values():
        d = delta_vs_baseline(g, groups)
        rows.append(
            [
                g.dataset,
                fmt.arch(g.teacher) if g.teacher else fmt.DASH,
                fmt.arch(g.student),
                fmt.method(g.method),
                _config(g),
                str(len(g.runs)),
                fmt.pm(g.stat("val_acc_best")),
                fmt.pm(g.stat(DELTA_METRIC)),
                fmt.signed(d.mean) if d else fmt.DASH,
            ]
        )
    return headers, rows


def walltime_table(groups: dict[GroupKey, Group]) -> tuple[list[str], list[list[str]]]:
    """Each group's training time as its runs recorded it (results.json ``duration_s``)."""
    headers = [
        "Dataset",
        "Teacher → Student",
        "Method",
        "Config",
        "n",
        "Epochs",
        "Wall per run",
        "Sum",
    ]
    rows = []
    for g in groups.values():
        times = g.values("duration_s")
        if not times:
            continue
        epochs = sorted(
            {r.get("epochs_trained") or r.get("epochs") for r in g.runs.values()} - {None}
        )
        pair = (
            f"{fmt.arch(g.teacher)} → {fmt.arch(g.student)}" if g.teacher else fmt.arch(g.student)
        )
        rows.append(
            [
                g.dataset,
                pair,
                fmt.method(g.method),
                _config(g),
                str(len(times)),
                ", ".join(map(str, epochs)) or fmt.DASH,
                fmt.duration(sum(times.values()) / len(times)),
                fmt.duration(sum(times.values())),
            ]
        )
    return headers, rows


def datasets(groups: dict[GroupKey, Group]) -> list[str]:
    return sorted({g.dataset for g in groups.values()})


def render_markdown(groups: dict[GroupKey, Group], problems: list[str] | None = None) -> str:
    """The whole results.md: every table of the report, one capacity-gap table per dataset."""
    out = [
        "# Results\n",
        "Accuracies in %, mean ± sample std over seeds; test accuracy is "
        "measured with the best-val weights unless marked final.\n",
    ]
    out += ["## All configurations\n", fmt.markdown_table(*groups_table(groups))]
    headers, rows = delta_table(groups)
    if rows:
        out += [
            "## Δ vs baseline (paired by seed)\n",
            "Δ = distilled − baseline test accuracy (pp) over the seeds both have; CI from "
            "the t distribution; p from a paired t-test.\n",
            fmt.markdown_table(headers, rows),
        ]
    out += [
        "## Best configuration per pair and method (chosen on val, reported on test)\n",
        fmt.markdown_table(*best_table(groups)),
    ]
    for ds in datasets(groups):
        headers, rows = capacity_gap_rows(groups, ds)
        if rows:
            out += [
                f"## Capacity gap ({ds})\n",
                "Δ: gain of the method's best-on-val config over the baseline, ± half-width "
                "of its 95 % CI.\n",
                fmt.markdown_table(headers, rows),
            ]
    headers, rows = walltime_table(groups)
    if rows:
        out += [
            "## Wall times\n",
            "As the runs recorded them (results.json `duration_s`: "
            "training and testing, on whatever machine each ran).\n",
            fmt.markdown_table(headers, rows),
        ]
    if problems:
        out += ["## Skipped and missing runs\n", "\n".join(f"- {p}" for p in problems) + "\n"]
    return "\n".join(out)


# Columns the terminal view leaves out so the table fits; results.md has them all.
TERMINAL_LEAVES_OUT = ("Test acc (final)", "NLL", "ECE", "Teacher acc")


def _rich(title: str, headers: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, header_style="bold")
    for h in headers:
        table.add_column(escape(h))
    for r in rows:
        table.add_row(*(escape(str(c)) for c in r))
    return table


def print_terminal(groups: dict[GroupKey, Group], console: Console | None = None) -> None:
    """The main tables, rendered with rich for a terminal (or a log when not a tty)."""
    console = console or Console()
    headers, rows = groups_table(groups)
    keep = [i for i, h in enumerate(headers) if h not in TERMINAL_LEAVES_OUT]
    console.print(
        _rich(
            "Results per configuration",
            [headers[i] for i in keep],
            [[r[i] for i in keep] for r in rows],
        )
    )
    headers, rows = delta_table(groups)
    if rows:
        console.print(_rich("Δ vs baseline (paired by seed)", headers, rows))
    for ds in datasets(groups):
        headers, rows = capacity_gap_rows(groups, ds)
        if rows:
            console.print(_rich(f"Capacity gap ({ds})", headers, rows))
