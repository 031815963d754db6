"""``python -m kdlab.eval ckpt=PATH``: every test metric of one checkpoint, written to eval.json.

Any checkpoint kdlab can load is accepted: a run's Lightning checkpoint (its architecture and
data settings come from the run's ``.hydra/config.yaml``), a teacher-store export (it carries
its model config), or a plain or published state dict (then ``model=ARCH`` names the network,
``teacher.model=ARCH`` the teacher's). With ``teacher.ckpt=PATH`` the student's agreement with
the teacher, KL(teacher ‖ student) and the teacher's own accuracy are added. The test runs
through ``Trainer.test`` with the metric objects of a training run, and eval.json holds the
keys a run's results.json holds for the same numbers (``test_acc_best`` …), so the two can be
compared key by key. Only the test split is read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from kdlab import CONF_DIR
from kdlab.models.export import is_published_format, network_state, read_checkpoint, sha256_file
from kdlab.results import eval_record
from kdlab.systems.evaluator import Evaluator
from kdlab.teachers.known import announce, compare, recognise
from kdlab.utils.errors import user_error
from kdlab.utils.provenance import write_json
from kdlab.utils.quiet import quiet_libraries
from kdlab.utils.resolvers import register

register()
quiet_libraries()
log = logging.getLogger("kdlab.eval")


def run_config(ckpt: Path) -> DictConfig | None:
    """The config of the run a Lightning checkpoint belongs to (``<run>/.hydra``)."""
    for folder in (ckpt.parent.parent, ckpt.parent):
        path = folder / ".hydra" / "config.yaml"
        if path.is_file():
            return OmegaConf.load(path)
    return None


def model_config(name: str, data: DictConfig) -> dict[str, Any]:
    """``conf/model/<name>.yaml`` resolved against ``data`` (its number of classes)."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
        raise ValueError(f"model={name} is not a kdlab model; choose one of {known}")
    root = OmegaConf.create({"data": OmegaConf.to_container(data, resolve=True)})
    root.model = OmegaConf.load(path)
    return OmegaConf.to_container(root.model, resolve=True)


def load_network(
    path: str | Path, model: DictConfig | dict | str | None, data: DictConfig
) -> torch.nn.Module:
    """Build the network a checkpoint holds and load its weights strictly.

    ``model`` is a model config (``model=ARCH`` composed it), a model name, or None: then the
    file or its run says which network it holds.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    run = run_config(path)
    if isinstance(model, str):
        cfg = model_config(model, data)
    elif model is not None:
        cfg = (
            OmegaConf.to_container(model, resolve=True) if isinstance(model, DictConfig) else model
        )
    elif isinstance(obj.get("model"), dict) and "_target_" in obj["model"]:
        cfg = obj["model"]  # a teacher-store export
    elif run is not None:
        cfg = OmegaConf.to_container(run.model, resolve=True)
    else:
        raise ValueError(
            f"{path} does not say which network it holds (not a kdlab run or export): name it "
            "with model=ARCH (or teacher.model=ARCH), e.g. model=resnet32x4"
        )
    net = instantiate(cfg)
    state = network_state(obj)
    if is_published_format(obj):
        from kdlab.models.zoo.published import to_kdlab_state

        state = to_kdlab_state(getattr(net, "arch", ""), state)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        from kdlab.teachers.store import _mismatches

        raise ValueError(
            f"{path} does not match '{getattr(net, 'arch', '?')}' ({_mismatches(net, state)}); "
            "name the network it holds with model=ARCH (teacher.model=ARCH for a teacher)"
        ) from e
    return net.eval()


def data_config(cfg: DictConfig) -> DictConfig:
    """The run's own data settings for a run checkpoint, unless ``data=…`` was given; any
    ``data.<key>=…`` overrides apply on top."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    run = run_config(Path(cfg.ckpt))
    if run is None or any(o.startswith("data=") for o in overrides):
        return cfg.data
    data = OmegaConf.create(OmegaConf.to_container(run.data, resolve=True))
    given = OmegaConf.from_dotlist([o[len("data.") :] for o in overrides if o.startswith("data.")])
    return OmegaConf.merge(data, given)


def test_metrics(net, teacher, datamodule, device: str) -> dict[str, float]:
    """``Trainer.test`` of ``net`` (with ``teacher``) on the test split: ``test/*`` values."""
    system = Evaluator(net, teacher)
    accelerator = "auto" if device == "auto" else ("cpu" if device == "cpu" else "gpu")
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision="32-true",
    )
    return trainer.test(system, datamodule=datamodule, verbose=False)[0]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    data = data_config(cfg)
    with open_dict(cfg):
        cfg.data = data
    net = load_network(cfg.ckpt, cfg.get("model"), data)
    teacher = load_network(cfg.teacher.ckpt, cfg.teacher.model, data) if cfg.teacher.ckpt else None
    for role, model in (("student", net), ("teacher", teacher)):
        if model is not None and model.num_classes != data.num_classes:
            raise ValueError(
                f"the {role} has {model.num_classes} classes but data={data.name} has "
                f"{data.num_classes}: pass the data= it was trained on"
            )
    digest = sha256_file(cfg.ckpt)
    known = recognise(cfg.ckpt, digest)
    announce(known, getattr(net, "arch", None), data.name)
    dm = instantiate(data)
    dm.prepare_data()
    metrics = test_metrics(net, teacher, dm, cfg.device)
    run = run_config(Path(cfg.ckpt))
    res = eval_record(
        run,
        metrics,
        with_teacher=teacher is not None,
        arch=getattr(net, "arch", None),
        dataset=data.name,
        ckpt=str(cfg.ckpt),
        ckpt_sha256=digest,
        teacher_ckpt=cfg.teacher.ckpt,
        teacher_sha256=sha256_file(cfg.teacher.ckpt) if cfg.teacher.ckpt else None,
        n_images=len(dm.splits["test"][1]),
    )
    if known is not None:  # the published accuracy beside the measured one
        res |= known.record()
        res["published_warning"] = compare(known.top1, res.get("test_acc_best"), "checkpoint")
    out = Path(cfg.out) if cfg.out else Path(cfg.paths.output_dir) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, res)
    log.info("%s", json.dumps(res, indent=2))
    log.info("wrote %s", out)
    return res


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> dict[str, Any]:
    try:
        return evaluate(cfg)
    except Exception as err:
        if not user_error(err):
            raise
        from kdlab.results import error_text

        log.error("%s", error_text(err))
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
