"""Scribble labels on a coarser grid (the stride of a network's logits), shared by the methods that
compute terms there (Potts' pseudo-labels, BLPSeg's LAM source regions).

Shapes: labels (N, H, W) long with IGNORE_INDEX; returns (N, h, w).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scribbleseg.constants import IGNORE_INDEX


def labels_to_grid(labels: torch.Tensor, size: tuple[int, int], num_classes: int) -> torch.Tensor:
    """Scribble labels (N, H, W) -> (N, h, w) on a coarser grid: a cell is seeded when it holds a labelled
    pixel, with the class most of its labelled pixels carry (ties: the lower class index)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    valid = labels != IGNORE_INDEX
    onehot = F.one_hot(labels.masked_fill(~valid, 0), num_classes).permute(0, 3, 1, 2).float()  # (N, K, H, W)
    counts = F.adaptive_avg_pool2d(onehot * valid[:, None], size)                              # (N, K, h, w)
    best = counts.argmax(1)                                                                     # (N, h, w)
    return best.masked_fill(counts.sum(1) == 0, IGNORE_INDEX)


def onehot_on_grid(labels: torch.Tensor, size: tuple[int, int], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(one-hot (N, K, h, w) of :func:`labels_to_grid`, zero on the unlabelled cells; the labelled cells (N, h, w)
    bool)."""
    seeds = labels_to_grid(labels, size, num_classes)                                           # (N, h, w)
    seeded = seeds != IGNORE_INDEX
    onehot = F.one_hot(seeds.masked_fill(~seeded, 0), num_classes).permute(0, 3, 1, 2).float()  # (N, K, h, w)
    return onehot * seeded[:, None], seeded
