"""``python -m kdlab.eval ckpt=PATH``: every test metric of one checkpoint, written to eval.json.

Any checkpoint kdlab can load is accepted: a run's Lightning checkpoint (its architecture and
data settings come from the run's ``.hydra/config.yaml``), a teacher-store export (it carries
its model config), or a plain or published state dict (then ``model=ARCH`` names the network).
With ``teacher.ckpt=PATH`` the student's agreement with the teacher, KL(teacher ‖ student) and
the teacher's own accuracy are added — the same metric objects a training run tests with.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from kdlab import CONF_DIR
from kdlab.metrics.classification import StageMetrics
from kdlab.models.export import is_published_format, network_state, read_checkpoint
from kdlab.utils.provenance import write_json
from kdlab.utils.resolvers import register

register()
log = logging.getLogger("kdlab.eval")


def run_config(ckpt: Path) -> DictConfig | None:
    """The resolved config of the run a Lightning checkpoint belongs to (``<run>/.hydra``)."""
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


def load_network(path: str | Path, model: str | None, data: DictConfig) -> torch.nn.Module:
    """Build the network a checkpoint holds and load its weights strictly."""
    path = Path(path)
    obj = read_checkpoint(path)
    run = run_config(path)
    if model is not None:
        cfg = model_config(model, data)
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
        raise ValueError(f"{path} does not match '{getattr(net, 'arch', '?')}': {e}") from e
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


@torch.no_grad()
def evaluate(net, teacher, loader, device: torch.device) -> dict[str, float]:
    """Test metrics of ``net`` (and its agreement with ``teacher``) over ``loader``."""
    metrics = StageMetrics(net.num_classes, teacher is not None).to(device)
    net.to(device).eval()
    if teacher is not None:
        teacher.to(device).eval()
    n = 0
    for batch in loader:
        b = batch.to(device)
        t_logits = teacher(b.x) if teacher is not None else None
        metrics.update(net(b.x), b.y, t_logits)
        n += len(b)
    return {"n_images": n} | {name: float(m.compute()) for name, m in metrics.items()}


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> dict[str, Any]:
    data = data_config(cfg)
    with open_dict(cfg):
        cfg.data = data
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          "cpu" if cfg.device == "auto" else cfg.device)  # fmt: skip
    net = load_network(cfg.ckpt, cfg.model, data)
    teacher = load_network(cfg.teacher.ckpt, cfg.teacher.model, data) if cfg.teacher.ckpt else None
    for role, model in (("student", net), ("teacher", teacher)):
        if model is not None and model.num_classes != data.num_classes:
            raise ValueError(
                f"the {role} has {model.num_classes} classes but data={data.name} has "
                f"{data.num_classes}: pass the data= it was trained on"
            )
    dm = instantiate(data)
    dm.prepare_data()
    dm.setup()
    res = {"ckpt": str(cfg.ckpt), "arch": getattr(net, "arch", None), "dataset": data.name,
           "teacher_ckpt": cfg.teacher.ckpt}  # fmt: skip
    m = evaluate(net, teacher, dm.loader("test"), device)
    res |= {"n_images": m.pop("n_images")}
    res |= {f"test_{k}": v for k, v in m.items()}
    out = Path(cfg.out) if cfg.out else Path(cfg.paths.output_dir) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, res)
    log.info("%s", json.dumps(res, indent=2))
    log.info("wrote %s", out)
    return res


if __name__ == "__main__":
    main()
