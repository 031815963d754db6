"""The distillation system: a student trained against a frozen teacher with a KD loss.

The system never branches on the method: the loss says which stage outputs it needs
(``stage_pairs``, pre-activation or not per side), builds its own trainable parts (``bind``), follows the
epoch (``set_epoch``) and returns its named terms; its settings are read back as data
(``method_params``). The teacher is a frozen teacher (``kdlab.teachers``): eval mode for the
whole run, outside the optimiser, outside saved hyper-parameters, and outside the checkpoint
(its weights live in the teacher store; results record its hash instead). The loss's own
parameters and buffers (projections, memory banks) are trained, clipped and checkpointed with
the student.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from kdlab.distill.base import Networks, StrongLogits
from kdlab.metrics.cka import LinearCKA
from kdlab.metrics.classification import PercentAccuracy
from kdlab.metrics.fidelity import cka_stage_pairs, evaluate_fidelity
from kdlab.models.base import count_parameters, stage_outputs
from kdlab.systems.classifier import Classifier
from kdlab.teachers.ensemble import ensemble_logits
from kdlab.utils.method_params import label, loss_tree, params

log = logging.getLogger(__name__)


class Distiller(Classifier):
    """Student ``net`` + frozen ``teacher`` + ``criterion`` (a ``KDLoss``).

    ``logit_cache`` serves training-batch teacher logits from a table of the un-augmented
    training split (refused under augmentation); ``view_cache`` from a table of every crop/flip
    view (device pipeline; otherwise the online teacher runs, with a log line saying why).
    Both tables are built once at fit start and sit behind the teacher: ``teacher.predict``
    looks a batch up when it can, so the steps here never choose between them.
    """

    has_teacher = True

    def __init__(
        self,
        net: nn.Module,
        teacher: nn.Module,
        criterion: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., object] | None = None,
        grad_clip: float | None = None,
        clip_scope: str = "all",
        lr_scale: float = 1.0,
        cka: bool = False,
        cka_stages: Sequence[str] | None = None,
        cka_reduce: str = "gap",
        logit_cache: bool = False,
        view_cache: bool = False,
    ) -> None:
        if clip_scope not in ("all", "student"):
            raise ValueError(
                f"clip_scope must be 'all' (student + projection layers, the correct setting) or "
                f"'student' (the published bug ablation), got {clip_scope!r}"
            )
        super().__init__(net, optimizer, scheduler, criterion, grad_clip, lr_scale)
        self.teacher = teacher
        self.clip_scope = clip_scope
        # an ensemble's members are also scored on test, so results show what was averaged
        members = len(getattr(teacher, "members", ()))
        self.member_acc = nn.ModuleList(
            PercentAccuracy(net.num_classes) for _ in range(members if members > 1 else 0)
        )
        self.criterion.bind(net, teacher)  # builds projections before the optimiser exists
        # optional per-stage linear CKA on test (an extra forward of both nets per test batch)
        self.cka_pairs = cka_stage_pairs(net, teacher, cka_stages) if cka else []
        self.cka_metrics = nn.ModuleDict(
            {_cka_name(s, t): LinearCKA(cka_reduce) for s, t in self.cka_pairs}
        )
        self.cache_modes = {"logits": bool(logit_cache), "views": bool(view_cache)}

    # -- set-up ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        labels = train_labels(self.trainer)
        if labels is not None:  # before a checkpoint restores per-sample state (memory banks)
            self.criterion.bind_data(labels)
        if stage == "fit" and self.teacher.cache is None:
            from kdlab.teachers import cache

            cache.attach(
                self.teacher,
                self.criterion,
                self.trainer.datamodule,
                device=self.trainer.strategy.root_device,
                **self.cache_modes,
            )

    def describe(self) -> dict:
        tree = loss_tree(self.criterion)
        n_teacher = sum(p.numel() for p in self.teacher.members[0].parameters())
        members = self.teacher.members
        single = self.teacher.sources[0] if len(self.teacher.sources) == 1 else {}
        return super().describe() | {
            "teacher": self.teacher.label,
            "teacher_ckpt": [s["path"] for s in self.teacher.sources],
            "teacher_sha256": [s["sha256"] for s in self.teacher.sources],
            # a released teacher file's published accuracy, beside the measured teacher_test_acc
            "teacher_published_top1": single.get("published_top1"),
            "teacher_published_source": single.get("published_source"),
            "teacher_members": len(members),
            "teacher_params": n_teacher,
            "compression_ratio": n_teacher / count_parameters(self.net),
            "grad_clip_scope": self.clip_scope,
            "method_params": params(tree),
            "method_label": label(tree),
        }

    # -- training --------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.criterion.set_epoch(self.current_epoch)

    def compute_losses(
        self,
        x: Tensor,
        y: Tensor,
        index: Tensor | None = None,
        view: Tensor | None = None,
        x_strong: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        crit = self.criterion
        if crit.uses_features:
            logits, s_feats = stage_outputs(self.net, x, crit.student_preact)
            t_logits, t_feats = self.teacher.predict(x, stages=True, preact=crit.teacher_preact)
            extra = self.extra_inputs(x_strong)  # after the batch itself (BN statistics' order)
            return logits, crit(logits, t_logits, y, s_feats, t_feats, index=index, **extra)
        logits = self.net(x)
        t_logits = self.teacher.predict(x, index=index, view=view)
        extra = self.extra_inputs(x_strong)
        return logits, crit(logits, t_logits, y, index=index, **extra)

    def extra_inputs(self, x_strong: Tensor | None) -> dict[str, object]:
        """The inputs the loss declared beyond logits and stage outputs (``KDLoss.extra_inputs``):
        both networks' logits on the strong view, or the networks themselves."""
        wanted = self.criterion.extra_inputs()
        extra: dict[str, object] = {}
        if "strong" in wanted:
            if x_strong is None:
                raise ValueError(
                    "this loss reads a strong view of every training image but the batch has "
                    "none: set data.strong_view=true (the default follows the loss)"
                )
            extra["strong"] = StrongLogits(self.net(x_strong), self.teacher.predict(x_strong))
        if "networks" in wanted:
            extra["networks"] = Networks(self.net, self.teacher)
        return extra

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [
            p
            for n, p in self.named_parameters()
            if p.requires_grad and not n.startswith("teacher.")
        ]

    def clip_parameters(self) -> list[nn.Parameter]:
        if self.clip_scope == "student":  # reproduces the bug: projections escape clipping
            return [p for p in self.net.parameters() if p.requires_grad]
        return self.trainable_parameters()

    # -- evaluation ------------------------------------------------------------------------
    def test_step(self, batch, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        if not self.cka_pairs:
            return
        _, s_feats = self.net.forward_stages(batch.x)
        _, t_feats = self.teacher.forward_stages(batch.x)
        for (s, t), (name, metric) in zip(self.cka_pairs, self.cka_metrics.items(), strict=True):
            metric.update(s_feats[s], t_feats[t])
            self.log(f"{self.test_prefix}/{name}", metric, on_step=False, on_epoch=True)

    @torch.no_grad()
    def eval_teacher_logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if len(self.member_acc) and y is not None and self.trainer.testing:
            member_logits = self.teacher.forward_members(x)
            for i, (metric, logits) in enumerate(zip(self.member_acc, member_logits, strict=True)):
                metric.update(logits, y)
                self.log(
                    f"{self.test_prefix}/teacher_acc_m{i}", metric, on_step=False, on_epoch=True
                )
            return ensemble_logits(member_logits)
        return self.teacher(x)

    def train_fidelity(self, loader, device, max_batches: int | None = None) -> dict[str, float]:
        """Agreement and KL with the teacher on the un-augmented training split (the teacher
        does not run when a cache already holds its logits)."""
        cached = self.teacher.cache.logits if self.teacher.cache is not None else None
        fid = evaluate_fidelity(self.net, self.teacher, loader, device, cached, max_batches)
        return {"train_agreement": fid["agreement"], "train_kl": fid["kl"]}

    # -- the teacher stays out of checkpoints ---------------------------------------------
    def memory_formats(self) -> dict[str, bool]:
        return super().memory_formats() | {"teacher": self.teacher.channels_last}

    def use_memory_formats(self, formats: dict[str, bool]) -> None:
        super().use_memory_formats(formats)
        if "teacher" in formats:
            self.teacher.use_channels_last(bool(formats["teacher"]))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        for k, v in self.teacher.state_dict().items():
            state.setdefault(f"teacher.{k}", v)


def train_labels(trainer) -> Tensor | None:
    """The training split's labels, from the data module (or a plain training dataset)."""
    dm = getattr(trainer, "datamodule", None)
    if dm is not None and hasattr(dm, "train_labels"):
        return dm.train_labels
    dataset = getattr(getattr(trainer, "train_dataloader", None), "dataset", None)
    labels = getattr(dataset, "labels", None)
    return torch.as_tensor(labels) if labels is not None else None


def _cka_name(s: str, t: str) -> str:
    """``cka_<stage>`` (logged as ``test/cka_<stage>``), ``cka_<s>_<t>`` for differing names."""
    return f"cka_{s}" if s == t else f"cka_{s}_{t}"
