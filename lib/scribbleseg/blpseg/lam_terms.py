"""The similarity terms of the LAM (BLPSeg, Wang et al., IEEE TIP 2023, Sec. III-B, Eq. 5), shared by its three
forms (:func:`~scribbleseg.blpseg.lam.dense_lam`, :func:`~scribbleseg.blpseg.lam_local.local_lam`,
:func:`~scribbleseg.blpseg.lam_attention.attention_lam`):

    log P_dis(i, j) = -||s_i - s_j||^2 / (2 sigma^2),   s = (row, col) of a cell of the h x w grid     (5)

The terms f_i . f_j of P_low need no helper (a matmul of the features). Cells are numbered row-major,
i = row * w + col; M = h * w.
"""
from __future__ import annotations

import torch

SIMILARITIES = ("low", "high", "distance")


def _check(similarity) -> tuple[str, ...]:
    bad = [s for s in similarity if s not in SIMILARITIES]
    if bad or not similarity:
        raise ValueError(f"LAM similarity must be a non-empty subset of {SIMILARITIES}, got {similarity!r}")
    return tuple(similarity)


def _axis_squared_differences(n: int, device, dtype) -> torch.Tensor:
    """(a - b)^2 for the cell indices a, b in 0..n-1 along one axis, (n, n): a (n, 1) - (1, n) broadcast."""
    idx = torch.arange(n, device=device, dtype=dtype)
    return (idx[:, None] - idx[None, :]).square()


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32, float16 and bfloat16 compute the per-axis terms in float32."""
    return torch.promote_types(dtype, torch.float32)


def squared_distances(h: int, w: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """||s_i - s_j||^2 of Eq. (5) for the M = h * w cells of an h x w grid, (M, M), row-major (i = row * w + col).

    Built on ``device`` in ``dtype`` by broadcasting: (dy^2)[:, None, :, None] + (dx^2)[None, :, None, :] of the
    two per-axis (h, h) and (w, w) squared differences, viewed as (M, M); the only (M, M) allocation is the result.
    The entries are integers, exact in float32 / float64 up to 2^24 (grids far beyond 96 x 96). In float16 /
    bfloat16 the per-axis squares are computed in float32 and rounded once, the sum is rounded once more.
    """
    work = _work_dtype(dtype)
    dy2 = _axis_squared_differences(h, device, work).to(dtype)
    dx2 = _axis_squared_differences(w, device, work).to(dtype)
    return (dy2[:, None, :, None] + dx2[None, :, None, :]).reshape(h * w, h * w)


def distance_logits(h: int, w: int, sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """log P_dis(i, j) = -||s_i - s_j||^2 / (2 sigma^2) of Eq. (5), (M, M), M = h * w; differentiable in sigma.

    Where: built directly on ``like.device`` from ``torch.arange`` coordinate vectors by broadcasting
    (:func:`squared_distances`); no Python loop over cells, no CPU / float64 round trip. The squared distances are
    integers, exact in float32 (float64 for float64 input), rounded once to ``like.dtype`` and divided by 2 sigma^2
    there: the same numbers, bit for bit, as the float64 matrix this replaces once cast.

    Memory: O((HW)^2) in the input dtype (96 x 96 grid: 0.34 GB in float32), one more (M, M) float32 temporary
    for float16 / bfloat16 input.

    Why no cache: building it costs a broadcast add and a division (cheap next to the O(N M^2 D) softmax logits
    it is added to), while a cache keyed by grid size would keep an (M, M) tensor alive per size: variable-size
    evaluation (VOC) misses it on nearly every image and would pin several GB. It is freed with the forward.
    """
    work = _work_dtype(like.dtype)
    d2 = squared_distances(h, w, like.device, work).to(like.dtype)          # (M, M) exact integers, rounded once
    return -(d2 / (2 * torch.as_tensor(sigma, dtype=like.dtype, device=like.device) ** 2))  # (5) log P_dis


def centred_positions(h: int, w: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """s_i - c of Eq. (5) for the M = h * w cells, (M, 2) = (row, col) minus the grid centre c = ((h-1)/2, (w-1)/2).

    A shift of every s by the same c leaves ||s_i - s_j|| unchanged; centring halves the largest |s| (and so
    the float32 cancellation of the expanded form in :mod:`~scribbleseg.blpseg.lam_attention`). The entries
    are multiples of 1/2, exact in any float dtype up to 2^23.
    """
    ys = torch.arange(h, device=device, dtype=dtype) - (h - 1) / 2
    xs = torch.arange(w, device=device, dtype=dtype) - (w - 1) / 2
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(h * w, 2)
