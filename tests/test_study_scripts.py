"""The notebook study script prints the commands it would run, in order, with the data and
output folders and any extra override passed through, and refuses to run without them."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "notebook_study.sh"


def test_notebook_study_dry_run_lists_every_step(tmp_path):
    proc = subprocess.run(
        ["bash", str(SCRIPT), "DATA", str(tmp_path / "out"), "--dry-run", "data.verify=structure"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    steps = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert len(steps) == 6
    assert "+experiment=teacher_preresnet20_cifar10" in steps[0]
    assert "+experiment=baseline_cnn" in steps[1] and "seed=0\\,1\\,2" in steps[1]
    assert "+experiment=preresnet20_cnn_logit" in steps[2]
    assert "alpha=0.5\\,0.8\\,0.95" in steps[3] and "temperature=2\\,4\\,10" in steps[3]
    assert "kdlab.report" in steps[4] and "kdlab.analysis temperature" in steps[5]
    assert all("data.verify=structure" in s for s in steps[:4]) and "--verify structure" in steps[5]
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_notebook_study_needs_data_and_output_folders():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 2 and "DATA_ROOT OUT" in proc.stdout
