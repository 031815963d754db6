"""From finished runs to a paper: tables, paired statistics and figures (``python -m kdlab.report``).

The report reads only what runs leave on disk (results.json, the CSV log, teacher exports), so
it never depends on the training code's internals and works on sweeps copied from a cluster.
"""

from kdlab.report.build import ReportOutputs, make_report
from kdlab.report.collect import ReportError, ReportWarning, Run, collect_runs
from kdlab.report.stats import group_runs, mean_std, paired_delta

__all__ = [
    "ReportError",
    "ReportOutputs",
    "ReportWarning",
    "Run",
    "collect_runs",
    "group_runs",
    "make_report",
    "mean_std",
    "paired_delta",
]
