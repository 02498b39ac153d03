"""The one interface every segmentation model in scribbleseg follows.

A model maps an image batch (N, 3, H, W) to a dict:

- ``"features"``: (N, D, h, w), the decoder features right before the classifier
  (methods such as URSS's random walk or CDSP's LoRM act on them);
- ``"logits"``: (N, K, h, w) = ``model.classifier(features)``, at the model's output stride.

Losses upsample ``logits`` to the label size with :func:`upsample`. Methods that insert a module
between features and classifier call ``model.features(x)`` and ``model.classifier`` themselves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationModel(nn.Module):
    """Base class: subclasses implement ``features`` and set ``self.classifier`` and ``output_stride``."""

    output_stride: int = 1
    classifier: nn.Module

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, D, h, w)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)  # (N, D, h, w)
        return {"features": f, "logits": self.classifier(f)}  # logits: (N, K, h, w)


def upsample(logits: torch.Tensor, size: tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear upsampling of (N, K, h, w) logits to (N, K, *size). ``align_corners=False`` (ours, everywhere
    by default); the released URSS and CDSP training loops use True (an option of their methods)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)
