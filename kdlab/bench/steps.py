"""What the benchmark times: systems, loaders, one full training step, and the timing loop.

A "step" is what a training run does per batch: fetch the batch from the pipeline, move it to
the device, student forward, teacher forward (inference mode, BN folded) or cache lookup, loss,
backward, gradient-norm clipping and the optimiser step. Systems are the real
``kdlab.systems`` modules with the real losses; teachers have random weights (speed does not
depend on the values) and random BN statistics, so folding does real work.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial

import torch
from torch import nn
from torch.utils.data import DataLoader

from kdlab import CONF_DIR
from kdlab.data.batch import Batch, collate
from kdlab.data.device import DeviceLoader
from kdlab.data.module import ArrayDataset
from kdlab.data.readers.cifar import CIFARReader
from kdlab.data.transforms import build_strong_transform, build_transform
from kdlab.distill.feature import FeatureKD
from kdlab.distill.logit import LogitKD
from kdlab.models.cnn import small_cnn
from kdlab.models.preresnet import preresnet20
from kdlab.models.resnet import resnet18, resnet50
from kdlab.systems import Classifier, Distiller, fast
from kdlab.teachers import EnsembleTeacher, FrozenTeacher
from kdlab.teachers.cache import TeacherCache, num_views

MEAN, STD = CIFARReader("cifar10").stats
MODELS = {  # (student, teacher) per size; --quick uses the small pair on CPU
    "full": {"student": ("r18", resnet18), "teacher": ("r50", resnet50)},
    "quick": {"student": ("cnn", small_cnn), "teacher": ("preresnet20", preresnet20)},
}
METHODS = ("baseline", "logit", "feature", "ensemble3", "logit_viewcache")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_bn(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net


def build_system(method: str, size: str, num_classes: int = 10, compile: bool = False) -> nn.Module:
    """Baseline, logit/feature KD or a 3-member ensemble over the ``size`` model pair."""
    torch.manual_seed(0)
    student = MODELS[size]["student"][1](num_classes=num_classes)
    teacher_fn = MODELS[size]["teacher"][1]
    opt = partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    if method == "baseline":
        return Classifier(student, opt, grad_clip=1.0)
    if method == "ensemble3":
        teacher = EnsembleTeacher(
            [random_bn(teacher_fn(num_classes=num_classes), s) for s in range(3)],
            compile=compile,
        )
    else:
        teacher = FrozenTeacher(random_bn(teacher_fn(num_classes=num_classes), 0), compile=compile)
    if method == "feature":
        stages = [s for s in student.stage_names if s in teacher.stage_names]
        loss = FeatureKD(alpha=0.5, beta=0.5, stages=stages)
    else:
        loss = LogitKD(alpha=0.5, temperature=4.0)
    return Distiller(student, teacher, loss, opt, grad_clip=1.0)


ZOO_PAIRS = {  # (teacher, student) of the CIFAR-100 benchmark timed by the zoo rows
    "full": ("resnet32x4", "resnet8x4"),
    "quick": ("resnet56", "resnet20"),
}
ZOO_METHODS = ("logit", "dkd", "crd", "reviewkd", "sdd", "mlkd", "fcfd")
ZOO_BASES = {"sdd": "dkd"}  # modifiers and the logit loss they wrap (conf/distill_base): SD-DKD


def build_zoo_system(method: str, size: str, n_train: int) -> nn.Module:
    """The benchmark pair of ``size`` (100 classes) distilled with ``method`` as published."""
    return build_pair_system(method, *ZOO_PAIRS[size], n_train)


def build_pair_system(
    method: str,
    teacher_arch: str,
    student_arch: str,
    n_train: int,
    compile: bool = False,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """A benchmark pair (100 classes) distilled with ``conf/distill/<method>.yaml`` as
    published (CRD's memory bank sized for ``n_train`` images, at most its 16,384 negatives;
    a modifier around ``conf/distill_base/<ZOO_BASES[method]>.yaml``); ``baseline`` is the
    student alone, ``logit_viewcache`` logit KD served by a view cache."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from kdlab.models.zoo import build

    torch.manual_seed(0)
    opt = partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    if method == "baseline":
        return Classifier(build(student_arch, 100), opt)
    name = method.removesuffix("_viewcache")
    root = OmegaConf.create({"label_smoothing": 0.0})
    root.distill = OmegaConf.load(CONF_DIR / "distill" / f"{name}.yaml")
    if name == "logit":  # the pair experiments' KD (conf/experiment/recipe/cifar100_pair.yaml)
        root.distill.alpha, root.distill.temperature = 0.9, 4
    if name in ZOO_BASES:  # what Hydra's defaults list would compose: the wrapped loss
        root.distill_base = OmegaConf.load(CONF_DIR / "distill_base" / f"{ZOO_BASES[name]}.yaml")
    root.distill.pop("defaults", None)
    if name == "crd":  # the bank needs more rows than negatives
        root.distill.terms.crd.nce_k = min(16384, n_train - 100)
    loss = instantiate(root.distill)
    teacher = FrozenTeacher(random_bn(build(teacher_arch, 100), 0), compile=compile)
    system = Distiller(build(student_arch, 100), teacher, loss, opt)
    system.criterion.bind_data(torch.arange(n_train) % 100)
    if method.endswith("_viewcache"):
        attach_random_view_cache(system, n_train, num_classes=100, device=device)
    return system


def make_loader(
    pipeline: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    device,
    workers: int,
    strong_view: bool = False,
):
    """The training loader of ``pipeline`` over uint8 N×32×32×3 ``images`` (augmenting; with
    ``strong_view`` each batch also carries a strong view, as for MLKD)."""
    if pipeline == "device":
        return DeviceLoader(
            images,
            labels,
            batch,
            MEAN,
            STD,
            augment=True,
            shuffle=True,
            seed=0,
            drop_last=True,
            device=device,
            strong_view=strong_view,
        )
    strong = build_strong_transform(MEAN, STD) if strong_view else None
    ds = ArrayDataset(images.numpy(), labels.numpy(), build_transform(MEAN, STD, True), strong)
    return DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        collate_fn=collate,
    )


def endless(loader) -> Iterator:
    """Batches forever (a new epoch whenever one ends)."""
    return itertools.chain.from_iterable(iter(loader) for _ in itertools.count())


def to_device(batch: Batch, device: torch.device) -> Batch:
    return batch.to(device, non_blocking=True)


def attach_random_view_cache(
    system: Distiller, n: int, num_classes: int = 10, device: torch.device | str = "cpu"
) -> None:
    """A view cache of the right shape (values irrelevant for speed) for the lookup rows,
    drawn where it will live (a CIFAR-100 table is hundreds of MB)."""
    logits = torch.randn(n, num_views(4), num_classes, device=device, dtype=torch.float16)
    system.teacher.use_cache(TeacherCache(logits))


def make_step(system, optimizer, device: torch.device, amp: bool) -> Callable:
    """One plain-PyTorch training step on a batch (the same work Lightning's loop does)."""

    def step(batch: Batch) -> None:
        b = to_device(batch, device)
        x = b.x.contiguous(memory_format=system.input_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            xs = b.x_strong
            if xs is not None:
                xs = xs.contiguous(memory_format=system.input_format)
            _, terms = system.compute_losses(x, b.y, b.index, b.view, xs)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(system.clip_parameters(), 1.0)
        optimizer.step()

    return step


def prepare(system, device: torch.device, compile: bool = False) -> torch.optim.Optimizer:
    """The system in its fast form for ``device`` (kdlab.systems.fast), and its optimiser."""
    fast.prepare(system, device.type, compile=compile)
    system.to(device)
    return system.optimizer_factory(params=system.trainable_parameters())


def time_it(
    work: Callable[[], None], images_per_call: int, device, warmup: int, steps: int, repeats: int
) -> dict:
    """images/s of ``work`` over ``repeats`` windows of ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        work()
    sync(device)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            work()
        sync(device)
        rates.append(images_per_call * steps / (time.perf_counter() - t0))
    return summarize(rates)


def summarize(rates: list[float]) -> dict:
    return {
        "images_per_s": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "repeats": rates,
    }
