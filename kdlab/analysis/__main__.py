"""``python -m kdlab.analysis temperature|agreement …``: analyses that run exported networks.

python -m kdlab.analysis temperature --ckpt CKPT --data-root ROOT [--index 0] --out fig.png
python -m kdlab.analysis agreement CKPT CKPT [...] --data-root ROOT [--out agreement.md]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kdlab.data.readers import BUILTIN


def _default_root() -> str:
    return os.environ.get("KDLAB_DATA", "data")


def temperature_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kdlab.analysis temperature",
        description="Plot a teacher's softened probabilities softmax(z/T) on one test image.",
    )
    p.add_argument(
        "--ckpt", required=True, help="teacher export (teachers/<dataset>/<arch>/seed<k>.ckpt)"
    )
    p.add_argument(
        "--data-root", default=_default_root(), help="dataset root (default: $KDLAB_DATA or ./data)"
    )
    p.add_argument("--index", type=int, default=0, help="test image index (default 0)")
    p.add_argument("--temps", type=float, nargs="+", default=[1.0, 5.0, 10.0], help="temperatures")
    p.add_argument(
        "--dataset", choices=BUILTIN, help="override the export's dataset (one kdlab ships)"
    )
    p.add_argument("--out", default="temperature.png", help="PNG to write")
    p.add_argument(
        "--verify",
        choices=["md5", "structure"],
        default="md5",
        help="check of full-size data files (structure: a verified re-encoding)",
    )
    return p


def agreement_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kdlab.analysis agreement",
        description="Pairwise test agreement and symmetric KL of independently trained teachers.",
    )
    p.add_argument("ckpts", nargs="+", metavar="CKPT", help="two or more teacher exports")
    p.add_argument(
        "--data-root", default=_default_root(), help="dataset root (default: $KDLAB_DATA or ./data)"
    )
    p.add_argument("--limit", type=int, help="use only the first N test images")
    p.add_argument(
        "--dataset", choices=BUILTIN, help="override the exports' dataset (one kdlab ships)"
    )
    p.add_argument("--out", help="also write the markdown table to this file")
    p.add_argument(
        "--verify",
        choices=["md5", "structure"],
        default="md5",
        help="check of full-size data files (structure: a verified re-encoding)",
    )
    return p


def _run(argv: list[str]) -> int:
    if argv and argv[0] == "temperature":
        a = temperature_parser().parse_args(argv[1:])
        from kdlab.analysis.temperature import plot_temperature

        path = plot_temperature(a.ckpt, a.data_root, a.out, a.index, a.temps, a.dataset, a.verify)
        print(f"wrote {path}")
        return 0
    if argv and argv[0] == "agreement":
        a = agreement_parser().parse_args(argv[1:])
        from kdlab.analysis.agreement import agreement_markdown, teacher_agreement

        res = teacher_agreement(a.ckpts, a.data_root, a.limit, a.dataset, a.verify)
        md = agreement_markdown(res)
        print(md)
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(md)
            print(f"wrote {a.out}")
        return 0
    print("usage: python -m kdlab.analysis temperature|agreement [-h] ...", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one ``error:`` line and exit with status 2."""
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except ValueError as e:  # DataError and checkpoint errors are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
