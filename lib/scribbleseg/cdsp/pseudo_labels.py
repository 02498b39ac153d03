"""Pseudo-labels of CDSP (Zhang et al., AAAI 2024), Sec. "Pseudo-label Generation": the class activation maps
of Eq. (6) thresholded and merged into one multi-class map (as in SEAM, Wang et al. 2020).

For each image, the CAM of every foreground class present in its scribbles (k of Eq. 4) is upsampled
bilinearly to the image size and divided by its maximum; absent classes score 0, and the background
scores the constant ``threshold``:

    score_0 = threshold,   score_c = CAM_c / max CAM_c  (c in k),   score_c = 0 otherwise
    pseudo-label = argmax_c score_c      (background where no present class exceeds the threshold)

``crf=True`` refines the scores, normalised to sum to 1, with the dense CRF of :mod:`scribbleseg.crf`
before the argmax (the "CAM + CRF" variant). :func:`pseudo_label_miou` scores a set of pseudo-labels
against the masks (percent); :func:`threshold_sweep` gives the mIoU for several thresholds (Table 3's
point: better pseudo-labels, better CDSP). Every function works on an in-memory split, in batches.

Shapes: cams (N, K - 1, h, w) from :meth:`CAMClassifier.cams`; scores (N, K, H, W); labels (N, H, W) uint8.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from scribbleseg.cdsp.classifier import CAMClassifier, image_labels
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.folder import SplitData
from scribbleseg.metrics import confusion_matrix, miou
from scribbleseg.train import to_batch
from scribbleseg.crf import dense_crf


def cam_scores(cams: torch.Tensor, present: torch.Tensor, threshold: float, size) -> torch.Tensor:
    """(N, K, H, W) scores: channel 0 = ``threshold``, channel c = max-normalised CAM of class c if present.

    Args:
        cams: (N, K - 1, h, w) non-negative CAMs (Eq. 6). present: (N, K - 1) image labels (Eq. 4).
        threshold: background score in (0, 1). size: (H, W) of the pseudo-label.
    """
    up = F.interpolate(cams, size=tuple(size), mode="bilinear", align_corners=False)   # (N, K - 1, H, W)
    up = up / up.flatten(2).amax(2).clamp_min(1e-5)[:, :, None, None]                  # max-normalised
    up = up * present[:, :, None, None]                                                # classes of k only
    return torch.cat([torch.full_like(up[:, :1], threshold), up], 1)                    # (N, K, H, W)


def scores_to_labels(scores: torch.Tensor) -> torch.Tensor:
    """(N, H, W) argmax; ties go to the lower index, so the background wins where no class exceeds it."""
    return scores.argmax(1)


@torch.no_grad()
def pseudo_labels(model: CAMClassifier, data: SplitData, threshold: float = 0.3, crf: bool = False,
                  batch_size: int = 32, device=None, crf_kw: dict | None = None) -> np.ndarray:
    """Pseudo-labels (N, H, W) uint8 of every image of ``data`` (unflipped, index = dataset index)."""

    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    device = torch.device(device or next(model.parameters()).device)
    model.eval()
    out = []
    for s in range(0, len(data), batch_size):
        idx = np.arange(s, min(s + batch_size, len(data)))
        batch = to_batch(data, idx, None, device)
        present = image_labels(batch["scribble"], data.num_classes)                    # (N, K - 1)
        scores = cam_scores(model.cams(batch["image"]), present, threshold, batch["scribble"].shape[-2:])
        if crf:
            probs = (scores / scores.sum(1, keepdim=True)).float().cpu().numpy()       # (N, K, H, W), sums to 1
            labels = np.stack([dense_crf(img, p, **(crf_kw or {})).argmax(0) for img, p in zip(data.images[idx], probs)])
        else:
            labels = scores_to_labels(scores).cpu().numpy()
        out.append(labels.astype(np.uint8))
    return np.concatenate(out)


def pseudo_label_miou(labels, masks, num_classes: int) -> float:
    """mIoU (percent) of pseudo-labels (N, H, W) against masks; pixels unlabelled in either are not counted."""
    labels, masks = np.asarray(labels).astype(np.int64), np.asarray(masks).astype(np.int64)
    target = np.where(labels == IGNORE_INDEX, IGNORE_INDEX, masks)
    return miou(confusion_matrix(np.where(labels == IGNORE_INDEX, 0, labels), target, num_classes))


def threshold_sweep(model: CAMClassifier, data: SplitData, thresholds, crf: bool = False, **kw) -> dict[float, float]:
    """{threshold: mIoU (percent) of the pseudo-labels of ``data`` against its masks}."""
    return {float(t): pseudo_label_miou(pseudo_labels(model, data, t, crf, **kw), data.masks, data.num_classes)
            for t in thresholds}
