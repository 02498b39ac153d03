"""Segmentation metrics: confusion matrix, IoU / mIoU, border-band errors, BLPSeg distance statistics.

Units: IoU, mIoU and pixel accuracy are in **percent** (0-100), the convention of the papers'
tables. ``border_band_errors`` rates and shares are **fractions** (0-1). Pixels whose target is
:data:`~scribbleseg.constants.IGNORE_INDEX` (255) are never counted.

The confusion matrix ``cm`` is (K, K) int64 with rows = ground truth and columns = prediction.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from scribbleseg.constants import IGNORE_INDEX


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_labels(x, name: str) -> np.ndarray:
    a = _to_numpy(x)
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise TypeError(f"{name} must hold integer class indices (e.g. logits.argmax(1)), got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _check_range(a: np.ndarray, bad: np.ndarray, name: str, num_classes: int, extra: str = "") -> None:
    if bad.any():
        vals = np.unique(a[bad])
        shown = ", ".join(str(v) for v in vals[:10]) + (", ..." if vals.size > 10 else "")
        raise ValueError(f"{name} has values outside [0, {num_classes}){extra}: {shown}")


def confusion_matrix(pred, target, num_classes: int) -> np.ndarray:
    """Confusion matrix of integer label maps, computed with ``np.bincount``.

    Args:
        pred: predicted class indices, numpy array or torch tensor of any shape, values in [0, K).
        target: ground-truth class indices, same shape, values in [0, K) or 255 (ignored).
        num_classes: K (at most 255, since 255 is reserved for unlabelled pixels).

    Returns:
        (K, K) int64 array; ``cm[i, j]`` = number of labelled pixels of class i predicted as j.

    Raises:
        ValueError: shapes differ, or a value is out of range (the message lists the values).
        TypeError: a non-integer (e.g. float probabilities) array is passed.
    """
    if not 1 <= num_classes <= IGNORE_INDEX:
        raise ValueError(f"num_classes must be in [1, {IGNORE_INDEX}], got {num_classes}")
    p, t = _as_labels(pred, "pred"), _as_labels(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    _check_range(t, ((t < 0) | (t >= num_classes)) & (t != IGNORE_INDEX), "target", num_classes,
                 f" other than {IGNORE_INDEX}")
    _check_range(p, (p < 0) | (p >= num_classes), "pred", num_classes)
    keep = t != IGNORE_INDEX
    idx = t[keep] * num_classes + p[keep]
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes).astype(np.int64)


def iou_from_confusion(cm) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN) in percent; NaN for classes absent from gt and prediction.

    Args:
        cm: (K, K) confusion matrix (rows = gt, cols = prediction).

    Returns:
        (K,) float64 array in [0, 100] or NaN.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.full(cm.shape[0], np.nan)
    np.divide(100.0 * tp, union, out=iou, where=union > 0)
    return iou


def miou(cm) -> float:
    """Mean IoU in percent (0-100): nanmean of :func:`iou_from_confusion`; NaN if no class occurs."""
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(cm) -> float:
    """Overall pixel accuracy in percent (0-100); NaN if the matrix is empty."""
    cm = np.asarray(cm)
    total = cm.sum()
    return float(100.0 * np.trace(cm) / total) if total > 0 else float("nan")


class ConfusionMeter:
    """Accumulates a (K, K) confusion matrix over batches: ``meter.update(pred, target)`` per batch,
    then ``meter.miou()`` (percent), ``meter.per_class_iou()``, ``meter.pixel_accuracy()``."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, target) -> None:
        """Add one batch (any shape; see :func:`confusion_matrix`)."""
        self.matrix += confusion_matrix(pred, target, self.num_classes)

    def reset(self) -> None:
        self.matrix[:] = 0

    def per_class_iou(self) -> np.ndarray:
        """(K,) IoU in percent, NaN for classes never seen."""
        return iou_from_confusion(self.matrix)

    def miou(self) -> float:
        """Mean IoU in percent."""
        return miou(self.matrix)

    def pixel_accuracy(self) -> float:
        """Pixel accuracy in percent."""
        return pixel_accuracy(self.matrix)


def border_band_errors(pred, target, band: int = 8) -> dict[str, float]:
    """Error rates inside the outer ``band``-pixel frame of each image versus the interior.

    Args:
        pred: (N, H, W) (or (H, W)) predicted class indices.
        target: same shape, ground truth with 255 = unlabelled (not counted).
        band: width of the frame in pixels.

    Returns:
        dict with fractions in [0, 1] (NaN when the denominator is 0):
        ``border_error_rate`` = errors / labelled pixels inside the frame,
        ``interior_error_rate`` = the same outside the frame,
        ``border_share_of_errors`` = errors inside the frame / all errors.
    """
    p, t = _to_numpy(pred), _to_numpy(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    if p.ndim == 2:
        p, t = p[None], t[None]
    if p.ndim != 3:
        raise ValueError(f"expected (N, H, W) or (H, W) arrays, got shape {p.shape}")
    if band < 0:
        raise ValueError(f"band must be >= 0, got {band}")
    h, w = t.shape[-2:]
    border = np.ones((h, w), dtype=bool)
    border[band:h - band, band:w - band] = False
    labelled = t != IGNORE_INDEX
    err = (p != t) & labelled

    def ratio(a, b):
        return float(a) / float(b) if b > 0 else float("nan")

    e_b, e_i = err[:, border].sum(), err[:, ~border].sum()
    return {
        "border_error_rate": ratio(e_b, labelled[:, border].sum()),
        "interior_error_rate": ratio(e_i, labelled[:, ~border].sum()),
        "border_share_of_errors": ratio(e_b, e_b + e_i),
    }


def relative_boundary_distance(mask, labelled=None, image_border_is_boundary: bool = True) -> np.ndarray:
    """Relative distance of labelled pixels to their class boundary (BLPSeg, Fig. 1 / Eq. (14)).

    For each class c in the ground-truth map, the Euclidean distance transform of ``mask == c``
    gives every pixel of c its distance to the nearest pixel that is not c (so a pixel on the
    region's edge has distance 1). It is divided by the maximum distance over *all* pixels of c in
    this image, so values lie in (0, 1] and scribble pixels are measured on the same scale as the
    full mask (the most interior pixel of a class has distance 1).

    Args:
        mask: (H, W) ground-truth class map; 255 pixels belong to no class (they count as boundary).
        labelled: optional (H, W) label map (e.g. scribbles, 255 = unlabelled); only its labelled
            pixels are returned. Default: all pixels of ``mask`` except 255.
        image_border_is_boundary: if True (default) the image edge counts as a region boundary.

    Returns:
        (n,) float64 distances of the counted pixels (labelled and with a class in ``mask``),
        in row-major order.
    """
    m = _to_numpy(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    keep = m != IGNORE_INDEX
    if labelled is not None:
        lab = _to_numpy(labelled)
        if lab.shape != m.shape:
            raise ValueError(f"labelled and mask shapes differ: {lab.shape} vs {m.shape}")
        keep &= lab != IGNORE_INDEX
    rel = np.zeros(m.shape, dtype=np.float64)
    for c in np.unique(m[m != IGNORE_INDEX]):
        region = m == c
        if image_border_is_boundary or region.all():
            dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        else:
            dist = ndimage.distance_transform_edt(region)
        rel[region] = dist[region] / dist[region].max()
    return rel[keep]


def weighted_distance_histogram(distances, weights=None, bins=10) -> tuple[np.ndarray, np.ndarray]:
    """Weighted distribution of relative distances, BLPSeg Eq. (13), binned on [0, 1].

    P(X) = sum_n lambda_n 1(X = d_n) / sum_n lambda_n, with X discretised into ``bins``.

    Args:
        distances: (n,) values d_n in [0, 1] (e.g. from :func:`relative_boundary_distance`).
        weights: (n,) non-negative lambda_n; default all ones.
        bins: number of equal bins on [0, 1], or an array of bin edges.

    Returns:
        (probs, edges): probs (B,) sums to 1 (for values inside the edges), edges (B + 1,).
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    w = np.ones_like(d) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != d.shape:
        raise ValueError(f"weights shape {w.shape} differs from distances shape {d.shape}")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    hist, edges = np.histogram(d, bins=bins, range=(0.0, 1.0) if np.ndim(bins) == 0 else None, weights=w)
    return hist / w.sum(), edges
