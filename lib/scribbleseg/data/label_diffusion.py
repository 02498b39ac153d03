"""Label diffusion, the baseline of BLPSeg's Table VI (Wang et al., IEEE TIP 2023, Sec. V-D-3): scribbles
are expanded over superpixels (as in ScribbleSup) before training, instead of (or besides) the LAM's
gradient diffusion. It is a scribble variant (``ScribbleVariant(superpixels=N)``, applied when a split is
loaded), so it lives in the core's data package, which may not import a paper folder.

Rule: SLIC superpixels of the image (``skimage.segmentation.slic``); a superpixel whose labelled pixels
all carry one class takes that class everywhere; a superpixel with conflicting classes keeps only its
scribble pixels; superpixels without a scribble stay unlabelled.

Shapes: image (H, W, 3) uint8; scribble (H, W) with IGNORE_INDEX; returns (H, W) of scribble's dtype.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from skimage.segmentation import slic

from scribbleseg.constants import IGNORE_INDEX


def expand_scribble(image: np.ndarray, scribble: np.ndarray, n_segments: int = 100, compactness: float = 10.0) -> np.ndarray:
    """The scribble labels spread over the superpixels they fall in (see the module docstring)."""
    segments = slic(image, n_segments=n_segments, compactness=compactness, start_label=0)   # (H, W) ids
    out = scribble.copy()
    labelled = scribble != IGNORE_INDEX
    for seg in np.unique(segments[labelled]):
        classes = np.unique(scribble[labelled & (segments == seg)])
        if len(classes) == 1:
            out[segments == seg] = classes[0]
    return out


def diffuse_split(split, n_segments: int = 100, compactness: float = 10.0):
    """A copy of a :class:`~scribbleseg.data.folder.SplitData` with every scribble expanded."""
    labels = np.stack([expand_scribble(i, s, n_segments, compactness) for i, s in zip(split.images, split.scribbles)])
    return dataclasses.replace(split, scribbles=labels)
