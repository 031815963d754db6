"""The introductory notebook's figure: a teacher's softened probabilities at T = 1, 5, 10.

It shows *why* KD uses a temperature: at T = 1 a trained teacher is nearly one-hot, while at
higher T the "dark knowledge" (which wrong classes it finds similar) becomes visible. The true
class (green) and the teacher's prediction (red outline) are marked in every panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from kdlab.analysis.testset import export_reader, load_test, predict  # noqa: E402
from kdlab.models.export import load_exported, read_checkpoint  # noqa: E402

TEMPERATURES = (1.0, 5.0, 10.0)
DPI = 100
PANEL_WIDTH, HEIGHT, IMAGE_WIDTH = 4.0, 3.5, 3.0  # inches


def figure_size(n_temps: int) -> tuple[float, float]:
    """Inches of the figure: the image panel plus one panel per temperature."""
    return (IMAGE_WIDTH + PANEL_WIDTH * n_temps, HEIGHT)


def softened(logits: torch.Tensor, temps: Sequence[float]) -> np.ndarray:
    """``softmax(z / T)`` for every T: an array of shape (len(temps), num_classes)."""
    z = logits.detach().float().reshape(-1)
    return torch.stack([torch.softmax(z / t, dim=0) for t in temps]).numpy()


def temperature_figure(
    probs: np.ndarray,
    temps: Sequence[float],
    image: np.ndarray,
    label: int,
    classes: Sequence[str],
) -> Figure:
    """Image panel + one bar chart of class probabilities per temperature."""
    pred = int(np.argmax(probs[0]))
    fig, axes = plt.subplots(
        1,
        1 + len(temps),
        figsize=figure_size(len(temps)),
        dpi=DPI,
        layout="constrained",
        gridspec_kw={"width_ratios": [IMAGE_WIDTH] + [PANEL_WIDTH] * len(temps)},
    )
    axes[0].imshow(image)
    axes[0].set_axis_off()
    axes[0].set_title(f"true: {classes[label]}\npred: {classes[pred]}", fontsize=9)
    idx = np.arange(len(classes))
    for ax, t, p in zip(axes[1:], temps, probs, strict=True):
        colors = ["tab:green" if i == label else "tab:gray" for i in idx]
        bars = ax.bar(idx, p, color=colors)
        bars[pred].set_edgecolor("tab:red")
        bars[pred].set_linewidth(2.0)
        ax.set_title(f"T = {t:g}", fontsize=10)
        ax.set_ylim(0, 1)
        ax.set_xlabel("class")
        if len(classes) <= 10:
            ax.set_xticks(idx, classes, rotation=60, fontsize=7)
    axes[1].set_ylabel("softmax(z / T)")
    axes[-1].legend(
        handles=[
            Patch(color="tab:green", label="true class"),
            Patch(facecolor="white", edgecolor="tab:red", linewidth=2, label="prediction"),
        ],
        fontsize=7,
    )
    return fig


def plot_temperature(
    ckpt: str | Path,
    data_root: str | Path,
    out: str | Path,
    index: int = 0,
    temps: Sequence[float] = TEMPERATURES,
    dataset: str | None = None,
    verify: str = "md5",
) -> Path:
    """Load a teacher export, soften its logits on test image ``index`` and save the PNG."""
    if any(t <= 0 for t in temps):
        raise ValueError(f"temperatures must be > 0, got {list(temps)}")
    meta = read_checkpoint(ckpt)
    net = load_exported(ckpt)
    reader = export_reader(meta, net, ckpt, dataset)
    normalize = meta.get("normalize") or "dataset"
    images, x, y = load_test(data_root, reader, normalize_as=normalize, verify=verify)
    if not 0 <= index < len(y):
        raise ValueError(f"--index {index} is outside the test set of {len(y)} images")
    logits = predict(net, x[index : index + 1])[0]
    probs = softened(logits, temps)
    fig = temperature_figure(probs, temps, images[index], int(y[index]), reader.classes(data_root))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out
