"""Factor transfer (FT; Kim et al., NeurIPS 2018), as in the CIFAR-100 benchmark, in one module.

FT compares *factors*: compact maps that two small convolutional networks extract from the last
feature maps. A **paraphraser** (an encoder of three 3×3 convs, teacher channels ``C_t`` →
``⌊rate·C_t⌋`` factor channels, and a mirrored decoder of three 3×3 transposed convs, LeakyReLU
0.1 after each layer, no BatchNorm) is first trained to reconstruct the teacher's map; it is then
frozen and its encoder gives the teacher factor ``F_t``. A **translator** (three 3×3 convs,
student channels → ``⌊rate·C_t⌋``, BatchNorm and LeakyReLU 0.1 after each) gives the student
factor ``F_s`` and is trained with the student. As in the benchmark, a factor is compared
through its L2-normalised spatial map ``a(F) = unit((1/C)·Σ_c |F_c|^p)`` (the larger map
average-pooled to the other's size)::

    L_rec = mean (decoder(encoder(A_t)) − A_t)²               (paraphraser, epochs < init_epochs)
    L_FT  = mean_{b, hw} |a(F_s)[b, hw] − a(F_t)[b, hw]|^q      (translator + student, after)

Published settings (RepDistiller ``models/util.py`` ``Paraphraser``/``Translator`` with
``k = 0.5``, ``distiller_zoo/FT.py`` with ``p1 = 2, p2 = 1``, ``train_student.py --distill
factor`` on the last feature map ``feat[-2]``, ``--init_epochs 30``, weight ``-b 200``):
``rate=0.5, p=2, q=1, init_epochs=30, stages="last"``.

Deviations from the published procedure (kdlab has one loss and one schedule per run):

- *Initialisation stage*: the benchmark trains the paraphraser alone for 30 extra epochs before
  the student's 240 (student untouched). Here the first ``init_epochs`` epochs of the run train
  the paraphraser on ``L_rec`` while the student trains on the rest of the combination (CE in
  ``conf/distill/ft.yaml``); from epoch ``init_epochs`` on the term is ``L_FT`` and the
  paraphraser is frozen (its factor is computed without gradient, so its parameters get no
  update). So the student sees ``init_epochs`` fewer FT epochs than published, and the run
  needs ``set_epoch`` (the system calls it at every epoch start).
- The reconstruction is scaled by ``rec_weight`` inside this term, so that, after the
  combination's FT weight, the paraphraser's effective weight can be set: the config uses
  ``rec_weight = 0.005`` (× 200 = 1, the plain MSE of the published init stage, at the run's
  learning rate; the published init stage used lr 0.01 for ResNet/WRN students).
- The paper compares whole factors (``‖F_s/‖F_s‖ − F_t/‖F_t‖‖₁``); the benchmark compares
  their AT-style maps as above, which is what kdlab implements.

Under DDP each phase leaves one network unused (translator while initialising, paraphraser
after): use a DDP strategy that allows unused parameters (``find_unused_parameters=True``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.distill.at import attention_map
from kdlab.distill.base import check_int, check_positive, validate_weight
from kdlab.distill.parts import StagePairLoss, match_size, pair_name, stage_parts


def _conv_stack(
    channels: Sequence[int], transposed: bool = False, batchnorm: bool = False
) -> nn.Sequential:
    """3×3 stride-1 (transposed) convs between consecutive ``channels``, each followed by an
    optional BatchNorm and LeakyReLU(0.1)."""
    layers: list[nn.Module] = []
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers.append(conv(c_in, c_out, kernel_size=3, stride=1, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Auto-encoder of the teacher's map: ``encoder`` gives the factor, ``decoder`` rebuilds."""

    def __init__(self, channels: int, factor_channels: int) -> None:
        super().__init__()
        self.encoder = _conv_stack((channels, channels, factor_channels, factor_channels))
        self.decoder = _conv_stack(
            (factor_channels, factor_channels, channels, channels), transposed=True
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        factor = self.encoder(x)
        return factor, self.decoder(factor)


class FactorTransfer(StagePairLoss):
    """Paraphraser reconstruction for ``init_epochs`` epochs, then factor transfer (FT).

    Args:
        rate: paraphrase rate: factor channels = ``⌊rate·C_t⌋`` (published ``k``: 0.5).
        p: exponent of ``|F|^p`` in a factor's spatial map (published ``p1``: 2).
        q: exponent of the per-position distance, 1 = L1 (published ``p2``: 1).
        init_epochs: epochs (from 0) that train the paraphraser before FT starts (published
            init stage: 30).
        rec_weight: weight ≥ 0 of the reconstruction loss within this term (see module doc).
        stages: the paired stages: ``"last"`` (published: the last feature map), a stage name,
            or a list of names / ``s:t`` pairs.

    Returns ``{"loss": rec_weight·L_rec, "rec": L_rec}`` while initialising and
    ``{"loss": L_FT}`` afterwards (plus one part per stage pair when there are several).
    """

    short_names = {"rate": "k"}

    def __init__(
        self,
        rate: float = 0.5,
        p: float = 2.0,
        q: float = 1.0,
        init_epochs: int = 30,
        rec_weight: float = 1.0,
        stages: str | Sequence[str] = "last",
    ) -> None:
        super().__init__(stages)
        self.rate = check_positive(
            "rate", rate, "FT's paraphrase rate must be a finite number > 0; pass e.g. rate=0.5"
        )
        self.p = check_positive(
            "p", p, "FT's factor-map exponent must be a finite number > 0; pass e.g. p=2"
        )
        self.q = check_positive(
            "q", q, "FT's distance exponent must be a finite number > 0 (1 = L1); pass e.g. q=1"
        )
        self.init_epochs = check_int(
            "init_epochs",
            init_epochs,
            0,
            "the paraphraser's training epochs must be an integer >= 0; pass e.g. init_epochs=30",
        )
        self.rec_weight = validate_weight("rec_weight", rec_weight)
        self.paraphrasers = nn.ModuleDict()
        self.translators = nn.ModuleDict()

    method, needs_maps = "FT", True

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        shapes = self.resolve(student, teacher)
        self.paraphrasers, self.translators = nn.ModuleDict(), nn.ModuleDict()
        for (s, t), (ss, ts) in zip(self.stage_pairs, shapes, strict=True):
            factor = int(ts[0] * self.rate)
            if factor < 1:
                raise ValueError(
                    f"FT: rate={self.rate} leaves {factor} factor channels for the teacher's "
                    f"{ts[0]} channels at stage {t}; pass a rate >= {1 / ts[0]:.3g}"
                )
            self.paraphrasers[pair_name(s, t)] = Paraphraser(ts[0], factor)
            self.translators[pair_name(s, t)] = _conv_stack(
                (ss[0], ss[0], factor, factor), batchnorm=True
            )

    @property
    def initialising(self) -> bool:
        """True while the paraphraser trains (epochs ``< init_epochs``)."""
        return self.epoch < self.init_epochs

    def factor_distance(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        """``mean |a(F_s) − a(F_t)|^q`` of two factors (maps pooled to a common size)."""
        f_s, f_t = match_size(f_s, f_t, "FT")
        diff = (attention_map(f_s, self.p) - attention_map(f_t, self.p)).abs()
        return diff.mean() if self.q == 1.0 else diff.pow(self.q).mean()

    def bound(self) -> bool:
        return bool(self.paraphrasers)

    def pair_loss(self, name: str, fs: Tensor, ft: Tensor) -> Tensor:
        """The factor distance after the initialisation; the paraphraser's reconstruction
        error during it (the student's feature is then unused)."""
        if self.initialising:
            return F.mse_loss(self.paraphrasers[name](ft)[1], ft)
        with torch.no_grad():  # the paraphraser is frozen after its initialisation
            factor_t = self.paraphrasers[name].encoder(ft)
        return self.factor_distance(self.translators[name](fs), factor_t)

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        if not self.initialising:
            return super().forward(s_logits, t_logits, targets, s_feats, t_feats, index)
        terms = self.pair_terms(s_feats, t_feats)
        rec = torch.stack(list(terms.values())).sum()
        return {"loss": self.rec_weight * rec, "rec": rec.detach(), **stage_parts(terms)}

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, p={self.p}, q={self.q}, init_epochs={self.init_epochs}, "
            f"rec_weight={self.rec_weight}, stages={self.stages!r}"
        )
