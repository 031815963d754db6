"""Agreement between independently trained teachers (the "Does KD really work?" replication).

A student's 71 % top-1 agreement with its teacher means little on its own: two teachers that
differ only in their seed agree on about 63 % of CIFAR-100 test images. This module measures
that reference: for every pair of teacher exports, test top-1 agreement (%) and symmetric KL,
then mean ± sample std over pairs. Symmetric KL is ½·(KL(p‖q) + KL(q‖p)), averaged over
images, so it is on the same scale as a student's KL(teacher ‖ student).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from kdlab.analysis.testset import export_reader, load_test, predict
from kdlab.models.export import load_exported, read_checkpoint
from kdlab.report import fmt
from kdlab.report.stats import MeanStd, mean_std


def kl_rows(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """Per-image KL(softmax(p) ‖ softmax(q)), computed in float32 log-space."""
    lp = F.log_softmax(p_logits.float(), dim=1)
    lq = F.log_softmax(q_logits.float(), dim=1)
    return (lp.exp() * (lp - lq)).sum(dim=1)


def pair_metrics(a: Tensor, b: Tensor) -> tuple[float, float]:
    """(top-1 agreement in %, mean symmetric KL) of two models' logits on the same images."""
    agree = (a.argmax(1) == b.argmax(1)).float().mean().item() * 100.0
    sym = 0.5 * (kl_rows(a, b) + kl_rows(b, a))
    return agree, sym.mean().item()


@dataclass(frozen=True)
class AgreementResult:
    names: list[str]
    accuracy: list[float]  # each teacher's test accuracy (%) on the same images
    pairs: list[tuple[int, int, float, float]]  # (i, j, agreement %, symmetric KL)
    n_images: int

    @property
    def agreement(self) -> MeanStd:
        return mean_std(p[2] for p in self.pairs)

    @property
    def sym_kl(self) -> MeanStd:
        return mean_std(p[3] for p in self.pairs)


def agreement_from_logits(
    names: Sequence[str], logits: Sequence[Tensor], labels: Tensor
) -> AgreementResult:
    """Pairwise agreement and symmetric KL of precomputed logits (every unordered pair once)."""
    if len(logits) < 2:
        raise ValueError(f"agreement needs at least two teachers, got {len(logits)}")
    acc = [(z.argmax(1) == labels).float().mean().item() * 100.0 for z in logits]
    pairs = [
        (i, j, *pair_metrics(logits[i], logits[j]))
        for i, j in itertools.combinations(range(len(logits)), 2)
    ]
    return AgreementResult(list(names), acc, pairs, len(labels))


def teacher_agreement(
    ckpts: Sequence[str | Path],
    data_root: str | Path,
    limit: int | None = None,
    dataset: str | None = None,
    verify: str = "md5",
) -> AgreementResult:
    """Run every teacher export on the test split and compare all pairs.

    Teachers must share dataset and number of classes; a mix is a ``ValueError``.
    """
    if len(ckpts) < 2:
        raise ValueError(f"agreement needs at least two teacher checkpoints, got {len(ckpts)}")
    nets, readers, norms = [], {}, set()
    for c in ckpts:
        meta = read_checkpoint(c)
        net = load_exported(c)
        reader = export_reader(meta, net, c, dataset)
        readers[reader.name] = reader
        norms.add(meta.get("normalize") or "dataset")
        nets.append(net)
    if len(readers) > 1 or len({n.num_classes for n in nets}) > 1 or len(norms) > 1:
        raise ValueError(
            f"teachers disagree on dataset {sorted(readers)}, classes "
            f"{sorted({n.num_classes for n in nets})} or normalisation {sorted(norms)}; "
            f"compare teachers of one dataset"
        )
    _, x, y = load_test(data_root, readers.popitem()[1], limit, norms.pop(), verify)
    names = [_short(Path(c), ckpts) for c in ckpts]
    return agreement_from_logits(names, [predict(n, x) for n in nets], y)


def _short(path: Path, all_paths: Sequence[str | Path]) -> str:
    """``<arch>/seed<k>.ckpt`` style names: the last parts that tell the paths apart."""
    for depth in (1, 2, 3):
        names = ["/".join(Path(p).parts[-depth:]) for p in all_paths]
        if len(set(names)) == len(names):
            return "/".join(path.parts[-depth:])
    return str(path)


def agreement_markdown(res: AgreementResult) -> str:
    """Per-pair table with a final mean ± std row, plus each teacher's own test accuracy."""
    rows = [[res.names[i], res.names[j], fmt.num(a), fmt.num(k, 3)] for i, j, a, k in res.pairs]
    rows.append(
        [
            "**mean ± std**",
            f"({len(res.pairs)} pairs)",
            fmt.pm(res.agreement),
            fmt.pm(res.sym_kl, 3),
        ]
    )
    acc_rows = [[n, fmt.num(a)] for n, a in zip(res.names, res.accuracy, strict=True)]
    return (
        f"Independent-teacher agreement on {res.n_images} test images\n\n"
        + fmt.markdown_table(
            ["Teacher A", "Teacher B", "Top-1 agreement (%)", "Symmetric KL"], rows
        )
        + "\n"
        + fmt.markdown_table(["Teacher", "Test acc (%)"], acc_rows)
    )
