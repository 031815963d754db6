"""The training system for teachers and baseline students (plain cross-entropy).

A system is assembled from plain modules built by Hydra: the network, a loss module with the
``KDLoss`` interface (``CrossEntropy`` here) and optimiser/scheduler factories (``_partial_``).
It owns the loop-level behaviour every kdlab run shares: per-term loss logging, gradient-norm
logging and clipping, torchmetrics for val/test, and the val/acc_best tracker.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric

from kdlab.data.batch import Batch
from kdlab.distill.base import TASK
from kdlab.metrics.classification import StageMetrics
from kdlab.metrics.divergence import DivergenceWatch
from kdlab.metrics.running import RunningMeans
from kdlab.models.base import count_parameters
from kdlab.systems.gradients import (
    check_split_gradients,
    hand_over_distill_gradient,
    optimizer_record,
    takes_distill_gradient,
)


class Classifier(L.LightningModule):
    """Train ``net`` with ``criterion`` (CE by default); evaluate acc, NLL and ECE."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., object] | None = None,
        criterion: nn.Module | None = None,
        grad_clip: float | None = None,
        lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        # Only scalars go to hparams: modules and factories are rebuilt from the Hydra config.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "criterion", "teacher"])
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(
                f"grad_clip must be a positive max norm or null (off), got {grad_clip}"
            )
        if lr_scale <= 0:
            raise ValueError(f"lr_scale must be > 0, got {lr_scale}")
        if criterion is None:
            from kdlab.distill.base import CrossEntropy

            criterion = CrossEntropy()
        self.net = net
        self.criterion = criterion
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.grad_clip = grad_clip
        self.lr_scale = lr_scale
        self.test_prefix = "test"  # use_test_prefix("test_final") for the final weights
        num_classes = net.num_classes
        self.train_stats = RunningMeans()
        self.divergence = DivergenceWatch()
        self._grad_params: tuple[list, list] | None = None
        with_teacher = self.has_teacher
        self.val_metrics = StageMetrics(num_classes, with_teacher)
        self.test_metrics = StageMetrics(num_classes, with_teacher)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # survives resume (sanity checks never update it)

    has_teacher = False
    # kdlab.systems.fast switches to torch.channels_last where chosen; contiguous is a no-op
    input_format = torch.contiguous_format

    # -- memory format (chosen by kdlab.systems.fast, recorded in checkpoints) -----------------
    def memory_formats(self) -> dict[str, bool]:
        """Which networks run channels_last."""
        return {"student": self.input_format == torch.channels_last}

    def use_memory_formats(self, formats: dict[str, bool]) -> None:
        nhwc = bool(formats.get("student", False))
        self.input_format = torch.channels_last if nhwc else torch.contiguous_format
        self.net.to(memory_format=self.input_format)

    def use_test_prefix(self, prefix: str) -> None:
        """Log the next test run as ``<prefix>/…`` (``test_final`` for the final weights)."""
        self.test_prefix = prefix

    def describe(self) -> dict:
        """What results.json records about this system beyond its metrics."""
        return {
            "teacher": None,
            "grad_clip": self.grad_clip,
            "student_params": count_parameters(self.net),
            "compression_ratio": None,
            "channels_last": self.memory_formats()["student"],  # the format that ran
            "method_params": {},
            "method_label": None,
            "optimizer": optimizer_record(self.optimizer_factory),
        }

    # -- the pieces subclasses change ------------------------------------------------------
    def compute_losses(
        self,
        x: Tensor,
        y: Tensor,
        index: Tensor | None = None,
        view: Tensor | None = None,
        x_strong: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Student logits and the loss terms of one training batch.

        ``index`` holds the batch's training-split rows and ``view`` its crop/flip view ids;
        the Distiller uses them for teacher caches and index-aware losses, and ``x_strong``
        (the strong view of the same images) for losses that read one.
        """
        logits = self.net(x)
        return logits, self.criterion(logits, None, y)

    def eval_teacher_logits(self, x: Tensor, y: Tensor | None = None) -> Tensor | None:
        """The teacher's logits for evaluation batches (None: no teacher)."""
        return None

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """What the optimiser updates: the network and any parameters of the loss."""
        return [p for p in self.parameters() if p.requires_grad]

    def clip_parameters(self) -> list[nn.Parameter]:
        """What gradient clipping covers (the union of everything trained, by default)."""
        return list(self.trainable_parameters())

    # -- training --------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def logging_step(self) -> bool:
        """Whether this training step's values reach the loggers (Lightning writes step
        values every ``trainer.log_every_n_steps`` steps; logging them at other steps is work
        no logger sees)."""
        trainer = self._trainer
        if trainer is None:
            return True
        return (self.global_step + 1) % max(trainer.log_every_n_steps, 1) == 0

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch.x.contiguous(memory_format=self.input_format), batch.y
        strong = batch.x_strong
        if strong is not None:
            strong = strong.contiguous(memory_format=self.input_format)
        logits, terms = self.compute_losses(x, y, batch.index, batch.view, strong)
        task = terms.pop(TASK, None)  # the supervised part of the loss (not a logged term)
        self.train_stats.update(terms, logits, y)  # epoch means and accuracy, on the device
        self.divergence.update(terms, self.global_step, self.current_epoch)
        if logits.device.type == "cpu" or self.logging_step():  # a sync only where it is free
            self.divergence.check()
        if self.logging_step():
            for name, value in terms.items():
                key = "train/loss" if name == "loss" else f"train/loss_{name}"
                self.log(
                    f"{key}_step",
                    value,
                    on_step=True,
                    on_epoch=False,
                    batch_size=len(y),
                    prog_bar=name == "loss",
                )
        return self.backward_loss(terms["loss"], task, self._split_optimizer())

    def _split_optimizer(self):
        """The optimiser when it takes the distillation gradient apart (``DOT``), else None."""
        if self._trainer is None:
            return None
        opt = self.optimizers(use_pl_optimizer=False)
        return opt if takes_distill_gradient(opt) else None

    def backward_loss(self, loss: Tensor, task: Tensor | None, opt=None) -> Tensor:
        """What Lightning back-propagates: ``loss``, or for an optimiser ``opt`` that takes the
        distillation gradient apart, the task part (``kdlab.systems.gradients``)."""
        if opt is None:
            return loss
        return hand_over_distill_gradient(loss, task, self._grad_lists()[0], opt)

    def on_train_epoch_start(self) -> None:
        self.train_stats.reset()

    def on_validation_epoch_start(self) -> None:
        self.divergence.check()  # before validation, and so before this epoch's checkpoints

    def on_train_epoch_end(self) -> None:
        self.divergence.check()
        self.log_epoch_means()

    def log_epoch_means(self) -> None:
        """The epoch's mean of every loss term and its accuracy (same names and values as
        Lightning's own epoch reduction of per-step logging)."""
        if not self.train_stats.count:
            return
        for name, mean in self.train_stats.means().items():
            key = "train/loss" if name == "loss" else f"train/loss_{name}"
            self.log(f"{key}_epoch", mean, on_step=False, on_epoch=True)
        self.log(
            "train/acc",
            self.train_stats.accuracy(),
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
        )

    def _grad_lists(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(everything trained, what clipping covers), built once: the set never changes
        after the optimiser exists."""
        if self._grad_params is None:
            self._grad_params = (list(self.trainable_parameters()), self.clip_parameters())
        return self._grad_params

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ):
        """Clip, and log the gradient norm of everything trained (before clipping).

        Clipping covers ``clip_parameters()``; when that is a subset (the published bug
        ablation), the logged norm is still the union's so the difference is visible. The
        norm is computed once per step when clipping needs it anyway, else only at logging
        steps.
        """
        trained, clipped = self._grad_lists()
        log_now = self.logging_step()
        total = None
        if self.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(clipped, self.grad_clip)  # norm before clip
            total = norm if len(clipped) == len(trained) else None
        if log_now and total is None:
            grads = [p.grad for p in trained if p.grad is not None]
            if not grads:
                return
            total = torch.nn.utils.get_total_norm(grads)
        if log_now and total is not None:
            self.log("train/grad_norm", total, on_step=True, on_epoch=False)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.trainable_parameters())
        if takes_distill_gradient(optimizer):
            trainer = self._trainer
            world = trainer.world_size if trainer is not None else 1
            accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
            check_split_gradients(type(optimizer).__name__, self.grad_clip, world, accumulate)
        if self.lr_scale != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_scale
                group["initial_lr"] = group["lr"]
        if self.scheduler_factory is None:
            # a constant schedule, so the learning rate is logged as `lr` like every other run
            # (Lightning names an optimiser without a scheduler `lr-<OptimiserClass>`)
            scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        else:
            scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "name": "lr"},
        }

    # -- evaluation ------------------------------------------------------------------------
    def _eval_step(self, batch: Batch, metrics: StageMetrics) -> None:
        x, y = batch.x.contiguous(memory_format=self.input_format), batch.y
        metrics.update(self.net(x), y, self.eval_teacher_logits(x, y))

    def _log_eval(self, metrics: StageMetrics, prefix: str) -> None:
        """Log every metric object once per evaluation pass (Lightning computes and resets)."""
        for name, metric in metrics.items():
            self.log(f"{prefix}/{name}", metric, on_step=False, on_epoch=True)
        if prefix == "val":
            self.log("val/loss", metrics["nll"], on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_metrics["acc"].compute()
        self._log_eval(self.val_metrics, "val")
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(acc)
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=False)

    def best_val_acc(self) -> float | None:
        """The highest val accuracy so far (saved in and restored from every checkpoint)."""
        value = float(self.val_acc_best.max_value)  # the state itself: a restored run has not
        return value if math.isfinite(value) else None  # updated it yet (no compute warning)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_eval(self.test_metrics, self.test_prefix)
