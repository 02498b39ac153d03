"""Tests of the backbones and segmentation heads (tiny CPU inputs, from-scratch weights)."""
from __future__ import annotations

import pytest
import torch
import torchvision

from scribbleseg.models import SegmentationModel
from scribbleseg.models.backbones import BACKBONES, build_backbone, weights_path
from scribbleseg.models.build import MODEL_NAMES, build_model
from scribbleseg.models.deeplab import ASPPV2

torch.set_num_threads(1)
K = 5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# (head, backbone, output_stride, expected logits stride, expected feature dim D or None)
CASES = [
    ("deeplabv2", "resnet18", 8, 8, 512),
    ("deeplabv2", "resnet50", 16, 16, 2048),
    ("deeplabv2", "mobilenetv2", 16, 16, 320),
    ("deeplabv3plus", "resnet18", 16, 4, 256),
    ("deeplabv3plus", "resnet50", 16, 4, 256),
    ("deeplabv3plus", "mobilenetv2", 8, 4, 256),
    ("upernet", "resnet18", 8, 4, 512),
    ("upernet", "resnet50", 16, 4, 512),
    ("upernet", "mobilenetv2", 32, 4, 512),
]


@pytest.mark.parametrize("name,backbone,os_,stride,dim", CASES)
def test_model_shapes_and_classifier(name, backbone, os_, stride, dim):
    model = build_model(name, K, backbone=backbone, output_stride=os_).eval()
    assert isinstance(model, SegmentationModel)
    assert model.output_stride == stride
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        out = model(x)
        assert set(out) == {"features", "logits"}
        h, w = 64 // stride, 48 // stride
        assert out["features"].shape == (2, dim, h, w)
        assert out["logits"].shape == (2, K, h, w)
        # classifier maps D -> K: logits are exactly classifier(features)
        torch.testing.assert_close(model.classifier(out["features"]), out["logits"])
        torch.testing.assert_close(model.features(x), out["features"])


def test_deeplabv2_classifier_is_aspp_sum():
    model = build_model("deeplabv2", K, backbone="resnet18", output_stride=8)
    aspp = model.classifier
    assert isinstance(aspp, ASPPV2)
    assert [b.dilation for b in aspp.branches] == [(r, r) for r in (6, 12, 18, 24)]
    f = torch.randn(1, 512, 8, 8)
    torch.testing.assert_close(aspp(f), sum(b(f) for b in aspp.branches))


@pytest.mark.parametrize(
    "name,backbone,os_",
    [("deeplabv2", "resnet18", 8), ("deeplabv3plus", "mobilenetv2", 16), ("upernet", "resnet18", 32)],
)
def test_gradient_reaches_first_conv_batch1(name, backbone, os_):
    # batch size 1 in training mode must work (no BatchNorm over 1x1 pooled maps)
    model = build_model(name, K, backbone=backbone, output_stride=os_).train()
    out = model(torch.randn(1, 3, 64, 64))
    out["logits"].square().mean().backward()
    first = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 3
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50", "mobilenetv2"])
@pytest.mark.parametrize("os_", [8, 16, 32])
def test_backbone_dilation_sizes(backbone, os_):
    net = build_backbone(backbone, os_).eval()
    assert net.output_stride == os_
    with torch.no_grad():
        f = net(torch.randn(1, 3, 64, 64))
    strides = {"c1": 4, "c2": 8, "c3": min(16, os_), "c4": os_}
    for k, s in strides.items():
        assert f[k].shape == (1, net.channels[k], 64 // s, 64 // s), k
    assert f["low"] is f["c1"] and f["out"] is f["c4"]
    assert net.low_channels == net.channels["c1"] and net.out_channels == net.channels["c4"]


def test_basicblock_dilation_set_by_hand():
    net = build_backbone("resnet18", 8)
    l3, l4 = net.layer3, net.layer4
    assert l3[0].conv1.stride == (1, 1) and l3[0].downsample[0].stride == (1, 1)
    assert l3[0].conv1.dilation == (1, 1) and l3[0].conv2.dilation == (2, 2)
    assert l3[1].conv1.dilation == (2, 2) and l4[0].conv1.dilation == (2, 2)
    assert l4[0].conv2.dilation == (4, 4) and l4[1].conv2.padding == (4, 4)
    net16 = build_backbone("resnet18", 16)
    assert net16.layer3[0].conv1.stride == (2, 2) and net16.layer4[1].conv2.dilation == (2, 2)


def test_resnet101_bottleneck_dilation():
    net = build_backbone("resnet101", 8)  # construction only: a forward pass is too slow here
    assert net.layer3[0].conv2.stride == (1, 1) and net.layer4[0].conv2.stride == (1, 1)
    assert net.layer3[1].conv2.dilation == (2, 2) and net.layer4[1].conv2.dilation == (4, 4)
    assert net.out_channels == 2048 and net.low_channels == 256


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path and a download that always fails (no network)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)

    def fail(url, dst, *args, **kwargs):
        raise OSError(f"no network for {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return tmp_path


def test_missing_weights_error_message(offline_hub):
    expected = offline_hub / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert weights_path("resnet18") == expected
    with pytest.raises(RuntimeError) as info:
        build_model("deeplabv3plus", K, backbone="resnet18", weights="imagenet")
    msg = str(info.value)
    assert "resnet18-f37072fd.pth" in msg and str(expected) in msg
    assert "torch.hub.get_dir()/checkpoints" in msg and "download" in msg
    assert torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url in msg


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv2"])
def test_cached_weights_are_loaded(offline_hub, backbone):
    ref = getattr(torchvision.models, backbone.replace("v2", "_v2"))(weights=None)
    path = weights_path(backbone)
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    net = build_backbone(backbone, 16, weights="imagenet")
    if backbone == "mobilenetv2":
        torch.testing.assert_close(net.c1[0][0].weight, ref.features[0][0].weight)
        torch.testing.assert_close(net.c4[-1].conv[-1].weight, ref.features[17].conv[-1].weight)
    else:
        torch.testing.assert_close(net.stem[0].weight, ref.conv1.weight)
        torch.testing.assert_close(net.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_unknown_names_raise():
    with pytest.raises(ValueError) as info:
        build_model("segformer", K)
    assert all(n in str(info.value) for n in ("deeplabv2", "deeplabv3plus", "upernet"))
    assert "small" in MODEL_NAMES
    with pytest.raises(ValueError, match="resnet101"):
        build_model("deeplabv2", K, backbone="vgg16")
    assert set(BACKBONES) >= {"resnet18", "resnet34", "resnet50", "resnet101", "mobilenetv2"}
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("resnet18", 4)
    with pytest.raises(ValueError, match="weights"):
        build_backbone("resnet18", 16, weights="coco")


def test_small_cpu_model_shapes_and_width():
    from scribbleseg.models.build import build_model

    m = build_model("small", 11, width=8)
    out = m(torch.randn(2, 3, 64, 48))
    assert m.output_stride == 4 and m.feature_dim == 24
    assert out["features"].shape == (2, 24, 16, 12) and out["logits"].shape == (2, 11, 16, 12)
    out["logits"].sum().backward()
    assert m.stem[0].weight.grad is not None and m.stem[0].weight.grad.abs().sum() > 0
