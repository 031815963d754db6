"""The capacity-gap table: does the teacher–student gap moderate the KD gain?

One row per (teacher, student) pair of a dataset:
``Teacher (acc) | Student (acc) | T–S gap | Logit-KD Δ | Feature-KD Δ | Best``.
Each Δ is the paired-by-seed gain over the student's baseline of that method's best-on-val
configuration, ± the half-width of its 95 % CI, with the configuration named so a reader can
rerun it. "Best" names the method with the highest mean test accuracy, the baseline included:
a KD method that does not beat the baseline is not called best.
"""

from __future__ import annotations

from kdlab.report import fmt
from kdlab.report.stats import (
    DELTA_METRIC,
    NO_TEACHER_METHODS,
    Group,
    GroupKey,
    best_configs,
    delta_vs_baseline,
    find_baseline,
    sort_key,
    teacher_accuracy,
)

FIXED_METHODS = ("logit", "feature")  # the study's two columns, always shown


def distilled_methods(groups: dict[GroupKey, Group], dataset: str) -> list[str]:
    """Δ columns: Logit-KD and Feature-KD, then any other distillation method present."""
    present = {g.method for g in groups.values() if g.dataset == dataset}
    extra = sorted(present - set(FIXED_METHODS) - set(NO_TEACHER_METHODS))
    return list(FIXED_METHODS) + extra


def pairs(groups: dict[GroupKey, Group], dataset: str) -> list[tuple[str, str]]:
    """(teacher, student) pairs with distilled runs on ``dataset``, in key order."""
    seen = {
        (g.teacher, g.student): None
        for g in groups.values()
        if g.dataset == dataset and g.teacher is not None and g.method not in NO_TEACHER_METHODS
    }
    return sorted(seen, key=sort_key)


def _delta_cell(grp: Group | None, groups: dict[GroupKey, Group]) -> str:
    if grp is None:
        return fmt.DASH
    d = delta_vs_baseline(grp, groups)
    if d is None or d.n == 0:
        return fmt.DASH
    cell = fmt.signed(d.mean)
    if not fmt.isnan(d.ci_high):
        cell += f" ± {d.ci_high - d.mean:.2f}"
    return f"{cell} ({grp.label})"


def capacity_gap_rows(
    groups: dict[GroupKey, Group], dataset: str
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the capacity-gap table for one dataset."""
    methods = distilled_methods(groups, dataset)
    best = best_configs(groups)
    headers = ["Teacher (acc)", "Student (acc)", "T–S gap"]
    headers += [f"{fmt.method(m)} Δ" for m in methods] + ["Best"]
    rows = []
    for teacher, student in pairs(groups, dataset):
        t_acc = teacher_accuracy(dataset, teacher, groups)
        base = find_baseline(dataset, student, groups)
        s_acc = base.stat(DELTA_METRIC) if base else None
        gap = t_acc.mean - s_acc.mean if s_acc else None
        row = [
            f"{fmt.arch(teacher)} ({fmt.num(t_acc.mean)})",
            f"{fmt.arch(student)} ({fmt.pm(s_acc) if s_acc else fmt.DASH})",
            fmt.signed(gap),
        ]
        contenders: list[tuple[float, str]] = []
        if s_acc and not fmt.isnan(s_acc.mean):
            contenders.append((s_acc.mean, "Baseline"))
        for m in methods:
            grp = best.get((dataset, teacher, student, m))
            row.append(_delta_cell(grp, groups))
            if grp is not None:
                contenders.append((grp.stat(DELTA_METRIC).mean, fmt.method(m)))
        # max() keeps the first of equal means: the baseline wins a tie with a KD method.
        row.append(max(contenders, key=lambda c: c[0])[1] if contenders else fmt.DASH)
        rows.append(row)
    return headers, rows


def capacity_gap_markdown(groups: dict[GroupKey, Group], dataset: str) -> str:
    """The capacity-gap table of one dataset as markdown (empty string without pairs)."""
    headers, rows = capacity_gap_rows(groups, dataset)
    return fmt.markdown_table(headers, rows) if rows else ""
