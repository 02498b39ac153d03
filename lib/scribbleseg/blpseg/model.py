"""The BLPSeg network (Wang et al., IEEE TIP 2023), Fig. 4 and Sec. IV-B: a segmentation backbone-decoder
with two heads and the LAM.

- scribble head: two "1x1 conv + BN + ReLU" layers and a 1x1 classifier to K+1 classes (Eq. 1-2); the BN is
  ours (the released heads have none: ``head_batchnorm=False``);
- segmentation head: the same structure to K classes, followed by the LAM (Eq. 8: after the classifier);
- low-level features f for the LAM: a 4x4 stride-4 convolution + LayerNorm on the input image.

The wrapped model's own classifier is not used. Output dict: "features" (decoder features),
"logits_raw" (segmentation head, before LAM), "logits" (after LAM: the prediction, also at test time),
"scrib_logits" (N, K+1, h, w). Shapes: image (N, 3, H, W) -> maps (N, ., h, w) at the decoder's stride.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scribbleseg.models.base import SegmentationModel
from scribbleseg.blpseg.lam import LAM, LowLevelFeatures


def _head(in_dim: int, hidden: int, out_dim: int, batchnorm: bool = True) -> nn.Sequential:
    """Two 1x1 "conv (+ BN) + ReLU" layers and a 1x1 classifier."""
    layers = []
    for d in (in_dim, hidden):
        norm = [nn.BatchNorm2d(hidden)] if batchnorm else []
        layers += [nn.Conv2d(d, hidden, 1, bias=False), *norm, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Conv2d(hidden, out_dim, 1))


class BLPSegNet(SegmentationModel):
    """BLPSeg around ``base`` (any :class:`SegmentationModel`).

    Args:
        base: backbone + decoder; its ``features`` feed both heads.
        num_classes: K. hidden: width of the heads. lam: a :class:`LAM` or None (baseline without LAM).
        low_dim: channels of the low-level features. detach_scribble_features: the released code's scribble
            head reads detached decoder features (it never trains the backbone); the paper's does not.
        low_projection: a 1x1 convolution after the LayerNorm of the low-level features (released code).
        head_batchnorm: BatchNorm in both heads (ours); False = the released heads (conv + ReLU only).
    """

    def __init__(self, base: SegmentationModel, num_classes: int, feat_dim: int, hidden: int = 64,
                 lam: LAM | None = None, low_dim: int = 32, detach_scribble_features: bool = False,
                 low_projection: bool = False, head_batchnorm: bool = True):
        super().__init__()
        self.base, self.lam, self.detach_scribble_features = base, lam, detach_scribble_features
        self.output_stride = base.output_stride
        self.seg_head = _head(feat_dim, hidden, num_classes, head_batchnorm)
        self.scrib_head = _head(feat_dim, hidden, num_classes + 1, head_batchnorm)
        self.low = LowLevelFeatures(low_dim, stride=4, project=low_projection) if lam is not None else None
        self.classifier = self.seg_head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.features(x)

    def forward(self, x: torch.Tensor, source_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        f = self.base.features(x)                                          # (N, D, h, w)
        z = self.seg_head(f)                                               # (N, K, h, w)
        s = self.scrib_head(f.detach() if self.detach_scribble_features else f)  # (N, K+1, h, w)
        out = {"features": f, "logits_raw": z, "scrib_logits": s, "logits": z}
        if self.lam is not None:
            low = self.low(x)                                              # (N, D_low, H/4, W/4)
            if low.shape[-2:] != z.shape[-2:]:
                low = F.adaptive_avg_pool2d(low, z.shape[-2:])
            out["logits"] = self.lam(z, low, f, source_mask)               # (8): LAM after the classifier
        return out
