"""UperNet: a pyramid pooling module (PPM) on the last stage plus an FPN over the four stages.

Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018; the PPM is from
PSPNet (Zhao et al., CVPR 2017) and the FPN from Lin et al., CVPR 2017. Used by BLPSeg.

Maps (N, 3, H, W) images to ``{"features": (N, D, H/4, W/4), "logits": (N, K, H/4, W/4)}``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scribbleseg.models.backbones import build_backbone
from scribbleseg.models.base import SegmentationModel


def _conv_bn_relu(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PPM(nn.Module):
    """Pyramid pooling: (N, C, h, w) -> (N, channels, h, w).

    Average-pools to each scale s (s x s bins), projects to ``channels`` with a 1x1 conv, upsamples
    back, concatenates with the input and fuses with a 3x3 conv. The 1x1 (global) branch has no
    BatchNorm (1x1 conv with bias + ReLU) so that training works with batch size 1.

    Args:
        in_channels: C.
        channels: width of each branch and of the output.
        scales: bin counts (1, 2, 3, 6 in PSPNet / UperNet).
    """

    def __init__(self, in_channels: int, channels: int = 512, scales: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.branches = nn.ModuleList()
        for s in scales:
            if s == 1:
                proj = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
            else:
                proj = _conv_bn_relu(in_channels, channels)
            self.branches.append(nn.Sequential(nn.AdaptiveAvgPool2d(s), proj))
        self.bottleneck = _conv_bn_relu(in_channels + len(scales) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x] + [_resize(b(x), x.shape[-2:]) for b in self.branches]  # each (N, *, h, w)
        return self.bottleneck(torch.cat(outs, dim=1))  # (N, channels, h, w)


class UperNet(SegmentationModel):
    """UperNet head on a multi-level backbone.

    The PPM output is the top FPN level; lateral 1x1 convs bring c1..c3 to D channels, a top-down
    pathway adds the upsampled coarser level, 3x3 convs smooth each level, then all four levels
    are upsampled to stride 4, concatenated and fused by a 3x3 conv into ``features`` (N, D, H/4,
    W/4). ``classifier`` is a 1x1 conv D -> K; logits are at stride 4.

    Args:
        num_classes: K.
        backbone: a name accepted by :func:`~scribbleseg.models.backbones.build_backbone`.
        output_stride: backbone stride, 32 in the paper (8 or 16 use dilation).
        weights: None or "imagenet" (backbone only).
        channels: head width D (512 in the paper).
        pool_scales: PPM bin counts.
        dropout: Dropout2d rate applied to the features before the classifier (0.1 in common
            implementations; only active in training mode).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        output_stride: int = 32,
        weights: str | None = None,
        channels: int = 512,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, output_stride, weights)
        ch = self.backbone.channels
        self.ppm = PPM(ch["c4"], channels, pool_scales)
        self.lateral = nn.ModuleList(_conv_bn_relu(ch[k], channels) for k in ("c1", "c2", "c3"))
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels, 3) for _ in range(3))
        self.fuse = _conv_bn_relu(4 * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.output_stride = 4
        self.feature_dim = channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        levels = [lat(feats[k]) for lat, k in zip(self.lateral, ("c1", "c2", "c3"))]  # (N, D, H/s, W/s)
        levels.append(self.ppm(feats["c4"]))  # (N, D, H/os, W/os)
        for i in (2, 1, 0):  # top-down pathway
            levels[i] = levels[i] + _resize(levels[i + 1], levels[i].shape[-2:])
        outs = [self.smooth[i](levels[i]) for i in range(3)] + [levels[3]]
        size = outs[0].shape[-2:]  # stride 4
        fused = self.fuse(torch.cat([_resize(o, size) for o in outs], dim=1))  # (N, D, H/4, W/4)
        return self.dropout(fused)
