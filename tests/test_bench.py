"""``python -m kdlab.bench --quick`` runs on CPU and writes JSON with every row."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from kdlab.bench.economics import view_cache_economics

METHODS = ("baseline", "logit", "feature", "ensemble3", "logit_viewcache")


def _expected_rows() -> set[str]:
    rows = {"pipeline/dataloader", "pipeline/device", "teacher_forward"}
    rows |= {"loop/lightning", "loop/plain"}
    rows |= {
        f"zoo/{m}/resnet56-resnet20"
        for m in ("logit", "dkd", "crd", "reviewkd", "sdd", "mlkd", "fcfd")
    }
    for mode in ("eager", "compiled"):
        for m in METHODS:
            for pipe in ("dataloader", "device"):
                if not (m == "logit_viewcache" and pipe == "dataloader"):
                    rows.add(f"step/{m}/{pipe}/{mode}")
    return rows


def test_bench_quick_writes_every_row(tmp_path):
    out = tmp_path / "bench.json"
    # --quick with even fewer steps: the test checks completeness, not speed
    cmd = [
        sys.executable,
        "-m",
        "kdlab.bench",
        "--quick",
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--steps",
        "1",
        "--repeats",
        "2",
        "--workers",
        "0",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    hw = report["hardware"]
    assert hw["cores"] >= 1 and hw["torch"] and hw["cpu"] and "gpu" in hw
    assert report["settings"]["quick"] is True and report["settings"]["models"]["student"]
    names = [r["name"] for r in report["rows"]]
    assert sorted(names) == sorted(_expected_rows())
    for r in report["rows"]:
        if r["skipped"]:
            assert isinstance(r["skipped"], str) and r["skipped"]
        else:
            assert math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0, r
            assert r["min"] <= r["images_per_s"] <= r["max"] and len(r["repeats"]) == 2
    assert all(r["skipped"] for r in report["rows"] if r.get("mode") == "compiled")
    assert report["view_cache"]["views_per_image"] == 162
    assert "kdlab.bench" in proc.stdout and "pipeline/device" in proc.stdout  # the table


def test_bench_epoch_rows_time_the_real_system_and_a_plain_loop(tmp_path):
    from kdlab.data.synthetic import write_fake_cifar

    write_fake_cifar(tmp_path / "data", "cifar10", n_train=160, n_test=32)
    out = tmp_path / "epoch.json"
    cmd = [
        sys.executable,
        "-m",
        "kdlab.bench",
        "--epoch",
        "--models",
        "cnn",
        "--epochs",
        "2",
        "--data-root",
        str(tmp_path / "data"),
        "--val-size",
        "32",
        "--out",
        str(out),
        "--threads",
        "1",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    for pipe in ("dataloader", "device"):
        kd, plain = rows[f"epoch/cnn/{pipe}/kdlab"], rows[f"epoch/cnn/{pipe}/plain"]
        assert len(kd["epochs"]) == len(plain["epochs"]) == 2  # every epoch was timed
        assert kd["seconds_per_epoch"] > 0 and plain["seconds_per_epoch"] > 0
        ratio = rows[f"epoch/cnn/{pipe}/ratio"]["ratio"]
        assert math.isclose(ratio, kd["seconds_per_epoch"] / plain["seconds_per_epoch"])
    assert "kdlab / plain" in proc.stdout


def test_view_cache_economics_formulas():
    rows = [
        {"name": "teacher_forward", "images_per_s": 100.0, "skipped": None},
        {"name": "step/logit/device/eager", "images_per_s": 20.0, "skipped": None},
        {"name": "step/logit_viewcache/device/eager", "images_per_s": 40.0, "skipped": None},
    ]
    e = view_cache_economics(rows, sweep_epochs=1000)
    # t_T = 0.01, t_on = 0.05, t_c = 0.025: break-even 162·0.01/0.025 = 64.8 epochs
    assert math.isclose(e["break_even_epochs"], 64.8)
    assert math.isclose(e["precompute_student_epochs"], 162 * 0.01 / 0.05)
    assert math.isclose(e["sweep_time_with_cache_relative"], (1000 * 0.025 + 1.62) / 50)
    assert view_cache_economics(rows[:1]) == {"note": "rows missing; nothing computed"}
