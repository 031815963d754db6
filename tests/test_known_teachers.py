"""Released teacher files are recognised by their hash (or, without a public hash, their path),
logged with the accuracy their authors published, recorded beside the measured one, and a gap
of more than half a point warns with both numbers."""

from __future__ import annotations

import logging

import pytest

from kdlab.models.export import sha256_file
from kdlab.teachers import known
from kdlab.teachers.known import Known, compare, read_table, recognise
from tests.conftest import read_results, run_train, tiny_overrides
from tests.helpers_sweep import write_cnn_teacher

HEADER = "sha256,file,arch,dataset,top1,source,checked\n"


def _table(tmp_path, *rows: str):
    path = tmp_path / "known.csv"
    path.write_text("# a lab's own released teachers\n" + HEADER + "".join(r + "\n" for r in rows))
    return path


def test_the_shipped_table_lists_the_released_resnet56_with_its_published_accuracy():
    rows = {r["file"]: r for r in read_table(known.TABLE)}
    r56 = rows["cifar100_resnet56-f2eff4c8.pt"]
    assert r56["sha256"].startswith("f2eff4c8") and len(r56["sha256"]) == 64
    assert (r56["arch"], r56["dataset"], float(r56["top1"])) == ("resnet56", "cifar100", 72.63)
    for row in rows.values():  # every entry says how it was checked
        assert row["checked"] and row["source"] and 0 < float(row["top1"]) < 100


def test_a_file_is_recognised_by_hash_by_hash_prefix_or_by_its_path(tmp_path):
    fake = tmp_path / "teacher.pt"
    fake.write_bytes(b"not really a network")
    digest = sha256_file(fake)
    table = read_table(
        _table(
            tmp_path,
            f"{digest},teacher.pt,resnet20,cifar100,70.00,lab release,fake",
            f"{digest[:8]},other.pt,resnet32,cifar100,71.00,prefix release,fake",
            ",resnet8_vanilla/ckpt_epoch_240.pth,resnet8,cifar100,60.00,path release,fake",
        )
    )
    assert recognise(fake, digest, table) == Known(
        "resnet20", "cifar100", 70.0, "lab release", "teacher.pt"
    )
    assert recognise(fake, digest, table[1:]).source == "prefix release"
    path = tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    assert recognise(path, "0" * 64, table).source == "path release"
    assert recognise(tmp_path / "x.pt", "0" * 64, table) is None


def test_a_gap_above_half_a_point_warns_with_both_numbers(caplog):
    assert compare(72.63, 72.62) is None and compare(72.63, 72.13) is None
    with caplog.at_level(logging.WARNING):
        message = compare(72.63, 70.0)
    assert "70.00" in message and "72.63" in message and "-2.63 pp" in message
    assert message in caplog.text


@pytest.mark.slow
def test_a_run_on_a_known_teacher_logs_records_and_warns(tmp_path, tiny_cifar10, monkeypatch):
    ckpt = write_cnn_teacher(tmp_path / "store")
    table = _table(tmp_path, f"{sha256_file(ckpt)},seed0.ckpt,cnn,cifar10,99.00,test release,fake")
    monkeypatch.setenv("KDLAB_KNOWN_TEACHERS", str(table))
    out = tmp_path / "run"
    proc = run_train(
        [
            "+experiment=r56_cnn_logit",
            "teacher=cnn",
            f"teacher.ckpt={ckpt}",
            *tiny_overrides(tiny_cifar10, out),
        ],
        tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert "recognised: test release (seed0.ckpt), published top-1 99.00" in log
    res = read_results(out)
    assert res["teacher_published_top1"] == 99.0
    assert res["teacher_published_source"] == "test release (seed0.ckpt)"
    measured = res["teacher_test_acc"]
    assert (
        f"{measured:.2f} % test top-1 here but 99.00 % was published"
        in res["teacher_published_warning"]
    )
    assert "was published" in log
