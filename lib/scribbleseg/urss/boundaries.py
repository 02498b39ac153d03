"""Pseudo-boundaries of URSS (Pan et al., ICCV 2021), Sec. 3.1: the set B excluded from the soft entropy,
Eq. (3), taken from SLIC superpixels [1] (no learning): a pixel is a pseudo-boundary when it lies on the
border between two superpixels (``skimage.segmentation.find_boundaries``).

The paper gives no SLIC setting; ``n_segments`` and ``compactness`` are ours. Measured on the
embedded set (128 x 128, one core): SLIC + find_boundaries take about 10 ms per image (0.16-0.24 s
per batch of 16, against 0.25 s for a pCE training step of SmallSegNet; a 2,000-image split takes
about 20 s); with
n_segments = 64, 22 % of the pixels are boundaries, 25 % of the 32 x 32 grid cells at threshold 0.5.

Flips: in principle the boundaries of a flipped image are the flipped boundaries, but SLIC is not
mirror-equivariant (its seed grid and iterations are not symmetric): on 64 embedded-set images,
flip(B(x)) and B(flip(x)) agree on 84 % of the pixels, IoU of the boundary sets 0.45 (edges of
objects agree, superpixel borders in flat regions move). The training loop flips images per sample
without telling the method, so :class:`~scribbleseg.methods.urss.URSS`
recomputes them on ``batch["rgb"]`` (:func:`batch_boundaries`), which is exact for what the network
sees and also works for VOC crops; :func:`split_boundaries` precomputes a whole in-memory split (for
analysis and figures; flip a row with ``[:, ::-1]`` for a flipped image).

Shapes: image (H, W, 3) uint8 -> (H, W) bool; images (N, H, W, 3) -> (N, H, W); rgb (N, 3, H, W) 0-255.
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.segmentation import find_boundaries, slic


def pseudo_boundaries(image: np.ndarray, n_segments: int = 64, compactness: float = 10.0,
                      mode: str = "thick") -> np.ndarray:
    """B of Eq. (3) for one image: the borders of its SLIC superpixels, (H, W) bool.

    Args:
        image: (H, W, 3) uint8 colours. n_segments, compactness: SLIC's. mode: find_boundaries' mode
            ("thick": both sides of a border, 2 px wide; "inner": one side).
    """
    segments = slic(image, n_segments=n_segments, compactness=compactness, start_label=0)   # (H, W) ids
    return find_boundaries(segments, mode=mode)


def split_boundaries(images: np.ndarray, n_segments: int = 64, compactness: float = 10.0,
                     mode: str = "thick") -> np.ndarray:
    """Pseudo-boundaries of every image of an in-memory split, (N, H, W) bool (look up by batch["index"])."""
    return np.stack([pseudo_boundaries(im, n_segments, compactness, mode) for im in images])


def batch_boundaries(rgb: torch.Tensor, n_segments: int = 64, compactness: float = 10.0,
                     mode: str = "thick") -> torch.Tensor:
    """Pseudo-boundaries of a batch's colours rgb (N, 3, H, W) on 0-255, (N, H, W) bool on rgb's device."""
    images = rgb.detach().round().clamp(0, 255).to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    return torch.from_numpy(split_boundaries(images, n_segments, compactness, mode)).to(rgb.device)
