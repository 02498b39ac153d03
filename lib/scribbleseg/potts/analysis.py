"""Diagnostics of soft pseudo-labels (Potts relaxations and soft self-labeling, CVPR 2025, Sec. 3.1 and Fig. 7):
"the logarithm does not like abrupt change across the boundaries, so the transition across the boundaries is
smoother ... it is reasonable to have higher uncertainty around the boundaries."

Shapes: y (N, K, h, w) soft labels on a grid; masks (N, H, W) ground truth (IGNORE_INDEX = void).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.segmentation import find_boundaries

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.losses import entropy_map
from scribbleseg.metrics import confusion_matrix, miou


def soft_label_entropy(y: torch.Tensor) -> torch.Tensor:
    """Shannon entropy -sum_k y^k ln y^k per position of soft labels y (N, K, h, w), (N, h, w): the core
    :func:`~scribbleseg.losses.entropy_map` of log y (y sums to 1, so its log-softmax is log y)."""
    return entropy_map(y.clamp_min(1e-12).log())


def boundary_band(masks: np.ndarray, size: tuple[int, int], band: float) -> np.ndarray:
    """(N, h, w) bool: grid cells within ``band`` cells of a ground-truth class boundary.

    The masks are reduced to the grid by nearest sampling at cell centres; distances come from
    ``scipy.ndimage.distance_transform_edt`` to the boundary pixels of ``skimage.segmentation.find_boundaries``.
    """
    n, h, w = masks.shape
    rows = ((np.arange(size[0]) + 0.5) * h / size[0]).astype(int)
    cols = ((np.arange(size[1]) + 0.5) * w / size[1]).astype(int)
    out = np.zeros((n, *size), dtype=bool)
    for i in range(n):
        grid = masks[i][np.ix_(rows, cols)]
        edges = find_boundaries(grid, mode="thick") & (grid != IGNORE_INDEX)
        out[i] = ndimage.distance_transform_edt(~edges) <= band if edges.any() else False
    return out


def boundary_entropy(y: torch.Tensor, masks: np.ndarray, band: float = 1.0) -> dict[str, float]:
    """Mean entropy of y near ground-truth boundaries (within ``band`` cells) and away from them.

    Returns:
        {"near": mean entropy in the band, "far": outside it, "ratio": near / far}.
    """
    ent = soft_label_entropy(y).cpu().numpy()
    near = boundary_band(masks, tuple(y.shape[-2:]), band)
    a, b = float(ent[near].mean()) if near.any() else 0.0, float(ent[~near].mean()) if (~near).any() else 0.0
    return {"near": a, "far": b, "ratio": a / b if b > 0 else float("inf")}


def pseudo_label_miou(y: torch.Tensor, masks: np.ndarray, num_classes: int) -> float:
    """mIoU (%) of argmax y, upsampled (nearest) to the masks' size, against the masks."""

    pred = F.interpolate(y.float(), size=masks.shape[-2:], mode="nearest").argmax(1).numpy()
    return float(miou(confusion_matrix(pred, masks, num_classes)))
