"""``python -m kdlab.dashboard --entity E --project P --group G``: the standard W&B report of a sweep.

The panels every kdlab sweep needs (val accuracy by α × T, fidelity to the teacher, gradient
norm, loss terms, learning rate) are defined once here as plain data (:func:`panel_spec`), so
they can be listed offline and tested without W&B; :func:`build_report` turns them into a W&B
report with the reports API (``wandb_workspaces``, ``pip install 'wandb[workspaces]'``) when
online. Without that module the command prints the panel set (to build by hand in the W&B UI)
and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

# Metric names are the ones every kdlab run logs; run config keys are top-level.
CONFIG_AXES = ("alpha", "temperature", "beta", "seed")


@dataclass(frozen=True)
class Panel:
    """One panel: ``kind`` line (metric over steps), scatter, or parallel (coordinates)."""

    title: str
    kind: str
    y: tuple[str, ...]
    x: str = "Step"
    group_by: str | None = None  # line panels: average runs that share this config key
    columns: tuple[str, ...] = field(default=())  # parallel coordinates: config keys then metric

    def describe(self) -> str:
        if self.kind == "parallel":
            return f"{self.title}: parallel coordinates {' → '.join(self.columns)}"
        grouped = f", runs grouped by {self.group_by} (mean)" if self.group_by else ""
        return f"{self.title}: {self.kind} of {', '.join(self.y)} against {self.x}{grouped}"


def panel_spec() -> list[Panel]:
    """The standard panel set of a KD sweep, in display order."""
    return [
        Panel(
            "val acc by α × T",
            "parallel",
            ("val/acc_best",),
            columns=("alpha", "temperature", "seed", "val/acc_best"),
        ),
        Panel("best val acc vs α", "scatter", ("val/acc_best",), x="alpha"),
        Panel("best val acc vs T", "scatter", ("val/acc_best",), x="temperature"),
        Panel("val acc (mean over seeds) by α", "line", ("val/acc",), group_by="alpha"),
        Panel("val acc (mean over seeds) by T", "line", ("val/acc",), group_by="temperature"),
        Panel("teacher agreement", "line", ("val/agreement",), group_by="alpha"),
        Panel("KL(teacher ‖ student)", "line", ("val/kl",), group_by="alpha"),
        Panel("gradient norm (before clipping)", "line", ("train/grad_norm",)),
        Panel("loss terms", "line", ("train/loss", "train/loss_ce", "train/loss_kd")),
        Panel("learning rate", "line", ("lr",)),
        Panel(
            "test metrics (best-val weights)",
            "scatter",
            ("test/acc", "test/agreement", "test/kl"),
            x="alpha",
        ),
    ]


def _reports_api():
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError as err:
        raise ImportError(
            "the W&B reports API is not installed: pip install 'wandb[workspaces]' "
            "(or build the panels listed above by hand in the W&B UI)"
        ) from err
    return wr


def _metric(wr, name: str):
    """Config keys become ``c::`` (config) columns, metrics ``s::`` (summary) columns."""
    prefix = "c::" if name in CONFIG_AXES else "s::"
    return f"{prefix}{name}"


def build_report(entity: str, project: str, group: str, title: str | None = None):
    """Create (save) a W&B report for the runs of ``group``; returns the report object."""
    wr = _reports_api()
    panels = []
    for p in panel_spec():
        if p.kind == "parallel":
            cols = [wr.ParallelCoordinatesPlotColumn(metric=_metric(wr, c)) for c in p.columns]
            panels.append(wr.ParallelCoordinatesPlot(title=p.title, columns=cols))
        elif p.kind == "scatter":
            for y in p.y:
                panels.append(
                    wr.ScatterPlot(title=f"{p.title}: {y}", x=_metric(wr, p.x), y=_metric(wr, y))
                )
        else:
            kwargs = {"groupby": p.group_by} if p.group_by else {}
            panels.append(wr.LinePlot(title=p.title, x=p.x, y=list(p.y), **kwargs))
    runset = wr.Runset(entity=entity, project=project, name=group, filters=f"Group = '{group}'")
    report = wr.Report(
        entity=entity,
        project=project,
        title=title or f"kdlab sweep {group}",
        description="Standard kdlab KD sweep panels (kdlab.dashboard)",
        blocks=[wr.PanelGrid(runsets=[runset], panels=panels)],
    )
    report.save()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kdlab.dashboard", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--entity", required=True, help="W&B entity (user or team)")
    parser.add_argument("--project", default="kdlab", help="W&B project (default: kdlab)")
    parser.add_argument(
        "--group", required=True, help="the sweep's W&B group: <name>_<sweep timestamp>"
    )
    parser.add_argument("--title", default=None)
    parser.add_argument("--list", action="store_true", help="only print the panel set")
    args = parser.parse_args(argv)
    print(f"panels for group {args.group!r}:")
    for panel in panel_spec():
        print(f"  - {panel.describe()}")
    if args.list:
        return 0
    try:
        report = build_report(args.entity, args.project, args.group, args.title)
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {getattr(report, 'url', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
