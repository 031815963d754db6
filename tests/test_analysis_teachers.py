"""The teacher figures: softened probabilities at several T and independent-teacher agreement."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from kdlab.analysis.__main__ import main
from kdlab.analysis.agreement import agreement_from_logits, agreement_markdown, teacher_agreement
from kdlab.analysis.temperature import softened, temperature_figure
from kdlab.data.synthetic import write_fake_cifar
from kdlab.models.cnn import small_cnn
from kdlab.models.export import export_weights

CFG = {"_target_": "kdlab.models.cnn.small_cnn", "num_classes": 10, "hidden": 16}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A tiny CIFAR-10 test set and two small-CNN 'teachers' that differ only in their seed."""
    root = tmp_path_factory.mktemp("report_teachers")
    write_fake_cifar(root / "data", "cifar10", n_train=20, n_test=40)
    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ckpts.append(
            export_weights(
                small_cnn(10, hidden=16), root / f"t/seed{seed}.ckpt", CFG, dataset="cifar10"
            )
        )
    return root / "data", ckpts


def test_softened_matches_closed_form():
    z = torch.tensor([math.log(4.0), math.log(2.0), 0.0])
    p = softened(z, [1.0, 2.0])
    np.testing.assert_allclose(p[0], np.array([4, 2, 1]) / 7, rtol=1e-6)
    np.testing.assert_allclose(p[1], np.array([2, math.sqrt(2), 1]) / (3 + math.sqrt(2)), rtol=1e-6)


def test_figure_marks_true_class_and_prediction():
    probs = softened(torch.tensor([0.0, 3.0, 1.0]), [1.0, 5.0, 10.0])
    fig = temperature_figure(
        probs, [1, 5, 10], np.zeros((32, 32, 3), np.uint8), label=2, classes=["a", "b", "c"]
    )
    for ax in fig.axes[1:4]:
        bars = ax.patches
        assert mcolors.same_color(bars[2].get_facecolor(), "tab:green")  # true class
        assert mcolors.same_color(bars[1].get_edgecolor(), "tab:red")  # argmax prediction
        assert not mcolors.same_color(bars[0].get_facecolor(), "tab:green")
    assert [ax.get_title() for ax in fig.axes[1:4]] == ["T = 1", "T = 5", "T = 10"]


def test_temperature_command_writes_png_of_expected_size(store, tmp_path):
    data, ckpts = store
    out = tmp_path / "fig" / "temp.png"
    rc = main(
        [
            "temperature",
            "--ckpt",
            str(ckpts[0]),
            "--data-root",
            str(data),
            "--index",
            "3",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    img = mpimg.imread(out)
    assert img.shape[:2] == (350, 1500)  # (3 + 3 × 4) × 3.5 inches at 100 dpi


def test_temperature_command_rejects_bad_index(store, tmp_path, capsys):
    data, ckpts = store
    assert (
        main(["temperature", "--ckpt", str(ckpts[0]), "--data-root", str(data), "--index", "999"])
        == 2
    )
    assert "outside the test set of 40 images" in capsys.readouterr().err


def test_pair_metrics_on_known_logits():
    a = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    res = agreement_from_logits(["a", "b"], [a, b], torch.tensor([0, 1]))
    ((i, j, agree, kl),) = res.pairs
    assert (i, j, agree) == (0, 1, 50.0)
    p = 1 / (1 + math.exp(-2))  # softmax([2, 0])[0]
    kl_flip = (2 * p - 1) * math.log(p / (1 - p))  # KL both ways when p, q swap their entries
    assert kl == pytest.approx(0.5 * (0.0 + kl_flip), rel=1e-5)
    assert res.accuracy == [100.0, 50.0]


def test_identical_teachers_agree_fully_and_different_ones_do_not(store, tmp_path):
    data, ckpts = store
    twin = tmp_path / "twin" / "seed0.ckpt"
    twin.parent.mkdir()
    shutil.copy(ckpts[0], twin)
    same = teacher_agreement([ckpts[0], twin], data)
    assert same.pairs[0][2] == 100.0 and same.pairs[0][3] == pytest.approx(0.0, abs=1e-6)
    res = teacher_agreement([ckpts[0], ckpts[1], twin], data, limit=30)
    assert res.n_images == 30 and len(res.pairs) == 3
    assert res.agreement.n == 3 and res.sym_kl.mean > 0
    assert "mean ± std" in agreement_markdown(res)


def test_agreement_command_prints_table(store, tmp_path, capsys):
    data, ckpts = store
    out = tmp_path / "agree.md"
    assert main(["agreement", *map(str, ckpts), "--data-root", str(data), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "seed0.ckpt" in text and "Symmetric KL" in text
    assert out.read_text().startswith("Independent-teacher agreement on 40 test images")


def test_agreement_needs_two_teachers(store, capsys):
    data, ckpts = store
    assert main(["agreement", str(ckpts[0]), "--data-root", str(data)]) == 2
    assert "at least two" in capsys.readouterr().err
