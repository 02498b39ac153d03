"""DeepLabV2 and DeepLabV3+ segmentation models.

- :class:`DeepLabV2` (Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional
  Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018), used by URSS (Pan et al.,
  "Scribble-Supervised Semantic Segmentation by Uncertainty Reduction on Neural Representation
  and Self-Supervision on Neural Eigenspace", ICCV 2021).
- :class:`DeepLabV3Plus` (Chen et al., "Encoder-Decoder with Atrous Separable Convolution for
  Semantic Image Segmentation", ECCV 2018), used by CDSP (AAAI 2024) and by "Potts relaxations and
  soft self-labeling" (CVPR 2025), as by the rloss line of work it builds on.

Both map (N, 3, H, W) images to ``{"features": (N, D, h, w), "logits": (N, K, h, w)}``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scribbleseg.models.backbones import build_backbone
from scribbleseg.models.base import SegmentationModel


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPPV2(nn.Module):
    """DeepLabV2 ASPP: the SUM of parallel 3x3 dilated conv classifiers, (N, D, h, w) -> (N, K, h, w).

    In DeepLabV2 each ASPP branch is itself a classifier (it outputs K channels, with bias) and the
    branch outputs are summed: there is no K-agnostic feature after the ASPP.

    Args:
        in_channels: D, backbone output channels.
        num_classes: K.
        rates: dilation rates of the branches (6, 12, 18, 24 in the paper, "ASPP-L").
    """

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] = (6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates
        )
        for conv in self.branches:  # as in the original Caffe model
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)  # (N, K, h, w)


class DeepLabV2(SegmentationModel):
    """DeepLabV2: dilated backbone + ASPP-sum classifier.

    ``features`` is the backbone's last stage (D = 2048 for ResNet-50/101) and ``classifier`` is the
    :class:`ASPPV2` module (not a 1x1 conv): in DeepLabV2 the ASPP branches are the classifiers, so
    the features right before the classification are the backbone features. Logits are at stride
    ``output_stride`` (8 in the paper).

    Args:
        num_classes: K.
        backbone: a name accepted by :func:`~scribbleseg.models.backbones.build_backbone`.
        output_stride: 8, 16 or 32.
        weights: None or "imagenet" (backbone only).
        rates: ASPP dilation rates.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet101",
        output_stride: int = 8,
        weights: str | None = None,
        rates: tuple[int, ...] = (6, 12, 18, 24),
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, output_stride, weights)
        self.classifier = ASPPV2(self.backbone.out_channels, num_classes, rates)
        self.output_stride = output_stride
        self.feature_dim = self.backbone.out_channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)["out"]  # (N, D, H/os, W/os)


class ASPPV3(nn.Module):
    """DeepLabV3 ASPP: 1x1 conv, three 3x3 dilated convs and image pooling, concatenated and projected.

    (N, C, h, w) -> (N, channels, h, w). The image-pooling branch has no BatchNorm (a 1x1 conv
    with bias + ReLU) so that training works with batch size 1, where BN over a 1x1 map is undefined.

    Args:
        in_channels: C.
        channels: output width (256 in the paper).
        rates: dilation rates of the 3x3 branches (6, 12, 18 at output stride 16).
        dropout: dropout after the projection.
    """

    def __init__(self, in_channels: int, channels: int = 256, rates=(6, 12, 18), dropout: float = 0.1):
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, channels)]
            + [_conv_bn_relu(in_channels, channels, 3, r) for r in rates]
        )
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True)
        )
        self.project = nn.Sequential(
            _conv_bn_relu((len(rates) + 2) * channels, channels), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]  # each (N, channels, h, w)
        pooled = self.pool(x)  # (N, channels, 1, 1)
        outs.append(pooled.expand(-1, -1, *x.shape[-2:]))  # (N, channels, h, w)
        return self.project(torch.cat(outs, dim=1))  # (N, channels, h, w)


class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+: dilated backbone + ASPP + decoder fusing stride-4 low-level features.

    ``features`` (D = 256) is the decoder output at stride 4 (two 3x3 convs over the upsampled ASPP
    output concatenated with 48-channel projected low-level features); ``classifier`` is a 1x1
    conv D -> K. Logits are at stride 4.

    Args:
        num_classes: K.
        backbone: a name accepted by :func:`~scribbleseg.models.backbones.build_backbone`.
        output_stride: 8, 16 or 32 (the encoder stride; ASPP rates scale as 16 / output_stride).
        weights: None or "imagenet" (backbone only).
        channels: ASPP and decoder width D.
        low_channels: projected low-level width.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        output_stride: int = 16,
        weights: str | None = None,
        channels: int = 256,
        low_channels: int = 48,
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, output_stride, weights)
        rates = tuple(r * 16 // output_stride for r in (6, 12, 18))  # (12, 24, 36) at OS 8
        self.aspp = ASPPV3(self.backbone.out_channels, channels, rates)
        self.low_proj = _conv_bn_relu(self.backbone.low_channels, low_channels)
        self.decoder = nn.Sequential(
            _conv_bn_relu(channels + low_channels, channels, 3),
            _conv_bn_relu(channels, channels, 3),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.output_stride = 4
        self.feature_dim = channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        low = self.low_proj(feats["low"])  # (N, 48, H/4, W/4)
        high = self.aspp(feats["out"])  # (N, D, H/os, W/os)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.decoder(torch.cat([high, low], dim=1))  # (N, D, H/4, W/4)
