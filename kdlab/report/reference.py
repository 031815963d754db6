"""Published numbers beside kdlab's: ``python -m kdlab.report PATH … --reference cifar100``.

A reference is a table of published top-1 accuracies shipped with kdlab
(``kdlab/report/reference/<name>.csv``: one row per teacher, student and method in the
published names, with the paper or repository each number comes from). The report matches every
group of a finished sweep to its published cell: distilled groups by (teacher, student, method),
teacher groups by architecture (``teacher`` runs, else the ``teacher_test_acc`` the students
measured on a released checkpoint), baselines by student architecture. Each match shows kdlab's
mean ± sample std over seeds (best-val weights and final weights), the published number and the
difference kdlab − published; groups the table has no number for are listed in a note.

Published runs train on all 50k images and report the best *test* accuracy over training, so
the closest kdlab number is ``test_acc_final`` of runs with ``data.val_size=1``; ``test_acc_best``
(kdlab's protocol: best-val weights, 45k/5k split) is shown first because it is the one kdlab
reports everywhere else.

Every row also states the recipe its number was obtained with (``epochs``, ``batch``, ``lr``,
``strong_aug`` yes/no, and ``selection``: how the number was picked — ``best test epoch``,
``last epoch`` or ``mean of runs``). A comparison whose kdlab runs trained differently (their
results.json ``recipe``) is flagged, e.g. "published with 480 epochs and strong augmentation;
this run: 240 epochs, crop+flip": a difference there is no evidence about the method.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from kdlab.report import fmt
from kdlab.report.collect import ReportError
from kdlab.report.stats import Group, GroupKey, MeanStd, mean_std

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
COLUMNS = (
    "teacher",
    "student",
    "method",
    "top1",
    "std",
    "source",
    "note",
    "epochs",
    "batch",
    "lr",
    "strong_aug",
    "selection",
)
SELECTIONS = ("best test epoch", "last epoch", "mean of runs")
# kdlab method → the published table's method name
PUBLISHED_METHODS = {
    "teacher": "Teacher",
    "baseline": "Student",
    "logit": "KD",
    "fitnet": "FitNet",
    "at": "AT",
    "sp": "SP",
    "cc": "CC",
    "vid": "VID",
    "rkd": "RKD",
    "pkt": "PKT",
    "ft": "FT",
    "nst": "NST",
    "crd": "CRD",
    "dkd": "DKD",
    "dist": "DIST",
    "reviewkd": "ReviewKD",
    "mlkd": "MLKD",
    "catkd": "CAT-KD",
    "fcfd": "FCFD",
    "nkd": "NKD",
    "wttm": "WTTM",
    "ctkd": "CTKD",
    "sdd": "SD-DKD",
    "logit+dot": "KD+DOT",
}
KIND_ORDER = {"teacher": 0, "baseline": 1}  # then distilled groups (2), in the table's order


@dataclass(frozen=True)
class Recipe:
    """How a published number was obtained (None: the source does not say)."""

    epochs: int | None = None
    batch: int | None = None
    lr: float | None = None
    strong_aug: bool | None = None
    selection: str | None = None

    def differences(self, run: dict) -> tuple[list[str], list[str]]:
        """(published, this run) descriptions of the fields where ``run`` (a results.json
        ``recipe``; values may be lists when the runs of a group differ) trained otherwise."""
        published, here = [], []

        def differs(mine, theirs) -> bool:
            values = mine if isinstance(mine, list) else [mine]
            return theirs is not None and any(v is not None and v != theirs for v in values)

        def shown(value) -> str:
            return (
                "/".join(map(_fmt_value, value)) if isinstance(value, list) else _fmt_value(value)
            )

        if differs(run.get("epochs"), self.epochs):
            published.append(f"{self.epochs} epochs")
            here.append(f"{shown(run['epochs'])} epochs")
        if differs(run.get("batch_size"), self.batch):
            published.append(f"batch {self.batch}")
            here.append(f"batch {shown(run['batch_size'])}")
        if differs(run.get("lr"), self.lr):
            published.append(f"lr {self.lr:g}")
            here.append(f"lr {shown(run['lr'])}")
        if differs(run.get("strong_augmentation"), self.strong_aug):
            published.append("strong augmentation" if self.strong_aug else "no strong augmentation")
            here.append(shown(run.get("augmentation", "crop+flip")))
        return published, here


def _fmt_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _recipe(row: dict) -> Recipe:
    """A row's recipe columns (each may be empty: not stated by the source)."""

    def text(name: str) -> str:
        return (row.get(name) or "").strip()

    epochs, batch = _number(text("epochs"), "epochs"), _number(text("batch"), "batch")
    strong = text("strong_aug").lower()
    if strong not in ("", "yes", "no"):
        raise ValueError(f"strong_aug must be yes, no or empty, got {strong!r}")
    selection = text("selection") or None
    if selection is not None and selection not in SELECTIONS:
        raise ValueError(
            f"selection must be one of {', '.join(SELECTIONS)} or empty, got {selection!r}"
        )
    return Recipe(
        epochs=int(epochs) if epochs is not None else None,
        batch=int(batch) if batch is not None else None,
        lr=_number(text("lr"), "lr"),
        strong_aug=None if not strong else strong == "yes",
        selection=selection,
    )


@dataclass(frozen=True)
class Cell:
    """One published number (``top1`` None: the table has the cell but no number for it)."""

    teacher: str  # kdlab arch
    student: str  # kdlab arch
    method: str  # published method name (KD, CRD, …, Teacher, Student)
    top1: float | None
    std: float | None
    source: str
    note: str
    row: int  # position in the file: tables keep the published order
    recipe: Recipe = field(default_factory=Recipe)

    def published(self) -> str:
        if self.top1 is None:
            return fmt.DASH
        return fmt.num(self.top1) + (f" ± {self.std:.2f}" if self.std is not None else "")


@dataclass
class Reference:
    """A published table: cells by (teacher, student, method) in kdlab arch names."""

    name: str
    dataset: str
    path: Path
    cells: dict[tuple[str, str, str], Cell]
    pairs: list[tuple[str, str]] = field(default_factory=list)

    def arch_cell(self, arch: str, role: str) -> Cell | None:
        """The first numbered Teacher (``role="Teacher"``) or Student row of ``arch``."""
        side = 0 if role == "Teacher" else 1
        for key, cell in self.cells.items():
            if key[2] == role and key[side] == arch and cell.top1 is not None:
                return cell
        return None


def available() -> list[str]:
    """Names of the shipped references (``kdlab/report/reference/<name>.csv``)."""
    return sorted(p.stem for p in REFERENCE_DIR.glob("*.csv"))


def _number(text: str, what: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{what} is not a finite number: {text!r}")
    return value


def load_reference(name: str) -> Reference:
    """The shipped reference ``name`` (e.g. ``cifar100``); ``ReportError`` naming the known ones
    when there is no such table, or naming the file and line when a row is malformed."""
    from kdlab.models.zoo.published import kdlab_arch

    known = available()
    if name not in known:
        raise ReportError(
            f"unknown reference {name!r}: the published tables are {', '.join(known) or 'none'} "
            f"({REFERENCE_DIR}/<name>.csv); pass e.g. --reference cifar100"
        )
    path = REFERENCE_DIR / f"{name}.csv"
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ReportError(f"{path}: columns must be {', '.join(COLUMNS)}, got {reader.fieldnames}")
    cells: dict[tuple[str, str, str], Cell] = {}
    pairs: list[tuple[str, str]] = []
    for i, row in enumerate(reader):
        try:
            t, s = kdlab_arch(row["teacher"]), kdlab_arch(row["student"])
            cell = Cell(
                t,
                s,
                row["method"],
                _number(row["top1"], "top1"),
                _number(row["std"], "std"),
                row["source"],
                row["note"],
                i,
                _recipe(row),
            )
        except ValueError as e:
            raise ReportError(f"{path}, row {i + 1} ({dict(row)}): {e}") from e
        cells[(t, s, cell.method)] = cell
        if (t, s) not in pairs:
            pairs.append((t, s))
    return Reference(name=name, dataset=name, path=path, cells=cells, pairs=pairs)


@dataclass(frozen=True)
class Comparison:
    """One kdlab group (or teacher architecture) beside its published cell."""

    kind: str  # teacher | baseline | distill
    label: str  # "resnet32x4" or "resnet32x4 → resnet8x4"
    method: str  # as shown: "KD (logit)", "DKD", "Teacher", …
    config: str
    n: int
    best: MeanStd
    final: MeanStd
    cell: Cell
    recipe: dict = field(default_factory=dict)  # how kdlab's runs trained (run_recipe)

    def recipe_flag(self) -> str | None:
        """ "published with …; this run: …" where the runs trained otherwise, else None."""
        published, here = self.cell.recipe.differences(self.recipe)
        if not published:
            return None
        return f"published with {' and '.join(published)}; this run: {', '.join(here)}"

    @property
    def delta_best(self) -> float:
        return self.best.mean - self.cell.top1 if self.cell.top1 is not None else math.nan

    @property
    def delta_final(self) -> float:
        return self.final.mean - self.cell.top1 if self.cell.top1 is not None else math.nan


def run_recipe(groups: Iterable[Group]) -> dict:
    """The recipe the runs of ``groups`` trained with (results.json ``recipe``; older runs
    only say their ``epochs``); a field the runs disagree on holds the list of its values."""
    values: dict[str, list] = {}
    for g in groups:
        for run in g.runs.values():
            recipe = run.get("recipe") or {"epochs": run.get("epochs")}
            for k, v in recipe.items():
                if v is not None and v not in values.setdefault(k, []):
                    values[k].append(v)
    return {k: v[0] if len(v) == 1 else v for k, v in values.items() if v}


def _shown_method(method: str, published: str) -> str:
    return published if published.lower() == method else f"{published} ({method})"


def _teacher_rows(
    groups: dict[GroupKey, Group], ref: Reference, notes: list[str]
) -> list[Comparison]:
    """One row per teacher architecture: its own teacher runs, else the teacher_test_acc the
    students recorded (a released checkpoint evaluated by kdlab; no final weights then)."""
    own: dict[str, list[Group]] = {}
    taught: dict[str, list[Group]] = {}
    for g in groups.values():
        if g.method == "teacher":
            own.setdefault(g.student, []).append(g)
        elif g.teacher is not None and g.method != "baseline":
            taught.setdefault(g.teacher, []).append(g)
    rows = []
    for arch in sorted(own.keys() | taught.keys()):
        cell = ref.arch_cell(arch, "Teacher")
        if cell is None:
            notes.append(f"teacher {arch}: not a teacher of the published table")
            continue
        if arch in own:
            gs, config = own[arch], "teacher runs"
            best = mean_std(v for g in gs for v in g.values("test_acc_best").values())
            final = mean_std(v for g in gs for v in g.values("test_acc_final").values())
        else:
            gs, config = taught[arch], "teacher_test_acc of its students"
            best = mean_std(v for g in gs for v in g.values("teacher_test_acc").values())
            final = MeanStd(math.nan, math.nan, 0)
        n = sum(len(g.runs) for g in gs)
        recipe = run_recipe(gs) if arch in own else {}  # released teachers: not kdlab's recipe
        rows.append(Comparison("teacher", arch, "Teacher", config, n, best, final, cell, recipe))
    return rows


def compare(groups: dict[GroupKey, Group], ref: Reference) -> tuple[list[Comparison], list[str]]:
    """(every group beside its published cell, notes on the groups left out), table-ordered."""
    notes: list[str] = []
    others = sorted({g.dataset for g in groups.values()} - {ref.dataset})
    if others:
        notes.append(
            f"runs on {', '.join(others)} are not compared (the reference is {ref.dataset})"
        )
    here = {k: g for k, g in groups.items() if g.dataset == ref.dataset}
    rows = _teacher_rows(here, ref, notes)
    for g in here.values():
        if g.method == "teacher":
            continue
        published = PUBLISHED_METHODS.get(g.method)
        what = f"{g.teacher} → {g.student} {g.method}" if g.teacher else f"{g.student} {g.method}"
        if g.method == "baseline":
            cell = ref.arch_cell(g.student, "Student")
            if cell is None:
                notes.append(f"baseline {g.student}: not a student of the published table")
                continue
            kind, label = "baseline", g.student
        elif (g.teacher, g.student) not in ref.pairs:
            notes.append(f"{what}: pair not in the published table")
            continue
        elif published is None:
            notes.append(f"{what}: the published table has no method for '{g.method}'")
            continue
        else:
            cell = ref.cells.get((g.teacher, g.student, published))
            if cell is None or cell.top1 is None:
                why = f" ({cell.note})" if cell is not None and cell.note else ""
                notes.append(f"{what}: no published {published} number for this pair{why}")
                continue
            kind, label = "distill", f"{g.teacher} → {g.student}"
        rows.append(
            Comparison(
                kind,
                label,
                _shown_method(g.method, published or g.method),
                g.label,
                len(g.runs),
                g.stat("test_acc_best"),
                g.stat("test_acc_final"),
                cell,
                run_recipe([g]),
            )
        )
    rows.sort(key=lambda r: (KIND_ORDER.get(r.kind, 2), r.cell.row))
    return rows, notes


HEADERS = [
    "Teacher → Student",
    "Method",
    "Config",
    "n",
    "kdlab (best val)",
    "kdlab (final)",
    "Published",
    "Δ best val",
    "Δ final",
    "Source",
]


def table(rows: Iterable[Comparison]) -> list[list[str]]:
    return [
        [
            r.label,
            r.method,
            r.config,
            str(r.n),
            fmt.pm(r.best),
            fmt.pm(r.final),
            r.cell.published(),
            fmt.signed(r.delta_best),
            fmt.signed(r.delta_final),
            r.cell.source,
        ]
        for r in rows
    ]


def reference_markdown(groups: dict[GroupKey, Group], ref: Reference) -> str:
    """The results.md section: kdlab beside the published numbers, then what was left out."""
    rows, notes = compare(groups, ref)
    out = [
        f"## Published numbers ({ref.name})\n",
        "kdlab: test accuracy (%), mean ± sample std over seeds, with the best-val weights and "
        "with the final weights; published: the number of the source named in each row "
        f"(`{ref.path.name}`; RepDistiller and mdistiller report the best test accuracy over "
        "training, which kdlab's final weights with `data.val_size=1` approach most closely). "
        "Δ = kdlab − published (pp).\n",
    ]
    if rows:
        out.append(fmt.markdown_table(HEADERS, table(rows)))
    else:
        out.append("No group of these runs has a published counterpart.\n")
    flags = [f"{r.label} {r.method}: {r.recipe_flag()}" for r in rows if r.recipe_flag()]
    if flags:
        out.append(
            "Recipes that differ from the published one (the difference is not only the "
            "method's):\n\n" + "\n".join(f"- {f}" for f in flags)
        )
        out.append("")
    cell_notes = sorted({f"{r.label} {r.method}: {r.cell.note}" for r in rows if r.cell.note})
    if cell_notes:
        out.append("Notes on the published cells:\n\n" + "\n".join(f"- {n}" for n in cell_notes))
        out.append("")
    if notes:
        out.append("Left out:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    return "\n".join(out)


def print_reference(groups: dict[GroupKey, Group], ref: Reference, console: Console) -> None:
    """The same comparison in the terminal (without the source column; results.md has it)."""
    from kdlab.report.tables import _rich

    rows, notes = compare(groups, ref)
    if rows:
        console.print(
            _rich(
                f"Published numbers ({ref.name}): Δ = kdlab − published",
                HEADERS[:-1],
                [r[:-1] for r in table(rows)],
            )
        )
    else:
        console.print(f"No group of these runs has a published counterpart in '{ref.name}'.")
    for r in rows:
        if r.recipe_flag():
            console.print(
                f"recipe differs: {escape(r.label)} {escape(r.method)}: {escape(r.recipe_flag())}"
            )
    for n in notes:
        console.print(f"[dim]left out: {escape(n)}[/dim]")
