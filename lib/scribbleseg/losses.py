"""The losses every paper uses (core: the paper folders build on these, never on each other).

- :func:`partial_cross_entropy`: cross-entropy on labelled pixels only (the scribble baseline of every paper),

      L_pCE = -1/|Omega_L| sum_{i in Omega_L} log p_i(y_i),   Omega_L = {i : y_i != IGNORE_INDEX}

  with a full mask as target the ordinary cross-entropy (full supervision); with ``label_smoothing`` the
  label-smoothed cross-entropy (CDSP's L_segc);
- :func:`entropy_map`: the per-position entropy H(p) = -sum_c p_c log p_c of softmax(logits) (URSS Eq. 2-3,
  CDSP Eq. 15, 17, Potts' analysis);
- :func:`masked_mean`: the mean over the positions of a mask, 0 (not NaN) when the mask is empty.

Shapes: logits (N, K, H, W); target (N, H, W) long with IGNORE_INDEX; maps and masks (N, H, W).
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


def entropy_map(logits: torch.Tensor) -> torch.Tensor:
    """H(p) = -sum_c p_c log p_c per position of p = softmax(logits) over dim 1: (N, K, H, W) -> (N, H, W).

    From log_softmax (stable as p -> 0), in float32 at least (float16 logits under AMP are upcast)."""
    logp = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), 1)
    return -(logp.exp() * logp).sum(1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` (bool or 0/1, same shape) is set; 0 when none."""
    return (values * mask).sum() / mask.sum().clamp(min=1)
