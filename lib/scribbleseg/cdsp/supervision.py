"""Basic supervision of CDSP (Zhang et al., AAAI 2024), Eq. (7)-(9).

    L_seg  = L_segs + L_segc                                                                  (7)
    L_segs = 1/|Omega_s| sum_{i in Omega_s} c(y_i, p_i),  c(y, p) = -sum_k y_k log p_k          (8)
    L_segc = 1/|Omega~| sum_{i in Omega~} [(1 - eps) c(y~_i, p_i) + eps c(1/K, p_i)],  eps = 0.1  (9)

L_segs is partial cross-entropy on the scribbles; L_segc is label-smoothed cross-entropy (Mueller et al.
2019) on the pseudo-label: torch's ``label_smoothing=eps``, summed and divided by the labelled count (torch's
mean is NaN when no pixel is labelled). Pixels whose pseudo-label is IGNORE_INDEX do not count in |Omega~|.

Shapes: logits (N, K, H, W) at label size; scribble, pseudo (N, H, W) long with IGNORE_INDEX.
Both losses are scalars, mean over labelled pixels; no labelled pixel gives 0, never NaN. A label outside
[0, K) and not IGNORE_INDEX raises a ValueError (:func:`scribbleseg.losses.check_labels`, in partial_cross_entropy).
"""
from __future__ import annotations

import torch

from scribbleseg.losses import partial_cross_entropy


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Eq. (9): mean over labelled pixels of (1 - eps) c(y, p) + eps c(1/K, p)."""
    logits = logits if logits.dtype == torch.float64 else logits.float()      # float32 under AMP
    return partial_cross_entropy(logits, target, label_smoothing=epsilon)     # (9): sum over Omega~ / |Omega~|


def basic_supervision(logits: torch.Tensor, scribble: torch.Tensor, pseudo: torch.Tensor,
                      epsilon: float = 0.1) -> dict[str, torch.Tensor]:
    """Eq. (7): {"segs": L_segs (8), "segc": L_segc (9)}."""
    return {"segs": partial_cross_entropy(logits, scribble),                    # (8)
            "segc": smoothed_cross_entropy(logits, pseudo, epsilon)}           # (9)
