"""The table report end to end: collect runs → group → tables, CSV, markdown and figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from kdlab.report.collect import collect_runs
from kdlab.report.curves import plot_curves
from kdlab.report.plots import plot_deltas, plot_heatmaps
from kdlab.report.stats import Group, GroupKey, group_runs
from kdlab.report.tables import print_terminal, render_markdown, summary_rows, write_csv


@dataclass
class ReportOutputs:
    """What one report wrote, so callers (and tests) need not guess file names."""

    out_dir: Path
    groups: dict[GroupKey, Group]
    csv: Path
    markdown: Path
    figures: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def default_out_dir(paths: Sequence[str | Path]) -> Path:
    """``<first PATH>/report`` for a folder, ``<its parent>/report`` for a results.json."""
    first = Path(paths[0])
    return (first if first.is_dir() else first.parent) / "report"


def make_report(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    console: Console | None = None,
    figures: bool = True,
) -> ReportOutputs:
    """Summarise every finished run under ``paths`` into ``out`` (see ``default_out_dir``).

    Raises ``ReportError`` for missing paths or when no usable run exists; every skipped or
    missing run is warned about and listed in results.md.
    """
    problems: list[str] = []
    runs = collect_runs(paths, problems)
    groups = group_runs(runs)
    out_dir = Path(out) if out is not None else default_out_dir(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(summary_rows(groups), out_dir / "results.csv")
    md_path = out_dir / "results.md"
    md_path.write_text(render_markdown(groups, problems))
    pngs: list[Path] = []
    if figures:
        pngs = (
            plot_heatmaps(groups, out_dir)
            + plot_deltas(groups, out_dir)
            + plot_curves(groups, out_dir)
        )
    if console is not None:
        print_terminal(groups, console)
        console.print(f"{len(runs)} runs in {len(groups)} groups; wrote {csv_path}, {md_path}"
                      f" and {len(pngs)} figure(s) to {out_dir}")  # fmt: skip
        if problems:
            console.print(
                f"[yellow]{len(problems)} run(s) skipped or missing (listed in {md_path})"
            )
    return ReportOutputs(out_dir, groups, csv_path, md_path, pngs, problems)
