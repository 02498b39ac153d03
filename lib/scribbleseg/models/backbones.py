"""Dilated torchvision backbones returning multi-level features.

ResNet-18/34/50/101 (He et al., CVPR 2016) and MobileNetV2 (Sandler et al., CVPR 2018), built from
torchvision's definitions with the last strides replaced by dilation ("atrous" convolution, as in
DeepLab, Chen et al., TPAMI 2018), so that the last stage lies at output stride 8, 16 or 32.
DeepLabV2 / URSS and DeepLabV3+ / CDSP / the Potts-loss paper use ResNet-101 or ResNet-50 or
MobileNetV2; UperNet / BLPSeg uses ResNet-50/101 at output stride 32.

A backbone maps an image batch (N, 3, H, W) to a dict of features:

- ``"c1"``..``"c4"``: the four stages, at strides 4, 8, min(16, os), os (os = output stride);
- ``"low"`` = ``"c1"`` (stride 4, the DeepLabV3+ low-level features), ``"out"`` = ``"c4"``.

Attributes: ``channels`` (dict key -> channel count), ``out_channels``, ``low_channels``,
``output_stride``.

Weights: ``weights=None`` (default) initialises from scratch; ``weights="imagenet"`` loads
torchvision's ImageNet-1k weights from the torch hub cache (``torch.hub.get_dir()/checkpoints``),
downloading them if possible, and otherwise raises a :class:`RuntimeError` that says how to place
the file by hand.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenetv2")


def _weights_enum(name: str) -> torchvision.models.WeightsEnum:
    """The torchvision ImageNet weights entry used for backbone ``name``."""
    m = torchvision.models
    match name:
        case "resnet18":
            return m.ResNet18_Weights.IMAGENET1K_V1
        case "resnet34":
            return m.ResNet34_Weights.IMAGENET1K_V1
        case "resnet50":
            return m.ResNet50_Weights.IMAGENET1K_V1
        case "resnet101":
            return m.ResNet101_Weights.IMAGENET1K_V1
        case "mobilenetv2":
            return m.MobileNet_V2_Weights.IMAGENET1K_V1
    raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")


def weights_path(name: str) -> Path:
    """Where torch looks for the ImageNet weights file of backbone ``name`` (may not exist)."""
    url = _weights_enum(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Load torchvision's ImageNet state dict for ``name`` from the hub cache, or download it.

    Raises:
        RuntimeError: if the file is not cached and cannot be downloaded (e.g. no network).
    """
    url, path = _weights_enum(name).url, weights_path(name)
    try:  # reads the cached file if present, else downloads it into the cache
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
    except Exception as err:  # noqa: BLE001 - any download failure gets the same explanation
        raise RuntimeError(
            f"ImageNet weights for backbone {name!r} are missing: {path.name} is not in the torch "
            f"hub cache {path.parent} (torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it) "
            f"and downloading it failed ({type(err).__name__}: {err}). Place it by hand: on a "
            f"machine with internet, download {url} and copy it to {path}."
        ) from err


def _check(name: str, output_stride: int, weights: str | None) -> None:
    _weights_enum(name)  # validates the name
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', got {weights!r}")


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    """Make a 3x3 conv dilated by ``dilation``, keeping its output size ('same' padding)."""
    conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)


class ResNetBackbone(nn.Module):
    """Dilated ResNet-18/34/50/101: (N, 3, H, W) -> dict of c1..c4 features.

    Args:
        name: "resnet18", "resnet34", "resnet50" or "resnet101".
        output_stride: 8, 16 or 32; the stride of ``"c4"`` (layer3 is at min(16, output_stride)).
        weights: None (from scratch) or "imagenet".

    Channels of c1..c4: 64/128/256/512 (BasicBlock 18/34) or 256/512/1024/2048 (Bottleneck 50/101).
    """

    def __init__(self, name: str = "resnet50", output_stride: int = 16, weights: str | None = None):
        super().__init__()
        _check(name, output_stride, weights)
        if not name.startswith("resnet"):
            raise ValueError(f"{name!r} is not a ResNet")
        bottleneck = name in ("resnet50", "resnet101")
        dilate = [False, output_stride <= 8, output_stride <= 16]  # for layer2, layer3, layer4
        kwargs = {"replace_stride_with_dilation": dilate} if bottleneck else {}
        net = getattr(torchvision.models, name)(weights=None, **kwargs)
        if weights == "imagenet":
            net.load_state_dict(imagenet_state_dict(name))
        if not bottleneck:  # torchvision refuses dilation for BasicBlock: set it by hand
            dilation = 1
            for layer, d in ((net.layer3, dilate[1]), (net.layer4, dilate[2])):
                if not d:
                    continue
                previous, dilation = dilation, dilation * 2
                first = layer[0]
                first.stride = 1
                first.conv1.stride = (1, 1)
                first.downsample[0].stride = (1, 1)
                _set_dilation(first.conv1, previous)  # like torchvision: first conv keeps the old rate
                _set_dilation(first.conv2, dilation)
                for block in layer[1:]:
                    _set_dilation(block.conv1, dilation)
                    _set_dilation(block.conv2, dilation)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        c = [64, 128, 256, 512] if not bottleneck else [256, 512, 1024, 2048]
        self.channels = {"c1": c[0], "c2": c[1], "c3": c[2], "c4": c[3], "low": c[0], "out": c[3]}
        self.low_channels, self.out_channels = c[0], c[3]
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c1 = self.layer1(self.stem(x))  # (N, C1, H/4, W/4)
        c2 = self.layer2(c1)  # (N, C2, H/8, W/8)
        c3 = self.layer3(c2)  # (N, C3, H/min(16, os), ...)
        c4 = self.layer4(c3)  # (N, C4, H/os, W/os)
        return {"c1": c1, "c2": c2, "c3": c3, "c4": c4, "low": c1, "out": c4}


class MobileNetV2Backbone(nn.Module):
    """Dilated MobileNetV2: (N, 3, H, W) -> dict of c1..c4 features.

    Stages (torchvision ``features`` indices): c1 = [0:4] (24 ch, stride 4), c2 = [4:7] (32 ch,
    stride 8), c3 = [7:14] (96 ch, stride min(16, os)), c4 = [14:18] (320 ch, stride os). The final
    1x1 conv to 1280 channels (index 18, the classification neck) is dropped, as in DeepLabV3+.

    Args:
        output_stride: 8, 16 or 32.
        weights: None (from scratch) or "imagenet".
    """

    def __init__(self, output_stride: int = 16, weights: str | None = None):
        super().__init__()
        _check("mobilenetv2", output_stride, weights)
        net = torchvision.models.mobilenet_v2(weights=None)
        if weights == "imagenet":
            net.load_state_dict(imagenet_state_dict("mobilenetv2"))
        feats = net.features
        stride, dilation = 2, 1  # after the stem conv features[0]
        for block in feats[1:18]:  # InvertedResidual blocks
            dw = next(m for m in block.conv.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)
            if dw.stride == (2, 2):
                if stride >= output_stride:  # replace the stride by dilation
                    dw.stride, block.stride = (1, 1), 1
                    _set_dilation(dw, dilation)  # this block keeps the old rate
                    dilation *= 2
                    continue
                stride *= 2
            _set_dilation(dw, dilation)
        self.c1, self.c2, self.c3, self.c4 = feats[0:4], feats[4:7], feats[7:14], feats[14:18]
        self.channels = {"c1": 24, "c2": 32, "c3": 96, "c4": 320, "low": 24, "out": 320}
        self.low_channels, self.out_channels = 24, 320
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c1 = self.c1(x)  # (N, 24, H/4, W/4)
        c2 = self.c2(c1)  # (N, 32, H/8, W/8)
        c3 = self.c3(c2)  # (N, 96, H/min(16, os), ...)
        c4 = self.c4(c3)  # (N, 320, H/os, W/os)
        return {"c1": c1, "c2": c2, "c3": c3, "c4": c4, "low": c1, "out": c4}


def build_backbone(
    name: str = "resnet50", output_stride: int = 16, weights: str | None = None
) -> ResNetBackbone | MobileNetV2Backbone:
    """Build backbone ``name`` (one of :data:`BACKBONES`) at ``output_stride`` with ``weights``."""
    if name == "mobilenetv2":
        return MobileNetV2Backbone(output_stride, weights)
    if name in BACKBONES:
        return ResNetBackbone(name, output_stride, weights)
    raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")
