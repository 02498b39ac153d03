"""A small, fast segmentation net for the ``cpu`` profile (hand-written: no torchvision model is
small enough to train to convergence on 2 CPU cores in minutes).

Shape: an encoder down to stride 16 (dilated convs and image-level pooling there), and a decoder
that fuses stride 16 with stride 8, then with the stride-4 low-level features (DeepLabV3+-like, shrunk).

Args:
    num_classes: K.
    width: channel multiplier base (16 -> about 0.9 M parameters).

Shapes: input (N, 3, H, W) -> features (N, 3*width, H/4, W/4) -> logits (N, K, H/4, W/4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scribbleseg.models.base import SegmentationModel


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1, k: int = 3) -> nn.Sequential:
    """k x k conv (no bias) + BatchNorm + ReLU, padding keeps the size (divided by stride)."""
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallSegNet(SegmentationModel):
    output_stride = 4

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        w = width
        self.stem = conv_bn(3, w, 2)  # stride 2
        self.low = nn.Sequential(conv_bn(w, 2 * w, 2), conv_bn(2 * w, 2 * w))  # stride 4
        self.mid = nn.Sequential(conv_bn(2 * w, 4 * w, 2), conv_bn(4 * w, 4 * w))  # stride 8
        self.deep = nn.Sequential(conv_bn(4 * w, 8 * w, 2), conv_bn(8 * w, 8 * w),  # stride 16
                                  conv_bn(8 * w, 8 * w, dilation=2), conv_bn(8 * w, 8 * w, dilation=4))
        self.pool_proj = nn.Sequential(nn.Conv2d(8 * w, 8 * w, 1), nn.ReLU(inplace=True))
        self.proj = conv_bn(8 * w + 4 * w, 4 * w, k=1)
        self.fuse = nn.Sequential(conv_bn(6 * w, 3 * w, k=1), conv_bn(3 * w, 3 * w))
        self.feature_dim = 3 * w
        self.classifier = nn.Conv2d(3 * w, num_classes, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        low = self.low(self.stem(x))  # (N, 2w, H/4, W/4)
        mid = self.mid(low)  # (N, 4w, H/8, W/8)
        c = self.deep(mid)  # (N, 8w, H/16, W/16)
        c = c + self.pool_proj(c.mean(dim=(2, 3), keepdim=True))  # image-level context, broadcast
        c = F.interpolate(c, size=mid.shape[-2:], mode="bilinear", align_corners=False)
        c = self.proj(torch.cat([c, mid], dim=1))  # (N, 4w, H/8, W/8)
        c = F.interpolate(c, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([low, c], dim=1))  # (N, 3w, H/4, W/4)
