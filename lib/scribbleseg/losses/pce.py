"""Partial cross-entropy: cross-entropy on labelled pixels only (the scribble baseline of every paper).

    L_pCE = -1/|Omega_L| sum_{i in Omega_L} log p_i(y_i),   Omega_L = {i : y_i != IGNORE_INDEX}

With a full mask as target this is the ordinary cross-entropy (full supervision).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scribbleseg.constants import IGNORE_INDEX


def partial_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                          label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels.

    Args:
        logits: (N, K, H, W) unnormalised scores.
        target: (N, H, W) long, class index or IGNORE_INDEX.
        label_smoothing: epsilon of label smoothing (0 = none).

    Returns:
        Scalar tensor; exactly zero (with a gradient path) when no pixel is labelled, never NaN.
    """
    if logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in size")
    total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum",
                            label_smoothing=label_smoothing)
    n = (target != IGNORE_INDEX).sum()
    return total / n.clamp(min=1)  # mean over labelled pixels; 0 / 1 = 0 when none
