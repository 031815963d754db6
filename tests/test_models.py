"""Model sizes, output shapes and the uniform stage access."""

from __future__ import annotations

import pytest
import torch

from kdlab.models import check_stages, count_parameters, stage_shapes
from kdlab.models.cnn import small_cnn
from kdlab.models.preresnet import preresnet20
from kdlab.models.resnet import resnet18, resnet34, resnet50, resnet101, resnet152


@pytest.mark.parametrize(
    ("factory", "expected"),
    [(resnet18, 11_173_962), (resnet34, 21_282_122), (resnet50, 23_520_842)],
)
def test_parameter_counts_match_the_capacity_gap_study(factory, expected):
    assert count_parameters(factory(10)) == expected


def test_preresnet20_is_the_small_replication_model():
    n = count_parameters(preresnet20(100))
    assert 0.25e6 < n < 0.30e6


@pytest.mark.parametrize(
    "factory", [resnet18, resnet34, resnet50, resnet101, resnet152, preresnet20, small_cnn]
)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_logits_shape_and_forward_equals_forward_stages(factory, num_classes):
    torch.manual_seed(0)
    net = factory(num_classes=num_classes).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = net(x)
        logits2, feats = net.forward_stages(x)
    assert logits.shape == (2, num_classes)
    assert torch.equal(logits, logits2)
    assert list(feats) == list(net.stage_names)


def test_resnet_stage_shapes_with_cifar_stem():
    assert stage_shapes(resnet18(10)) == {
        "layer1": (64, 32, 32),
        "layer2": (128, 16, 16),
        "layer3": (256, 8, 8),
        "layer4": (512, 4, 4),
    }
    assert stage_shapes(resnet50(10))["layer4"] == (2048, 4, 4)
    assert stage_shapes(preresnet20(100)) == {
        "layer1": (16, 32, 32),
        "layer2": (32, 16, 16),
        "layer3": (64, 8, 8),
    }


def test_imagenet_stem_downsamples_four_times_before_layer1():
    net = resnet18(10, stem="imagenet")
    assert net.conv1.kernel_size == (7, 7)
    assert stage_shapes(net)["layer1"] == (64, 8, 8)
    assert resnet18(10).conv1.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="stem"):
        resnet18(10, stem="tiny")


def test_stage_probe_restores_training_mode_and_unknown_stage_errors():
    net = resnet18(10).train()
    stage_shapes(net)
    assert net.training
    with pytest.raises(ValueError, match="layer9.*available stages"):
        check_stages(net, ["layer1", "layer9"])


def test_arch_names_are_the_short_experiment_names():
    assert [f(10).arch for f in (resnet18, resnet34, resnet50)] == ["r18", "r34", "r50"]
    assert preresnet20(100).arch == "preresnet20" and small_cnn(10).arch == "cnn"


@pytest.mark.parametrize(
    ("num_classes", "widths", "expected"),
    # CIFAR-10: 3·16·9+16 + 16·32·9+32 + 2048·256+256 + 256·10+10;
    # CIFAR-100: 3·32·9+32 + 32·64·9+64 + 4096·512+512 + 512·100+100
    [(10, (16, 32, 256), 532_202), (100, (32, 64, 512), 2_168_356)],
)
def test_cnn_is_the_notebooks_student_for_each_dataset(num_classes, widths, expected):
    net = small_cnn(num_classes)
    assert count_parameters(net) == expected
    assert (net.layer1[0].out_channels, net.layer2[1].out_channels, net.fc1.out_features) == widths
    assert not any(isinstance(m, torch.nn.Dropout) for m in net.modules())  # no dropout
    wide = small_cnn(num_classes, channels=[8, 8], hidden=4, dropout=0.1)
    assert wide.fc1.in_features == 8 * 8 * 8 and wide.fc1.out_features == 4
    assert any(isinstance(m, torch.nn.Dropout) for m in wide.modules())
