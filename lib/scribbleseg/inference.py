"""Test-time inference: multi-scale and horizontal-flip averaging of softmax probabilities.

For every scale s the input is resized bilinearly to round(s * H) x round(s * W), the model is
run, its logits (at the model's output stride) are upsampled to (H, W) with
:func:`scribbleseg.models.base.upsample`, and a softmax over classes is taken. With ``flip=True``
the same is done on the horizontally mirrored input and the result is mirrored back. The final
prediction is the plain average of all these probability maps (the usual DeepLab-style MS+flip
evaluation).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scribbleseg.models.base import upsample


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out["logits"] if isinstance(out, dict) else out


def predict(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,),
            flip: bool = False) -> torch.Tensor:
    """Class probabilities averaged over scales (and flips).

    Runs under ``torch.no_grad()`` with the model in eval mode; the train/eval flag of every
    submodule is restored afterwards (also if the model raises).

    Args:
        model: a :class:`~scribbleseg.models.base.SegmentationModel` (returns a dict with
            ``"logits"`` (N, K, h, w)) or any module returning logits directly.
        images: (N, 3, H, W) float tensor on the model's device.
        scales: input resize factors, e.g. ``(0.5, 0.75, 1.0, 1.25, 1.5)``.
        flip: also average over the horizontally flipped input.

    Returns:
        (N, K, H, W) float tensor of probabilities summing to 1 over K.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if len(scales) == 0 or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive factors, got {scales}")
    size = tuple(images.shape[-2:])
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            total, count = None, 0
            for s in scales:
                hs, ws = max(1, round(size[0] * s)), max(1, round(size[1] * s))
                x = images if (hs, ws) == size else F.interpolate(
                    images, size=(hs, ws), mode="bilinear", align_corners=False)
                views = [(x, False), (x.flip(-1), True)] if flip else [(x, False)]
                for xv, flipped in views:
                    logits = upsample(_logits(model, xv), size)
                    if flipped:
                        logits = logits.flip(-1)
                    probs = logits.float().softmax(dim=1)
                    total = probs if total is None else total + probs
                    count += 1
            return total / count
    finally:
        for m, was_training in modes:
            m.training = was_training
