"""Command line of the report: ``python -m kdlab.report PATH [PATH ...] [--out DIR]``.

Tables, statistics and figures from the files runs leave behind (results.json, metrics CSVs).
Commands that run networks (the temperature figure, teacher agreement) are in
``python -m kdlab.analysis``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

MOVED = ("temperature", "agreement")  # now python -m kdlab.analysis temperature|agreement


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kdlab.report",
        description="Summarise finished kdlab runs: tables, paired Δ vs baseline, figures. "
        "The temperature figure and teacher agreement: python -m kdlab.analysis -h.",
    )
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="run folders, sweep folders or results.json files"
    )
    p.add_argument("--out", help="output folder (default: <first PATH>/report)")
    p.add_argument("--no-figures", action="store_true", help="write tables only")
    p.add_argument(
        "--reference",
        metavar="NAME",
        help="published numbers beside kdlab's, with kdlab − published (e.g. cifar100: the CIFAR-100 "
        "KD benchmark, kdlab/report/reference/cifar100.csv)",
    )
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="NAME",
        help="only runs tagged NAME (tags=[…] at training); repeat for runs carrying all of them",
    )
    p.add_argument(
        "--include-debug",
        action="store_true",
        help="read debug runs too (debug=<preset> runs are left out by default)",
    )
    return p


def _run(argv: list[str]) -> int:
    if argv and argv[0] in MOVED:
        raise ValueError(
            f"'{argv[0]}' runs networks and moved out of the report: "
            f"python -m kdlab.analysis {' '.join(argv)}"
        )
    a = report_parser().parse_args(argv)
    from kdlab.report.build import make_report
    from kdlab.utils.console import table_console

    make_report(
        a.paths,
        a.out,
        console=table_console(),
        figures=not a.no_figures,
        reference=a.reference,
        tags=a.tag,
        include_debug=a.include_debug,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one ``error:`` line and exit with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def show(message, category, *args, **kwargs) -> None:
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        warnings.simplefilter("always")
        try:
            return _run(argv)
        except ValueError as e:  # ReportError, DataError and checkpoint errors are ValueErrors
            print(f"error: {e}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
