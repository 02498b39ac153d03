"""Losses of BLPSeg (Wang et al., IEEE TIP 2023): the scribble head's weighted cross-entropy, Eq. (1)-(2),
the annotation probability map, the BLP loss, Eq. (9)-(11), and the focal loss of Table II.

    WCE(p_scrib, y') = -1/N sum_n sum_{c<=K+1} w_c y'_{c,n} log p_scrib_{c,n}            (1)
        y' = y on labelled pixels, the extra class K+1 ("not labelled") elsewhere     (2)
        w_c = 1 except w_{K+1} = 0.02
    BL(p_seg, p_scrib, y) = -1/N_seg sum_n sum_c y_{c,n} delta_{c,n} log p_seg_{c,n}      (9)
        N_seg = number of labelled pixels                                              (10)
        delta_{c,n} = (1 - p_scrib_{c,n} p_seg_{c,n})^gamma,  gamma = 2                 (11)
    focal (Lin et al.): delta_{c,n} = (1 - p_seg_{c,n})^gamma

Options for the authors' released code (default = the paper): ``normalize="weights"`` divides each
image's sum by its sum of weights (+1e-7) and averages over the batch; ``detach_weight`` stops the
gradient through delta; :func:`annotation_probability` with ``renormalize=False`` slices the
(K+1)-way softmax to K classes instead of taking the softmax over the first K.

Shapes: logits (N, K, H, W); scribble logits (N, K+1, H, W); target (N, H, W) long with IGNORE_INDEX.
Every loss is a scalar; no labelled pixel gives exactly 0, never NaN. Every loss checks its target first
(:func:`scribbleseg.losses.check_labels`): a value outside [0, K) and not IGNORE_INDEX is a ValueError; for the
scribble head K is its own "not labelled" class, which the target must not carry (unlabelled is IGNORE_INDEX).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.losses import check_labels


def scribble_target(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """y' of Eq. (2): the scribble labels, with unlabelled pixels set to the extra class K."""
    return target.masked_fill(target == IGNORE_INDEX, num_classes)


def scribble_head_loss(scrib_logits: torch.Tensor, target: torch.Tensor, empty_weight: float = 0.02,
                       normalize: str = "pixels") -> torch.Tensor:
    """Eq. (1): weighted cross-entropy of the (K+1)-way scribble head over all N pixels.

    Args:
        scrib_logits: (N, K+1, H, W). target: (N, H, W) scribble labels (IGNORE_INDEX = unlabelled).
        empty_weight: w_{K+1} (paper: 0.02). normalize: "pixels" (1/N, Eq. 1) or "weights" (PyTorch's
            weighted mean, sum w y' log p / sum w y').
    """
    k1 = scrib_logits.shape[1]
    check_labels(target, k1 - 1, "target of the scribble head (K + 1 channels)")  # K: the head's own class
    weight = torch.ones(k1, dtype=scrib_logits.dtype, device=scrib_logits.device)
    weight[-1] = empty_weight                                                  # w_{K+1}
    y2 = scribble_target(target, k1 - 1)                                       # (2)
    if normalize == "weights":
        return F.cross_entropy(scrib_logits, y2, weight=weight)
    if normalize != "pixels":
        raise ValueError(f"normalize must be 'pixels' or 'weights', got {normalize!r}")
    return F.cross_entropy(scrib_logits, y2, weight=weight, reduction="sum") / y2.numel()  # 1/N sum (1)


def annotation_probability(scrib_logits: torch.Tensor, renormalize: bool = True) -> torch.Tensor:
    """p_scrib over the K classes, (N, K, H, W): softmax over the first K logits (paper), or the
    (K+1)-way softmax sliced to K (``renormalize=False``, the released code)."""
    if renormalize:
        return torch.softmax(scrib_logits[:, :-1], 1)
    return torch.softmax(scrib_logits, 1)[:, :-1]


def _weighted_ce_map(logits, target, weight_fn, detach_weight: bool):
    """Per-pixel y delta log p (N, H, W), zero on unlabelled pixels, with delta and the labelled mask."""
    check_labels(target, logits.shape[1])
    valid = target != IGNORE_INDEX                                             # (N, H, W)
    t = target.masked_fill(~valid, 0)[:, None]                                 # (N, 1, H, W)
    logp = torch.log_softmax(logits, 1).gather(1, t)[:, 0]                     # log p_seg_{y_n, n}
    delta = weight_fn(logp.exp(), t)                                           # (N, H, W)
    if detach_weight:
        delta = delta.detach()
    return -(delta * logp) * valid, delta, valid                               # y delta log p, labelled only


def _weighted_ce(logits, target, weight_fn, normalize: str, detach_weight: bool) -> torch.Tensor:
    wce, delta, valid = _weighted_ce_map(logits, target, weight_fn, detach_weight)
    if normalize == "pixels":
        return wce.sum() / valid.sum().clamp(min=1)                            # 1 / N_seg, Eq. (9)-(10)
    if normalize == "weights":                                                 # released code: per image
        per = wce.flatten(1).sum(1) / ((delta * valid).flatten(1).sum(1) + 1e-7)
        return per.mean()
    raise ValueError(f"normalize must be 'pixels' or 'weights', got {normalize!r}")


def blp_weight(p_scrib: torch.Tensor, p_seg: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """delta of Eq. (11) for every class, (N, K, H, W): (1 - p_scrib p_seg)^gamma."""
    return (1 - p_scrib * p_seg) ** gamma


def blp_loss_map(logits: torch.Tensor, p_scrib: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """The summand of Eq. (9) per pixel, (N, H, W): -delta log p_seg at the target class, 0 where unlabelled
    (Fig. 8(d) draws it with pseudo-labels as ``target``)."""
    return _weighted_ce_map(logits, target, lambda p_seg, t: (1 - p_scrib.gather(1, t)[:, 0] * p_seg) ** gamma,
                            False)[0]


def blp_loss(logits: torch.Tensor, p_scrib: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
             normalize: str = "pixels", detach_weight: bool = False) -> torch.Tensor:
    """BLP loss, Eq. (9)-(11).

    Args:
        logits: segmentation logits Z (N, K, H, W) (after LAM). p_scrib: (N, K, H, W) annotation probability.
        target: (N, H, W) scribble labels. gamma: exponent of the modulating factor.
        normalize: "pixels" (paper) or "weights" (released code). detach_weight: stop gradients through delta.

    Returns:
        Scalar; gamma = 0 gives partial cross-entropy; p_scrib = 0 gives weight 1.
    """
    def weight(p_seg, t):
        return (1 - p_scrib.gather(1, t)[:, 0] * p_seg) ** gamma              # (11)

    return _weighted_ce(logits, target, weight, normalize, detach_weight)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, normalize: str = "pixels",
               detach_weight: bool = False) -> torch.Tensor:
    """Focal loss on labelled pixels, the "FL" row of Table II: weight (1 - p_seg)^gamma."""
    return _weighted_ce(logits, target, lambda p_seg, t: (1 - p_seg) ** gamma, normalize, detach_weight)
