"""``python -m kdlab.report … --reference cifar100``: a fake CIFAR-100 sweep with known numbers
lands beside the right published cells; unknown pairs and cells without a number are left out
with a note; a bad reference name is a clear error; the shipped table covers the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from kdlab.report.__main__ import main
from kdlab.report.build import make_report
from kdlab.report.collect import ReportError, collect_runs
from kdlab.report.reference import available, compare, load_reference
from kdlab.report.stats import group_runs

REPO = Path(__file__).resolve().parents[1]
BENCH_PAIRS = [
    "resnet56_resnet20",
    "resnet110_resnet20",
    "resnet110_resnet32",
    "resnet32x4_resnet8x4",
    "wrn_40_2_wrn_16_2",
    "wrn_40_2_wrn_40_1",
    "vgg13_vgg8",
    "vgg13_mobilenetv2",
    "r50_mobilenetv2",
    "r50_vgg8",
    "resnet32x4_shufflev1",
    "resnet32x4_shufflev2",
    "wrn_40_2_shufflev1",
]


def write_run(root: Path, name: str, **fields) -> None:
    base = {
        "dataset": "cifar100",
        "teacher": None,
        "method": "baseline",
        "epochs": 240,
        "status": "finished",
        "val_acc_best": 70.0,
    }
    base.update(fields)
    d = root / name
    (d / ".hydra").mkdir(parents=True, exist_ok=True)
    (d / "results.json").write_text(json.dumps(base))


def fake_sweep(root: Path) -> Path:
    """Two seeds per group; every mean and Δ below is exact in two decimals."""
    kd = {"method_params": {"alpha": 0.9, "temperature": 4}, "method_label": "α=0.9, T=4"}
    for s in (0, 1):
        # own teacher runs of resnet32x4 (published 79.42)
        write_run(
            root,
            f"teacher_resnet32x4/{s}",
            student="resnet32x4",
            method="teacher",
            seed=s,
            test_acc_best=[79.0, 79.4][s],
            test_acc_final=[79.1, 79.3][s],
        )
        write_run(
            root,
            f"baseline_resnet8x4/{s}",
            student="resnet8x4",
            seed=s,
            test_acc_best=[72.0, 72.2][s],
            test_acc_final=[72.1, 72.3][s],
        )
        # KD (logit) resnet32x4 → resnet8x4: published 73.33
        write_run(
            root,
            f"kd/{s}",
            teacher="resnet32x4",
            student="resnet8x4",
            method="logit",
            seed=s,
            test_acc_best=[73.0, 73.4][s],
            test_acc_final=[73.5, 73.5][s],
            teacher_test_acc=79.2,
            **kd,
        )
        # DKD resnet32x4 → resnet8x4: published 76.32
        write_run(
            root,
            f"dkd/{s}",
            teacher="resnet32x4",
            student="resnet8x4",
            method="dkd",
            seed=s,
            test_acc_best=[76.0, 76.2][s],
            test_acc_final=[76.1, 76.3][s],
            teacher_test_acc=79.2,
            method_params={"weights": {"dkd": 1.0}},
        )
        # DIST r50 → mobilenetv2 with a released teacher (no teacher runs): published 68.66 ± 0.23
        write_run(
            root,
            f"dist/{s}",
            teacher="r50",
            student="mobilenetv2",
            method="dist",
            seed=s,
            test_acc_best=[68.5, 68.7][s],
            test_acc_final=[68.6, 68.8][s],
            teacher_test_acc=79.30,
        )
        # left out: a pair the table does not have, a cell without a number, another dataset
        write_run(
            root,
            f"unknown_pair/{s}",
            teacher="resnet56",
            student="resnet8x4",
            method="logit",
            seed=s,
            test_acc_best=71.0,
            teacher_test_acc=72.0,
            **kd,
        )
        write_run(
            root,
            f"no_number/{s}",
            teacher="resnet110",
            student="resnet20",
            method="dkd",
            seed=s,
            test_acc_best=70.0,
            teacher_test_acc=74.0,
        )
        write_run(
            root,
            f"cifar10/{s}",
            dataset="cifar10",
            teacher="r50",
            student="r18",
            method="logit",
            seed=s,
            test_acc_best=95.0,
            **kd,
        )
    return root


def _row(md: str, start: str) -> str:
    (line,) = [ln for ln in md.splitlines() if ln.startswith(start)]
    return line


def test_each_group_lands_beside_its_published_cell(tmp_path):
    out = make_report(
        [fake_sweep(tmp_path / "sweep")], tmp_path / "rep", figures=False, reference="cifar100"
    )
    md = out.markdown.read_text()
    section = md[md.index("## Published numbers (cifar100)") :]
    rs = "RepDistiller README (CRD, Tian et al. ICLR 2020)"
    assert _row(section, "| resnet32x4 | Teacher |") == (
        f"| resnet32x4 | Teacher | teacher runs | 2 | 79.20 ± 0.28 | 79.20 ± 0.14 | 79.42 | -0.22 "
        f"| -0.22 | {rs} |"
    )
    assert _row(section, "| r50 | Teacher |").startswith(
        "| r50 | Teacher | teacher_test_acc of its students | 2 | 79.30 ± 0.00 | — | 79.34 | -0.04 | — |"
    )
    assert _row(section, "| resnet8x4 | Student (baseline) |") == (
        f"| resnet8x4 | Student (baseline) | — | 2 | 72.10 ± 0.14 | 72.20 ± 0.14 | 72.50 | -0.40 "
        f"| -0.30 | {rs} |"
    )
    assert _row(section, "| resnet32x4 → resnet8x4 | KD (logit) |") == (
        f"| resnet32x4 → resnet8x4 | KD (logit) | α=0.9, T=4 | 2 | 73.20 ± 0.28 | 73.50 ± 0.00 "
        f"| 73.33 | -0.13 | +0.17 | {rs} |"
    )
    assert _row(section, "| resnet32x4 → resnet8x4 | DKD |").startswith(
        "| resnet32x4 → resnet8x4 | DKD | — | 2 | 76.10 ± 0.14 | 76.20 ± 0.14 | 76.32 | -0.22 "
        "| -0.12 | mdistiller README (DKD, Zhao et al. CVPR 2022) |"
    )
    assert _row(section, "| r50 → mobilenetv2 | DIST |").startswith(
        "| r50 → mobilenetv2 | DIST | — | 2 | 68.60 ± 0.14 | 68.70 ± 0.14 | 68.66 ± 0.23 | -0.06 "
        "| +0.04 | hunto/DIST_KD README"
    )
    # the table order: teachers (also those of left-out pairs), baselines, then the pairs and
    # methods in the published order
    labels = [ln.split("|")[1].strip() for ln in section.splitlines() if ln.startswith("| ")]
    assert labels[1:] == [
        "resnet56",
        "resnet110",
        "resnet32x4",
        "r50",
        "resnet8x4",
        "resnet32x4 → resnet8x4",
        "resnet32x4 → resnet8x4",
        "r50 → mobilenetv2",
    ]
    assert [ln.split("|")[2].strip() for ln in section.splitlines() if "resnet32x4 → " in ln] == [
        "KD (logit)",
        "DKD",
    ]
    left_out = section[section.index("Left out:") :]
    assert "runs on cifar10 are not compared (the reference is cifar100)" in left_out
    assert "- resnet56 → resnet8x4 logit: pair not in the published table\n" in left_out
    assert "resnet110 → resnet20 dkd: no published DKD number for this pair" in left_out
    assert "r18" not in section.split("Left out:")[0]


def test_terminal_shows_the_comparison(tmp_path):
    console = Console(record=True, width=220)
    make_report(
        [fake_sweep(tmp_path / "s")],
        tmp_path / "r",
        console=console,
        figures=False,
        reference="cifar100",
    )
    text = console.export_text()
    assert "Published numbers (cifar100): Δ = kdlab − published" in text
    assert "73.33" in text and "-0.13" in text and "+0.17" in text
    assert "left out: resnet56 → resnet8x4 logit: pair not in the published table" in text


def test_unknown_methods_are_noted_and_no_match_is_said(tmp_path):
    write_run(
        tmp_path,
        "f/0",
        teacher="resnet32x4",
        student="resnet8x4",
        method="feature",
        seed=0,
        test_acc_best=73.0,
    )
    groups = group_runs(collect_runs([tmp_path]))
    rows, notes = compare(groups, load_reference("cifar100"))
    assert [r.label for r in rows] == ["resnet32x4"]  # its teacher, from teacher_test_acc: none
    assert rows[0].best.n == 0
    assert any("no method for 'feature'" in n for n in notes)


def test_bad_reference_name_is_a_clear_error(tmp_path, capsys):
    fake_sweep(tmp_path)
    with pytest.raises(ReportError, match=r"unknown reference 'cifar1000'.*cifar100"):
        make_report([tmp_path], tmp_path / "r", figures=False, reference="cifar1000")
    assert main([str(tmp_path), "--no-figures", "--reference", "nope"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown reference 'nope'" in err and "--reference cifar100" in err
    assert not (tmp_path / "report").exists()  # checked before anything is written


def test_cli_writes_the_section(tmp_path, capsys):
    fake_sweep(tmp_path)
    assert main([str(tmp_path), "--no-figures", "--reference", "cifar100"]) == 0
    assert "## Published numbers (cifar100)" in (tmp_path / "report" / "results.md").read_text()


def test_shipped_table_covers_the_benchmark():
    assert "cifar100" in available()
    ref = load_reference("cifar100")
    assert ["_".join(p) for p in ref.pairs] == BENCH_PAIRS
    experiments = {p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")}
    assert set(BENCH_PAIRS) <= experiments  # every published pair has its pair experiment
    for (t, s), cell in ((p, ref.cells[(*p, "Teacher")]) for p in ref.pairs):
        assert cell.top1 == ref.arch_cell(t, "Teacher").top1  # one teacher accuracy per arch
        assert ref.cells[(t, s, "Student")].top1 == ref.arch_cell(s, "Student").top1
    numbered = [c for c in ref.cells.values() if c.top1 is not None]
    assert all(c.source for c in numbered) and all(50 < c.top1 < 90 for c in numbered)
    assert all(c.note for c in ref.cells.values() if c.top1 is None)  # each gap says why
    # spot checks against the sources (RepDistiller README, mdistiller README, DIST_KD README)
    assert ref.cells[("resnet32x4", "resnet8x4", "CRD")].top1 == 75.51
    assert ref.cells[("r50", "vgg8", "KD")].top1 == 73.81
    assert ref.cells[("resnet32x4", "shufflev2", "DKD")].top1 == 77.07
    assert (
        ref.cells[("wrn_40_2", "wrn_40_1", "DIST")].top1,
        ref.cells[("wrn_40_2", "wrn_40_1", "DIST")].std,
    ) == (74.43, 0.24)
    assert ref.cells[("wrn_40_2", "wrn_40_1", "FSP")].top1 is None  # published N/A


def _recipe(epochs=240, batch=64, lr=0.05, strong=False):
    return {
        "epochs": epochs,
        "batch_size": batch,
        "lr": lr,
        "augmentation": "crop+flip+strong" if strong else "crop+flip",
        "strong_augmentation": strong,
    }


def test_a_differing_recipe_is_flagged_and_a_matching_one_is_not(tmp_path):
    """MLKD's published resnet50 → mobilenetv2 number trained 480 epochs with strong views at
    lr 0.0025; a 240-epoch crop+flip run beside it is flagged, KD with the benchmark recipe is
    not."""
    for s in (0, 1):
        write_run(
            tmp_path,
            f"mlkd/{s}",
            teacher="r50",
            student="mobilenetv2",
            method="mlkd",
            seed=s,
            test_acc_best=70.0,
            teacher_test_acc=79.3,
            recipe=_recipe(lr=0.01),
        )
        write_run(
            tmp_path,
            f"kd/{s}",
            teacher="resnet32x4",
            student="resnet8x4",
            method="logit",
            seed=s,
            test_acc_best=73.0,
            teacher_test_acc=79.2,
            recipe=_recipe(),
        )
    groups = group_runs(collect_runs([tmp_path]))
    rows, _ = compare(groups, load_reference("cifar100"))
    flags = {r.label: r.recipe_flag() for r in rows if r.kind == "distill"}
    assert flags["r50 → mobilenetv2"] == (
        "published with 480 epochs and lr 0.0025 and strong augmentation; "
        "this run: 240 epochs, lr 0.01, crop+flip"
    )
    assert flags["resnet32x4 → resnet8x4"] is None
    console = Console(record=True, width=300)
    out = make_report(
        [tmp_path], tmp_path / "rep", figures=False, reference="cifar100", console=console
    )
    assert "recipe differs: r50 → mobilenetv2 MLKD: published with 480 epochs" in (
        console.export_text()
    )
    md = out.markdown.read_text()
    assert "Recipes that differ from the published one" in md
    assert "- r50 → mobilenetv2 MLKD: published with 480 epochs" in md
    assert "resnet32x4 → resnet8x4 KD (logit): published" not in md


def test_runs_that_disagree_on_a_setting_show_every_value():
    from kdlab.report.reference import Recipe

    published, here = Recipe(epochs=240, strong_aug=True).differences(
        {"epochs": [240, 480], "strong_augmentation": True, "augmentation": "crop+flip+strong"}
    )
    assert (published, here) == (["240 epochs"], ["240/480 epochs"])
    assert Recipe().differences(_recipe()) == ([], [])  # the source states nothing: no flag


def test_every_published_number_says_how_it_was_obtained():
    ref = load_reference("cifar100")
    numbered = [c for c in ref.cells.values() if c.top1 is not None]
    assert all(c.recipe.selection for c in numbered)
    assert all(c.recipe.strong_aug is not None for c in numbered)
    mlkd = ref.cells[("resnet32x4", "shufflev2", "MLKD")]
    assert (mlkd.top1, mlkd.recipe.epochs, mlkd.recipe.strong_aug) == (78.44, 480, True)
    assert ref.cells[("resnet32x4", "resnet8x4", "MLKD")].recipe.epochs == 240
    assert ref.cells[("resnet56", "resnet20", "CTKD")].top1 == 71.19
    assert ref.cells[("resnet32x4", "shufflev2", "KD+DOT")].top1 == 75.55
    # mdistiller's README calls the resnet32x4 → ShuffleNet-V2 column "MobileNet-V2"
    assert ("resnet32x4", "mobilenetv2", "DKD") not in ref.cells
    for method in ("MLKD", "CTKD", "NKD", "WTTM", "SD-DKD", "KD+DOT", "CAT-KD", "FCFD"):
        assert any(k[2] == method for k in ref.cells), method
    unchecked = [c for c in numbered if "to be checked" in c.note]
    assert unchecked and all(c.source for c in unchecked)


def test_a_run_records_the_recipe_the_report_compares():
    from omegaconf import OmegaConf

    from kdlab.results import training_recipe

    cfg = OmegaConf.create(
        {
            "trainer": {"max_epochs": 240},
            "optim": {"lr": 0.05},
            "data": {"batch_size": 64, "augment": True, "strong_view": True, "mixup_alpha": 0.0},
        }
    )
    assert training_recipe(cfg) == {
        "epochs": 240,
        "batch_size": 64,
        "lr": 0.05,
        "augmentation": "crop+flip+strong",
        "strong_augmentation": True,
    }
    cfg.data.strong_view, cfg.data.augment = False, False
    assert training_recipe(cfg)["augmentation"] == "none"
    cfg.data.augment = {"crop_padding": 4, "flip": False}  # digits: crop only
    assert training_recipe(cfg)["augmentation"] == "crop"
    cfg.data.augment = {"crop_padding": 0, "flip": True}
    assert training_recipe(cfg)["augmentation"] == "flip"
