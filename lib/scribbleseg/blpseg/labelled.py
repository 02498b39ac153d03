"""The BLP loss of BLPSeg (Wang et al., IEEE TIP 2023), Eq. (9)-(11), evaluated at the labelled pixels only, from
the heads' logits on their grid (issue 15): the same function as upsampling both heads to the label size and
calling :func:`~scribbleseg.blpseg.losses.blp_loss` with :func:`~scribbleseg.blpseg.losses.annotation_probability`,
without the full-resolution softmaxes.

Eq. (9) reads p_seg and p_scrib only at the labelled pixels n and at their class y_n:

    BL = -1/N_seg sum_{n labelled} delta_n log p_seg_{y_n, n},   delta_n = (1 - p_scrib_{y_n, n} p_seg_{y_n, n})^gamma

and bilinear upsampling (``align_corners=False``, :func:`scribbleseg.models.base.upsample`) is, at one output pixel
(Y, X), a weighted sum of four grid cells:

    up(Z)[:, Y, X] = l0(Y) [l0(X) Z[:, y0, x0] + l1(X) Z[:, y0, x1]] + l1(Y) [l0(X) Z[:, y1, x0] + l1(X) Z[:, y1, x1]]
    y = max(0, (Y + 1/2) h / H - 1/2),  y0 = floor(y),  y1 = min(y0 + 1, h - 1),  l1 = y - y0,  l0 = 1 - l1

(the same along x), so :func:`upsample_at` gives the upsampled logits at the labelled pixels (padded per image to
the largest count P, :func:`labelled_pixels`), (N, K, P), and the softmaxes run over N P pixels instead of N H W
(scribbles cover about 3.5 % of the pixels of the cpu benchmark).
Where most pixels are labelled (self-training's pseudo-labels) the full-resolution form is cheaper;
:class:`~scribbleseg.blpseg.method.BLPSeg` picks it there.

Measured (issue 15; batch 16, K = 11, 32 x 32 grid to 128 x 128 labels, forward + backward of the BLP loss from
the grid logits, i.e. with both upsamplings in the full form; shared 2-core CPU, 2 threads, torch 2.14.1, median
of 7): labelled fraction 3.5 % (the cpu benchmark's scribbles) 8 ms here against 69 ms at full resolution; 25 %:
25 against 70 ms; 50 %: 42 against 54 ms; 100 %: 80 against 42 ms.

Shapes: logits (N, K, h, w) and scrib_logits (N, K+1, h, w) on the grid; target (N, H, W) long with IGNORE_INDEX.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scribbleseg.blpseg.losses import annotation_probability
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.losses import check_labels


def labelled_pixels(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The labelled pixels of each image, padded to the largest count P_max.

    Args:
        target: (N, H, W) long, IGNORE_INDEX = unlabelled.

    Returns:
        yx (N, P_max, 2) long (row, col; padding 0), label (N, P_max) long (padding 0), keep (N, P_max) bool (False =
        padding). The pixels of an image come in row-major order.
    """
    n, _, w = target.shape
    valid = target != IGNORE_INDEX
    nz = valid.flatten(1).nonzero()                                           # (P, 2): (image, flat pixel), sorted
    count = valid.flatten(1).sum(1)                                           # (N,)
    slot = torch.arange(len(nz), device=target.device) - (count.cumsum(0) - count)[nz[:, 0]]  # rank within image
    p_max = int(count.max()) if n else 0
    flat = torch.zeros(n, p_max, dtype=torch.long, device=target.device)
    keep = torch.zeros(n, p_max, dtype=torch.bool, device=target.device)
    flat[nz[:, 0], slot], keep[nz[:, 0], slot] = nz[:, 1], True
    label = target.flatten(1).gather(1, flat).masked_fill(~keep, 0)           # y_n; padding: class 0
    return torch.stack([flat // w, flat % w], -1), label, keep


def upsample_at(grid: torch.Tensor, size: tuple[int, int], yx: torch.Tensor) -> torch.Tensor:
    """Bilinear ``upsample(grid, size)`` (align_corners=False) at the given pixels only, by ``F.grid_sample``.

    The formula above is ``grid_sample`` with ``align_corners=False`` and ``padding_mode="border"`` at the
    normalised centre of output pixel (Y, X): u = (2 X + 1) / W - 1 (unnormalised: x = ((u + 1) w - 1) / 2
    = (X + 1/2) w / W - 1/2), and the border clamp is upsample's clamp at both ends of an axis.

    Args:
        grid: (N, C, h, w). size: (H, W). yx: (N, P, 2) long output pixels (row, col) per image.

    Returns:
        (N, C, P): up(grid)[n, :, Y, X]; differentiable in ``grid``.
    """
    big_h, big_w = size
    pos = yx.to(grid.dtype)
    u = torch.stack([(2 * pos[..., 1] + 1) / big_w - 1, (2 * pos[..., 0] + 1) / big_h - 1], -1)  # (N, P, 2) = (x, y)
    return F.grid_sample(grid, u[:, None], mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]


def blp_loss_from_grid(logits: torch.Tensor, scrib_logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                       normalize: str = "pixels", detach_weight: bool = False, renormalize: bool = True,
                       detach_scrib: bool = False) -> torch.Tensor:
    """BLP loss, Eq. (9)-(11), equal to ``blp_loss(up(logits), p, target, gamma, normalize, detach_weight)`` with
    ``p = annotation_probability(up(scrib_logits), renormalize)`` (detached if ``detach_scrib``), up = bilinear
    upsampling to the target's size.

    Args:
        logits: (N, K, h, w) segmentation logits (after LAM). scrib_logits: (N, K+1, h, w).
        target: (N, H, W) labels (IGNORE_INDEX = unlabelled). gamma, normalize, detach_weight: as ``blp_loss``.
        renormalize: softmax over the first K scribble logits (paper) or the sliced (K+1)-way softmax.
        detach_scrib: stop the gradient through p_scrib (the released code's ``detach_scrib_in_loss``).

    Returns:
        Scalar; exactly 0 (with a gradient path) without labelled pixels.
    """
    check_labels(target, logits.shape[1])
    k = logits.shape[1]
    yx, label, keep = labelled_pixels(target)                                  # (N, P), padded per image
    both = upsample_at(torch.cat([logits, scrib_logits], 1), tuple(target.shape[-2:]), yx)  # (N, 2K+1, P)
    y = label[:, None]                                                        # (N, 1, P) y_n
    logp = torch.log_softmax(both[:, :k], 1).gather(1, y)[:, 0]               # log p_seg_{y_n, n}, (N, P)
    p_scrib = annotation_probability(both[:, k:], renormalize).gather(1, y)[:, 0]  # p_scrib_{y_n, n}
    if detach_scrib:
        p_scrib = p_scrib.detach()
    delta = (1 - p_scrib * logp.exp()) ** gamma                               # (11)
    if detach_weight:
        delta = delta.detach()
    wce = -(delta * logp) * keep                                              # the summand of (9); padding: 0
    if normalize == "pixels":
        return wce.sum() / keep.sum().clamp(min=1)                            # 1 / N_seg, (9)-(10)
    if normalize == "weights":                                                # released code: per image
        return (wce.sum(1) / ((delta * keep).sum(1) + 1e-7)).mean()
    raise ValueError(f"normalize must be 'pixels' or 'weights', got {normalize!r}")
