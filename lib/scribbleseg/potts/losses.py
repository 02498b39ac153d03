"""Network-side terms of the weakly supervised loss (4) and the self-labeling loss (6)
(Potts relaxations and soft self-labeling, CVPR 2025).

    (4)  L_ws(sigma)   = -sum_{i in S} ln sigma_i^{ybar_i} + eta sum_{i not in S} H(sigma_i) + lambda sum_{ij in N} w_ij P(sigma_i, sigma_j)
    (6)  L_self(sigma, y) = -sum_{i in S} ln sigma_i^{ybar_i} + eta sum_{i not in S} H(sigma_i, y_i) + lambda sum_{ij in N} w_ij P(y_i, y_j)

The paper writes sums; for network training we use means so that the weights do not depend on the
image size: the seed term is partial cross-entropy (mean over labelled pixels,
:func:`scribbleseg.losses.partial_cross_entropy`), the unary terms below are means over the
unlabelled cells of the logits grid, and the Potts term is the per-image pairwise sum divided by the
number of grid cells, averaged over the batch. (The pseudo-label solver keeps the sums of (6).)

Shapes: sigma, y (N, K, h, w); unlabelled (N, h, w) bool; affinity (N, 2, h, w) grid or (N, M, M) dense.
Every function returns a scalar, exactly 0 (not NaN) when no cell is unlabelled.
"""
from __future__ import annotations

import torch

from scribbleseg.losses import masked_mean
from scribbleseg.potts.soft_cross_entropy import soft_cross_entropy
from scribbleseg.potts.solver import pairwise


def entropy_term(sigma: torch.Tensor, unlabelled: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy H(sigma_i) = -sum_k sigma_i^k ln sigma_i^k over unlabelled cells (4)."""
    return masked_mean(soft_cross_entropy(sigma, sigma, "CE"), unlabelled)  # H(sigma) = H_CE(sigma, sigma), with EPS


def self_labeling_term(sigma: torch.Tensor, y: torch.Tensor, unlabelled: torch.Tensor, cross_entropy: str,
                       log_sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of H(sigma_i, y_i) over unlabelled cells, the unary term of (6) for the network (y fixed)."""
    return masked_mean(soft_cross_entropy(sigma, y.detach(), cross_entropy, log_sigma=log_sigma), unlabelled)


def potts_term(sigma: torch.Tensor, affinity: torch.Tensor, relaxation: str) -> torch.Tensor:
    """sum_{ij in N} w_ij P(sigma_i, sigma_j) / (h w), averaged over the batch: the Potts term of (4).

    With relaxation "BL" and the dense bilateral neighbourhood this is the DenseCRF loss of Tang et al.
    (ECCV 2018), sum_k S_k^T W (1 - S_k), up to the normalisation; with "BL" or "Q" on the grid it is
    a grid Potts (GridCRF) loss.
    """
    cells = sigma.shape[-2] * sigma.shape[-1]
    return (pairwise(sigma, affinity, relaxation) / cells).mean()
