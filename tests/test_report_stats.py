"""Statistics of the report on results.json files with known numbers (values computed by hand)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from kdlab.report.collect import ReportWarning, collect_runs
from kdlab.report.stats import (
    best_configs,
    delta_vs_baseline,
    group_runs,
    mean_std,
    paired_delta,
)


def write_run(root: Path, name: str, mtime: float | None = None, **fields) -> Path:
    """A run folder as kdlab.train leaves it: .hydra/ and results.json."""
    base = {
        "dataset": "cifar10",
        "teacher": None,
        "student": "r18",
        "method": "baseline",
        "alpha": None,
        "temperature": None,
        "beta": None,
        "epochs": 1,
        "status": "finished",
    }
    base.update(fields)
    base.setdefault("test_acc_final", base.get("test_acc_best"))
    d = root / name
    (d / ".hydra").mkdir(parents=True, exist_ok=True)
    path = d / "results.json"
    path.write_text(json.dumps(base))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_mean_and_sample_std_match_hand_values():
    ms = mean_std([94.0, 95.0, 96.0, None])
    assert ms.n == 3
    assert ms.mean == pytest.approx(95.0)
    assert ms.std == pytest.approx(1.0)  # sample std: sqrt(((-1)² + 0 + 1²) / (3 - 1))
    one = mean_std([94.5])
    assert one.mean == 94.5 and math.isnan(one.std)


def test_paired_delta_ci_and_p_match_closed_form():
    # differences 0.2, 0.3, 0.4: mean 0.3, sd 0.1, t = 0.3 / (0.1/√3) = √27 with 2 dof.
    d = paired_delta({0: 95.0, 1: 95.2, 2: 95.4}, {0: 94.8, 1: 94.9, 2: 95.0})
    assert d.n == 3 and d.seeds == (0, 1, 2) and d.unpaired == ()
    assert d.mean == pytest.approx(0.3)
    assert d.std == pytest.approx(0.1)
    t = math.sqrt(27.0)
    assert d.t == pytest.approx(t)
    # Student t with 2 dof has CDF 1/2 + t / (2√(2 + t²)): two-sided p = 1 − t/√(2 + t²).
    assert d.p == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    # With 2 dof the quantile has a closed form: t_q = (2q − 1) / √(2q(1 − q)) (≈ 4.3027).
    t975 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
    half = t975 * 0.1 / math.sqrt(3)
    assert (d.ci_low, d.ci_high) == pytest.approx((0.3 - half, 0.3 + half))


def test_paired_delta_p_value_equals_scipy_on_same_numbers_and_reports_unpaired():
    rng = np.random.default_rng(7)
    base = 94.8 + rng.normal(0, 0.2, size=5)
    treat = base + 0.2 + rng.normal(0, 0.15, size=5)
    t_dict = {s: float(v) for s, v in enumerate(treat)} | {9: 99.0}  # seed 9: no baseline
    b_dict = {s: float(v) for s, v in enumerate(base)} | {7: 10.0}  # seed 7: no treatment
    d = paired_delta(t_dict, b_dict)
    ref = sps.ttest_rel(treat, base)
    assert d.n == 5 and d.unpaired == (7, 9)
    assert d.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert d.t == pytest.approx(ref.statistic, rel=1e-10)
    assert d.mean == pytest.approx(float(np.mean(treat - base)))  # unpaired seeds not mixed in


def test_single_shared_seed_gives_mean_but_no_test():
    d = paired_delta({0: 95.0, 1: 96.0}, {0: 94.0})
    assert d.n == 1 and d.mean == pytest.approx(1.0) and d.unpaired == (1,)
    assert math.isnan(d.p) and math.isnan(d.ci_low)


def test_groups_keep_datasets_apart_and_delta_uses_same_dataset_baseline(tmp_path):
    for s, (b10, b100) in enumerate([(94.0, 70.0), (94.2, 71.0)]):
        write_run(tmp_path, f"b10_{s}", seed=s, val_acc_best=95, test_acc_best=b10)
        write_run(
            tmp_path, f"b100_{s}", dataset="cifar100", seed=s, val_acc_best=75, test_acc_best=b100
        )
        kd = dict(teacher="r34", method="logit", alpha=0.5, temperature=4, val_acc_best=95)
        write_run(tmp_path, f"kd10_{s}", seed=s, test_acc_best=b10 + 0.5, **kd)
        write_run(
            tmp_path, f"kd100_{s}", dataset="cifar100", seed=s, test_acc_best=b100 + 2.0, **kd
        )
    groups = group_runs(collect_runs([tmp_path]))
    assert len(groups) == 4
    assert all(len({r.get("dataset") for r in g.runs.values()}) == 1 for g in groups.values())
    deltas = {
        g.dataset: delta_vs_baseline(g, groups) for g in groups.values() if g.method == "logit"
    }
    assert deltas["cifar10"].mean == pytest.approx(0.5)
    assert deltas["cifar100"].mean == pytest.approx(2.0)


def test_duplicate_seed_warns_and_keeps_the_later_run(tmp_path):
    write_run(tmp_path, "b_new", mtime=2_000_000_000, seed=0, val_acc_best=95, test_acc_best=94.0)
    write_run(tmp_path, "a_old", mtime=1_000_000_000, seed=0, val_acc_best=95, test_acc_best=90.0)
    with pytest.warns(ReportWarning, match="seed 0 appears twice"):
        groups = group_runs(collect_runs([tmp_path]))
    (g,) = groups.values()
    assert g.values("test_acc_best") == {0: 94.0}


def test_alpha_float_noise_does_not_split_a_group(tmp_path):
    kd = dict(teacher="r34", method="logit", temperature=4, val_acc_best=95, test_acc_best=94)
    write_run(tmp_path, "x", seed=0, alpha=0.3, **kd)
    write_run(tmp_path, "y", seed=1, alpha=0.1 + 0.2, **kd)  # 0.30000000000000004
    assert len(group_runs(collect_runs([tmp_path]))) == 1


def test_best_config_is_chosen_on_val_even_when_its_test_is_lower(tmp_path):
    kd = dict(teacher="r34", method="logit", temperature=4)
    for s in (0, 1):
        write_run(
            tmp_path,
            f"a3_{s}",
            seed=s,
            alpha=0.3,
            val_acc_best=96.0 + s * 0.1,
            test_acc_best=94.0,
            **kd,
        )
        write_run(
            tmp_path,
            f"a7_{s}",
            seed=s,
            alpha=0.7,
            val_acc_best=95.0,
            test_acc_best=95.5 + s * 0.1,
            **kd,
        )
    best = best_configs(group_runs(collect_runs([tmp_path])))
    chosen = best[("cifar10", "r34", "r18", "logit")]
    assert chosen.alpha == 0.3
    assert chosen.stat("test_acc_best").mean == pytest.approx(94.0)


def test_a_dot_run_is_its_own_method_beside_the_same_method_with_sgd(tmp_path):
    from kdlab.report.reference import PUBLISHED_METHODS

    common = {
        "teacher": "resnet32x4",
        "student": "resnet8x4",
        "method": "logit",
        "method_params": {"alpha": 0.9, "temperature": 4},
        "val_acc_best": 70.0,
    }
    sgd = {"name": "torch.optim.sgd.SGD", "lr": 0.05}
    dot = {"name": "kdlab.optim.dot.DOT", "lr": 0.05, "delta": 0.075}
    write_run(tmp_path, "sgd", seed=0, test_acc_best=73.0, optimizer=sgd, **common)
    write_run(tmp_path, "dot", seed=0, test_acc_best=74.0, optimizer=dot, **common)
    write_run(
        tmp_path, "old", seed=1, test_acc_best=72.0, **common
    )  # before optimizers were recorded
    groups = group_runs(collect_runs([tmp_path]))
    by_method = {g.method: sorted(g.runs) for g in groups.values()}
    assert by_method == {"logit": [0, 1], "logit+dot": [0]}
    assert PUBLISHED_METHODS["logit+dot"] == "KD+DOT"  # compared with the published KD+DOT row
