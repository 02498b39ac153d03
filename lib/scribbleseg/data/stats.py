"""Statistics of a split: labelled fraction, strokes, and BLPSeg's Fig. 1 distance distributions.

BLPSeg (TIP 2023) Fig. 1 / Eq. (13)-(14): for every labelled pixel, its distance to the nearest
boundary of its class region, normalised by the maximum such distance of that class in the image;
scribble pixels pile up at large relative distance (object interiors), mask pixels do not.
"""
from __future__ import annotations

import numpy as np

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.folder import SplitData
from scribbleseg.metrics import relative_boundary_distance, weighted_distance_histogram


def split_summary(data: SplitData) -> dict:
    """Images, size, foreground fraction, labelled fraction, strokes per image, objects per image."""
    objects = [len({s.instance for s in st if s.cls > 0}) for st in data.strokes]
    return {"images": len(data.ids), "size": list(data.images.shape[1:3]),
            "foreground_fraction": float((data.masks > 0).mean()),
            "labelled_fraction": data.labelled_fraction(),
            "strokes_per_image": float(np.mean([len(s) for s in data.strokes])),
            "objects_per_image": float(np.mean(objects))}


def relative_distance_histograms(data: SplitData, n: int | None = None, bins: int = 10,
                                 foreground_only: bool = True) -> tuple[dict, np.ndarray, dict]:
    """Fig. 1 on ``data``: P(X) of relative distances for scribble pixels and for mask pixels.

    Args:
        data: a split with masks and scribbles. n: use the first n images (None = all).
        bins: histogram bins on [0, 1]. foreground_only: count object classes only (background's
            distances are dominated by the image frame, not by an object's shape).

    Returns:
        ({"scribble": P, "mask": P}, bin edges (bins + 1,), {"scribble": mean X, "mask": mean X}).
    """
    d = {"scribble": [], "mask": []}
    for i in range(len(data.ids) if n is None else min(n, len(data.ids))):
        mask = data.masks[i]
        scrib = data.scribbles[i]
        if foreground_only:
            mask_lab = np.where(mask > 0, mask, IGNORE_INDEX).astype(np.uint8)
            scrib = np.where(scrib > 0, scrib, IGNORE_INDEX).astype(np.uint8)
        else:
            mask_lab = mask
        d["scribble"].append(relative_boundary_distance(mask, labelled=scrib, image_border_is_boundary=False))
        d["mask"].append(relative_boundary_distance(mask, labelled=mask_lab, image_border_is_boundary=False))
    hists, means, edges = {}, {}, None
    for k, v in d.items():
        v = np.concatenate(v)
        hists[k], edges = weighted_distance_histogram(v, None, bins)
        means[k] = float(v.mean())
    return hists, edges, means
