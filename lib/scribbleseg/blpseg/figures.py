"""Figures of BLPSeg (Wang et al., IEEE TIP 2023): Fig. 2 / 5 (annotation probability maps and the
difference map), Fig. 8 (annotation probability, segmentation probability and BLP loss map) and the
interactive gamma / sigma view. Inputs are numpy arrays: images (N, H, W, 3) uint8, label maps (N, H, W)
with 255 = unlabelled, probability maps (N, K, H, W). Every function returns a matplotlib Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from scribbleseg.lab import plots
from scribbleseg.blpseg.analysis import difference_map


def annotation_maps(images, scribbles, masks, p_scrib):
    """Fig. 2 / 5, one row per image: image | (a) scribble | (b) annotation probability max_c p_scrib |
    (c) mask | (d) difference map (c) - (b)."""
    rows = [[img, plots.overlay(img, s, 0.9), plots.heat(ps.max(0)), plots.colorize(m),
             plots.heat(difference_map(ps, m))] for img, s, m, ps in zip(images, scribbles, masks, p_scrib)]
    return plots.grid(rows, ["image", "(a) scribble", "(b) annotation prob.", "(c) mask", "(d) difference"])


def loss_map_rows(images, scribbles, p_scrib, p_seg, loss, vmax: float | None = None):
    """Fig. 8, one row per image: (a) image and scribble | (b) max_c p_scrib | (c) max_c p_seg |
    (d) BLP loss map (scaled to ``vmax``, default its 99th percentile over the images)."""
    vmax = float(np.percentile(loss, 99)) if vmax is None else vmax
    rows = [[plots.overlay(img, s, 0.9), plots.heat(ps.max(0)), plots.heat(pg.max(0)), plots.heat(lo, 0, vmax)]
            for img, s, ps, pg, lo in zip(images, scribbles, p_scrib, p_seg, loss)]
    return plots.grid(rows, ["(a) image + scribble", "(b) p_scrib", "(c) p_seg", f"(d) BLP loss (0-{vmax:.2f})"])


def weight_and_kernel(image, weight, kernel, target, gamma: float, sigma: float, stride: int = 4):
    """The interactive view: the BLP weight (1 - p_scrib p_seg)^gamma over the image (Eq. 11) and the LAM
    column A_{:, j} (Eq. 4) for the target cell ``target`` (row, col on the stride-``stride`` grid)."""
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 2.9))
    axes[0].imshow(image)
    axes[0].plot(target[1] * stride + stride / 2, target[0] * stride + stride / 2, "w+", ms=12, mew=2)
    axes[0].set_title("image, target cell j", fontsize=9)
    im = axes[1].imshow(weight, cmap="jet", vmin=0, vmax=1)
    axes[1].set_title(f"BLP weight, gamma = {gamma:g}", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    im = axes[2].imshow(kernel, cmap="magma")
    axes[2].plot(target[1], target[0], "c+", ms=10, mew=2)
    axes[2].set_title(f"LAM column A[:, j], sigma = {sigma:g} cells", fontsize=9)
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig
