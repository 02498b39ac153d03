"""Distance maps of CDSP's distance entropy loss (Zhang et al., AAAI 2024), Eq. (14) and (16).

    d_c(i) = min_j floor( min(sqrt(e^lambda_c ||x_i - b_j||^2), 255) ) / 255,  b_j: pseudo-label boundary  (14)
    d_s(i) = 1 - min_j floor( min(sqrt(e^lambda_s ||x_i - s_j||^2), 255) ) / 255,  s_j: scribble pixels   (16)

d_c is 0 on the boundary of the pseudo-label's foreground and rises linearly (slope e^(lambda_c / 2)
per pixel) to 1 at 255 / e^(lambda_c / 2) pixels away: the boundary is unreliable. d_s is 1 on the
scribbles and falls to 0 at 255 / e^(lambda_s / 2) pixels: near a scribble is reliable. The floor and
the truncation at 255 are the paper's uint8 storage. Distances are Euclidean, in pixels of the label
map, from :func:`scipy.ndimage.distance_transform_edt` (its nearest-seed indices give the exact
integer squared distances, so the values match the brute-force minimum bit for bit).

Definitions chosen here: the foreground is every label other than 0 (background) and IGNORE_INDEX;
a boundary point is a foreground pixel with a 4-neighbour outside the foreground. With no boundary
(no foreground, or all foreground and the frame not a boundary) the minimum is over an empty set: d_c = 1 everywhere; with no
scribble pixel d_s = 0 everywhere.

lambda: the paper writes e^lambda in (14)/(16) and quotes lambda_s = 1, lambda_c = 6 (Table 2, grid
search) but "lambda_s = e^2, lambda_c = e^7" for Table 1; the authors' scripts take the multiplier
itself (``--lambd 7.389`` = e^2), and their released sample maps are reported to fit multipliers e and e^6. The arguments here
are the exponents (multiplier e^lambda): Table 2 is (1, 6); Table 1 reads as (2, 7) if "e^2" names the
multiplier. On smaller images the same relative reach needs lambda + 2 ln(scale).

Released-code options (default = paper): ``seeds="foreground"`` (``CDSP.scribble_seeds``) seeds d_s with the scribble
pixels of foreground classes only (background scribbles are not seeds); ``frame_is_boundary=True``
counts foreground pixels on the image frame as boundary (the scripts trace OpenCV contours, which run
along the frame where a region touches it).

Shapes: numpy maps (H, W); :func:`distance_maps` takes (N, H, W) long tensors and returns (N, H, W) float
(:meth:`scribbleseg.cdsp.method.CDSP.prepare_item` calls it on one transformed item, N = 1, in the
DataLoader's workers).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.memo import ContentMemo, content_key

_CROSS = ndimage.generate_binary_structure(2, 1)                                    # 4-neighbourhood

# The maps are k / 255 for integers k (the floor of (14) / (16)): stored as uint8 k, read back exactly.
MEMO = ContentMemo(encode=lambda d: np.round(d * 255).astype(np.uint8), decode=lambda k: k / 255.0)
"""Memo of :func:`distance_maps`, keyed on each label map's content and the settings (:mod:`scribbleseg.memo`):
an in-memory split's maps are computed the first time a batch brings them (mirrored samples once more), then
reused by every later step. ``MEMO.clear()`` frees it, ``MEMO.info()`` counts hits."""


def scaled_distance(seeds: np.ndarray, lam: float) -> np.ndarray:
    """(H, W) float64: floor(min(sqrt(e^lam d^2), 255)) / 255, d = distance to the nearest seed (1 if none)."""
    seeds = np.asarray(seeds, dtype=bool)
    if not seeds.any():
        return np.ones(seeds.shape)                                                 # min over no seed: 255
    _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)      # nearest seed of each pixel
    yy, xx = np.indices(seeds.shape)
    d2 = (yy - iy) ** 2 + (xx - ix) ** 2                                           # exact integer squared distance
    return np.floor(np.minimum(np.sqrt(math.exp(lam) * d2), 255.0)) / 255.0


def foreground_boundary(label: np.ndarray, frame_is_boundary: bool = False) -> np.ndarray:
    """(H, W) bool: foreground pixels (not 0, not IGNORE_INDEX) with a 4-neighbour outside the foreground."""
    fg = (label != 0) & (label != IGNORE_INDEX)
    inner = ndimage.binary_erosion(fg, _CROSS, border_value=0 if frame_is_boundary else 1)
    return fg & ~inner


def pseudo_label_distance(label: np.ndarray, lam: float = 6.0, frame_is_boundary: bool = False) -> np.ndarray:
    """d_c of Eq. (14), (H, W) in [0, 1]: 0 on the pseudo-label's foreground boundary."""
    return scaled_distance(foreground_boundary(label, frame_is_boundary), lam)      # (14)


def scribble_distance(scribble: np.ndarray, lam: float = 1.0, seeds: str = "all") -> np.ndarray:
    """d_s of Eq. (16), (H, W) in [0, 1]: 1 on the seeds. ``seeds``: "all" scribble pixels or "foreground" ones."""
    if seeds == "all":
        s = scribble != IGNORE_INDEX
    elif seeds == "foreground":                                                     # released code
        s = (scribble != IGNORE_INDEX) & (scribble != 0)
    else:
        raise ValueError(f"seeds must be 'all' or 'foreground', got {seeds!r}")
    return 1.0 - scaled_distance(s, lam)                                            # (16)


def distance_maps(scribble: torch.Tensor | None, pseudo: torch.Tensor | None, lambda_s: float = 1.0,
                  lambda_c: float = 6.0, seeds: str = "all", frame_is_boundary: bool = False, memo: bool = True):
    """(d_s, d_c), each (N, H, W) float32 on the labels' device (None where its labels are None), for a
    batch of scribbles and pseudo-labels (N, H, W) long.

    Computed from the batch's own (possibly flipped) labels; the EDT is flip-equivariant, so this equals
    flipping maps computed once on the stored labels. Each map is memoised on its label map's content
    (:data:`MEMO`; d_s stored as 1 - d_s, both as the uint8 numerator of the floor / 255, exact) unless
    ``memo=False`` (random crops, whose content never repeats: :meth:`~scribbleseg.cdsp.method.CDSP.prepare_item`).
    """
    def batched(labels, name, fn, post, *settings):
        if labels is None:
            return None
        maps = np.stack([post(MEMO.get(content_key(x, name, *settings), lambda x=x: fn(x)) if memo else fn(x))
                         for x in labels.cpu().numpy()])                        # float64, as computed
        return torch.as_tensor(maps, dtype=torch.float32, device=labels.device)

    same = lambda d: d  # noqa: E731
    return (batched(scribble, "1 - d_s", lambda s: 1.0 - scribble_distance(s, lambda_s, seeds), lambda d: 1.0 - d,
                    float(lambda_s), seeds),
            batched(pseudo, "d_c", lambda p: pseudo_label_distance(p, lambda_c, frame_is_boundary), same,
                    float(lambda_c), bool(frame_is_boundary)))
