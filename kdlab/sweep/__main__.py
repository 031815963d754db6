"""``python -m kdlab.sweep DIR [--resume [OVERRIDE ...]]``: summarise a sweep again, or complete
it (finished jobs skipped, interrupted ones resumed, failed ones retried)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from kdlab.sweep.jobs import INCOMPLETE, summarize
from kdlab.sweep.summary import print_summary


def resume_command(sweep_dir: str | Path, extra: list[str] = ()) -> tuple[list[str], str]:
    """The ``python -m kdlab.train -m …`` call that re-runs a sweep into its own folder, and
    the folder it was started from (relative paths in its overrides are relative to it)."""
    saved = Path(sweep_dir) / "multirun.yaml"
    if not saved.is_file():
        raise ValueError(f"{sweep_dir} has no multirun.yaml: not a sweep folder of kdlab.train -m")
    hydra_cfg = OmegaConf.load(saved).hydra
    hydra_overrides = [
        o
        for o in hydra_cfg.overrides.hydra
        if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))
    ]
    args = [
        sys.executable,
        "-m",
        "kdlab.train",
        "-m",
        *hydra_cfg.overrides.task,
        *hydra_overrides,
        f"hydra.sweep.dir={Path(sweep_dir).resolve()}",
        *extra,
    ]
    return args, str(hydra_cfg.runtime.cwd)


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.sweep DIR [--resume [OVERRIDE ...]]``: summarise a sweep again, or
    complete it (finished jobs skipped, interrupted ones resumed, failed ones retried)."""
    import argparse
    import subprocess

    p = argparse.ArgumentParser(prog="python -m kdlab.sweep", description=main.__doc__)
    p.add_argument("sweep_dir", help="a multiruns/<name>/<time> folder")
    p.add_argument("--resume", action="store_true", help="re-run the sweep into its folder")
    p.add_argument("overrides", nargs="*", help="with --resume: extra overrides (e.g. a fix)")
    a = p.parse_args(argv)
    if not Path(a.sweep_dir).is_dir():
        p.error(f"{a.sweep_dir} is not a folder")
    if not (Path(a.sweep_dir) / "multirun.yaml").is_file():
        p.error(
            f"{a.sweep_dir} is not a sweep folder of python -m kdlab.train -m (no multirun.yaml); "
            "give a multiruns/<name>/<time> folder"
        )
    if a.resume:
        args, cwd = resume_command(a.sweep_dir, a.overrides)
        print("resuming:", " ".join(args[1:]), flush=True)
        return subprocess.run(args, cwd=cwd).returncode
    result = summarize(a.sweep_dir)
    print_summary(result)
    return 1 if any(result[s] for s in INCOMPLETE) else 0


if __name__ == "__main__":
    sys.exit(main())
