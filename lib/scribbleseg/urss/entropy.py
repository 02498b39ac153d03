"""Entropy minimisation of URSS (Pan et al., ICCV 2021), Sec. 3.1, Eq. (2)-(3).

    E_Omega     = -1/|Omega|     sum_{(i,j) in Omega}     sum_c s_{i,j,c} log s_{i,j,c}      (2)
    E_{Omega-B} = -1/|Omega - B| sum_{(i,j) in Omega - B} sum_c s_{i,j,c} log s_{i,j,c}      (3)

s = softmax of the logits; B = pseudo-boundaries (:mod:`scribbleseg.urss.boundaries`). Omega is every
position of the prediction, scribbled or not. The paper computes s on the network's output grid (the
"neural representation", 59 x 59 for a 465 x 465 crop); :func:`boundary_to_grid` brings B there: a cell
is a boundary when at least ``threshold`` of its pixels are (0.5: the excluded fraction of the grid stays
close to that of the pixels; "any pixel" would exclude about half of a 32 x 32 grid at 64 superpixels).

Released code: the soft entropy on the logits upsampled to full resolution, masked by the pseudo-boundary
only (weight 1 - B): call :func:`soft_entropy` on full-resolution logits. Ours, an option: ``scribble``
keeps the scribbled pixels (weight 1) even on a boundary; neither released training script does this.
Both keep the mean of Eq. (3) (the sum over kept positions / their number).

Shapes: logits (N, K, H, W); boundary (N, H, W) bool (True = in B); scribble (N, H, W) long with
IGNORE_INDEX. Returns scalars, 0 (not NaN) when no position is kept.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.losses import check_labels, masked_mean
from scribbleseg.losses import entropy_map  # noqa: F401  (also Fig. 3's per-position entropy)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Eq. (2): mean entropy over every position of every image."""
    return entropy_map(logits).mean()                                         # (2)


def soft_entropy(logits: torch.Tensor, boundary: torch.Tensor, scribble: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (3): mean entropy over the positions outside the pseudo-boundaries B.

    Args:
        logits: (N, K, H, W). boundary: (N, H, W) bool, same size as logits.
        scribble: if given (ours, not the released code's), labelled positions are kept even on a boundary;
            values in [0, K) or IGNORE_INDEX, else ValueError (:func:`scribbleseg.losses.check_labels`).
    """
    keep = ~boundary                                                          # Omega - B
    if scribble is not None:
        check_labels(scribble, logits.shape[1], "scribble")
        keep = keep | (scribble != IGNORE_INDEX)
    return masked_mean(entropy_map(logits), keep)                             # (3)


def boundary_to_grid(boundary: torch.Tensor, size: tuple[int, int], threshold: float = 0.5) -> torch.Tensor:
    """Pseudo-boundaries (N, H, W) -> (N, h, w) on the logits grid: cells whose boundary fraction >= threshold."""
    if tuple(boundary.shape[-2:]) == tuple(size):
        return boundary
    frac = F.adaptive_avg_pool2d(boundary.float()[:, None], size)[:, 0]      # (N, h, w) fraction of B
    return frac >= threshold
