"""The table report end to end: collect runs → group → tables, CSV, markdown and figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from kdlab.report.collect import collect_runs
from kdlab.report.curves import plot_curves
from kdlab.report.plots import plot_deltas, plot_heatmaps
from kdlab.report.reference import load_reference, print_reference, reference_markdown
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
    reference: str | None = None,
    tags: Sequence[str] = (),
    include_debug: bool = False,
) -> ReportOutputs:
    """Summarise every finished run under ``paths`` into ``out`` (see ``default_out_dir``);
    ``reference`` (e.g. ``"cifar100"``) adds the published numbers beside kdlab's; ``tags``
    keeps the runs that carry all of them; debug runs only with ``include_debug``.

    Raises ``ReportError`` for missing paths, an unknown reference or when no usable run exists;
    every skipped or missing run is warned about and listed in results.md.
    """
    ref = load_reference(reference) if reference is not None else None
    problems: list[str] = []
    runs = collect_runs(paths, problems, tags, include_debug)
    groups = group_runs(runs)
    out_dir = Path(out) if out is not None else default_out_dir(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(summary_rows(groups), out_dir / "results.csv")
    md_path = out_dir / "results.md"
    markdown = render_markdown(groups, problems)
    if ref is not None:
        markdown += "\n" + reference_markdown(groups, ref)
    md_path.write_text(markdown)
    pngs: list[Path] = []
    if figures:
        pngs = (
            plot_heatmaps(groups, out_dir)
            + plot_deltas(groups, out_dir)
            + plot_curves(groups, out_dir)
        )
    if console is not None:
        print_terminal(groups, console)
        if ref is not None:
            print_reference(groups, ref, console)
        console.print(
            f"{len(runs)} runs in {len(groups)} groups; wrote {csv_path}, {md_path}"
            f" and {len(pngs)} figure(s) to {out_dir}"
        )
        if problems:
            console.print(
                f"[yellow]{len(problems)} run(s) skipped or missing (listed in {md_path})"
            )
    return ReportOutputs(out_dir, groups, csv_path, md_path, pngs, problems)
