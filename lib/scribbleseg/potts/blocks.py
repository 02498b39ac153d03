"""Block-wise weak labels ("block scribbles"), the annotation of Table 6 of Potts relaxations and soft
self-labeling (CVPR 2025), which follows Tree Energy Loss (Liang et al., CVPR 2022): the full mask is
cut into square blocks and a random ``keep`` fraction of them (50% in the paper) stays labelled.

Shapes: mask (H, W) uint8/int with IGNORE_INDEX for void; returns (H, W) of the same dtype.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from scribbleseg.constants import IGNORE_INDEX


def block_labels(mask: np.ndarray, block: int, keep: float, rng: np.random.Generator) -> np.ndarray:
    """Labels of ``mask`` inside a random ``keep`` fraction of its ``block`` x ``block`` tiles, IGNORE_INDEX elsewhere.

    Args:
        mask: (H, W) full labels. block: tile side in pixels (edge tiles may be smaller).
        keep: fraction of tiles kept, in [0, 1]; exactly round(keep * number of tiles) are kept.
        rng: numpy Generator (the draw is reproducible from its seed).
    """
    if not 0 <= keep <= 1:
        raise ValueError(f"keep must be in [0, 1], got {keep}")
    if block < 1:
        raise ValueError(f"block must be a positive number of pixels, got {block}")
    h, w = mask.shape
    rows, cols = -(-h // block), -(-w // block)
    chosen = np.zeros(rows * cols, dtype=bool)
    chosen[rng.permutation(rows * cols)[:round(keep * rows * cols)]] = True
    tile = np.repeat(np.repeat(chosen.reshape(rows, cols), block, 0), block, 1)[:h, :w]  # (H, W)
    return np.where(tile, mask, IGNORE_INDEX).astype(mask.dtype)


def with_block_labels(split, block: int = 16, keep: float = 0.5, seed: int = 0):
    """A copy of a :class:`~scribbleseg.data.folder.SplitData` whose ``scribbles`` are block labels of its masks."""
    rng = np.random.default_rng([seed, 11])
    labels = np.stack([block_labels(m, block, keep, rng) for m in split.masks])
    return dataclasses.replace(split, scribbles=labels, strokes=[[] for _ in split.ids])
