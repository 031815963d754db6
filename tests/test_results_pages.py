"""The commands a results page shows still run: every study script it calls accepts them under
``--dry-run`` (listing the jobs it would launch), and every report command parses."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from kdlab.report.__main__ import report_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = ["docs/results_cifar100.md"]


def commands(page: str) -> list[str]:
    """The lines of the page's bash blocks, continuation lines joined, comments dropped."""
    text = (REPO / page).read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


@pytest.mark.parametrize("page", PAGES)
def test_the_study_scripts_of_a_results_page_accept_its_commands(page, tmp_path):
    scripts = [c for c in commands(page) if "scripts/" in c and ".sh" in c]
    assert scripts, f"{page} shows no study script command"
    for command in scripts:
        proc = subprocess.run(
            ["bash", "-c", f"{command} --dry-run"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, OUT=str(tmp_path / "out")),
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        assert re.search(r"total: \d+ jobs", proc.stdout), proc.stdout[-2000:]


@pytest.mark.parametrize("page", PAGES)
def test_the_report_commands_of_a_results_page_parse(page):
    reports = [c for c in commands(page) if "-m kdlab.report" in c]
    assert reports, f"{page} shows no report command"
    for command in reports:
        argv = shlex.split(command.split("-m kdlab.report", 1)[1])
        report_parser().parse_args(argv)
