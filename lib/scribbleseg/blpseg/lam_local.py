"""The local form of the LAM (BLPSeg, Wang et al., IEEE TIP 2023, Sec. III-B, Eq. 3-5): the softmax of Eq. (4)
over the sources i within ``radius`` cells of the target j along each axis (default ceil(truncate * sigma)).

    A_ij = softmax_i( f_i . f_j - ||s_i - s_j||^2 / (2 sigma^2) ),   |row_i - row_j|, |col_i - col_j| <= r

It agrees with the dense form to about exp(-truncate^2 / 2) (the Gaussian mass beyond the window). Blocked,
with no Python loop over the window's offsets: 8 x 8 tiles of targets, each against its (8 + 2r)^2 halo of
sources in one batched matmul, softmax and one more batched matmul (memory about N M (8 + 2r)^2 against N M^2).

Measured when this blocked form replaced the shift form (issue 15; today's figures, with the fused dense form, are in
:mod:`~scribbleseg.blpseg.lam`; forward + backward of the LAM alone, float32, C = 11 classes, D = 16 features, sigma = 2
cells as in the cpu recipe, so r = 9; a shared 2-core CPU, other jobs running, 2 threads, load about 2; min of 4
interleaved runs): 64 x 64 grid, batch 4: materialised dense 0.85 s, local 0.13 s (6.6x faster; the previous
shift-and-accumulate local form 0.42 s); 32 x 32 grid, batch 16: dense 0.17 s, local 0.09 s (1.9x; previous
local 0.50 s). At load 4 - 5 the 64 x 64 ratio was 3.9 - 5.3x at 2 threads and 6.2 - 6.6x at 1 thread (wall and
CPU time alike), presumably as the many mid-sized parallel ops wait on a descheduled thread. Memory, 64 x 64,
batch 4: saved for the backward 258 MiB dense, 61 MiB local; peak RSS increase 774 MiB dense, 150 MiB local.
VOC (96 x 96 grid, sigma = 6, r = 27, D = 32, batch 1): dense 3.2 s, local 1.1 s. Where the window covers most of
the grid (32 x 32 at sigma = 6) each axis is one tile and the local form does the dense form's work.

Shapes: x (N, C, h, w); f_low, f_high (N, D, h, w); source_mask (N, h, w) bool (True = may be a source).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from scribbleseg.blpseg.lam_terms import _check, _work_dtype

_TILE = 8
"""Target tile side of :func:`local_lam`: one batched matmul per tile of T x T targets against its halo. Smaller
tiles waste fewer halo sources ((T + 2r)^2 per target against the window's (2r + 1)^2), larger ones make bigger
matmuls; 8 was the fastest or within 15 % of it at r = 4, 9, 27 (forward + backward, CPU, see the module doc)."""


def _axis_tiles(n: int, r: int, tile: int | None = None) -> tuple[int, int, int, int]:
    """How one axis of length ``n`` is cut for :func:`local_lam` with a window radius ``r`` and tiles of ``tile``.

    Returns (T, count, P, S): ``count`` tiles of T targets each; the sources of a tile starting at cell t0 are the
    S cells t0 - P .. t0 - P + S - 1 (outside the image: padding, never a source). One tile (T = S = n, P = 0:
    every cell of the axis a candidate, the window still applied by the bias) when the halos would not cost less,
    e.g. when the window spans most of the axis.
    """
    tile = _TILE if tile is None else tile
    if tile < n:
        count = -(-n // tile)
        if count * tile * (tile + 2 * r) < n * n:
            return tile, count, r, tile + 2 * r
    return n, 1, 0, n


def _window_bias(ty, sy, py, tx, sx, px, ry, rx, sigma, like, distance: bool) -> torch.Tensor:
    """Logit bias of a tile, (T_y T_x, S_y S_x), built once per call on like's device in like's dtype.

    The offset of halo source b from target a along an axis is b - P - a; a source is in the window when both
    offsets are at most the radius (the square (2r+1)^2 window of the shift form), else the bias is -inf. Inside,
    it is -(dy^2 + dx^2) / (2 sigma^2) with "distance" (integers exact in the work dtype, rounded once to
    like.dtype and divided there, as :func:`distance_logits`), else 0.
    """
    work = _work_dtype(like.dtype)

    def offsets(t, s, p):                                                     # (t, s)
        return (torch.arange(s, device=like.device, dtype=work)[None, :]
                - torch.arange(t, device=like.device, dtype=work)[:, None] - p)

    oy, ox = offsets(ty, sy, py), offsets(tx, sx, px)
    win = ((oy.abs() <= ry)[:, None, :, None] & (ox.abs() <= rx)[None, :, None, :]).reshape(ty * tx, sy * sx)
    if distance:
        d2 = oy.square().to(like.dtype)[:, None, :, None] + ox.square().to(like.dtype)[None, :, None, :]
        sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
        inside = -(d2.reshape(ty * tx, sy * sx) / (2 * sigma ** 2))          # log P_dis (5)
    else:
        inside = torch.zeros(ty * tx, sy * sx, dtype=like.dtype, device=like.device)
    return inside.masked_fill(~win, float("-inf"))


def local_lam(x: torch.Tensor, sigma: torch.Tensor | float, f_low=None, f_high=None, similarity=("low", "distance"),
              source_mask: torch.Tensor | None = None, truncate: float = 4.5, radius: int | None = None) -> torch.Tensor:
    """Eq. (3)-(5) restricted to sources within ``radius`` cells along each axis (default ceil(truncate * sigma)).

    Blocked ("banded") form, no Python loop over offsets: the grid is cut into T_y x T_x tiles of targets; the
    sources of a tile are its (T_y + 2 r) x (T_x + 2 r) halo, gathered for all tiles at once by ``Tensor.unfold``
    of the zero-padded features and values. Per tile, the logits f_j . f_i of all (target, halo source) pairs are
    one batched matmul (low and high features concatenated along D) plus the fixed bias of :func:`_window_bias`
    (log P_dis inside the square window, -inf outside); sources outside the image or excluded by ``source_mask``
    get -inf too; softmax over the halo; one more batched matmul aggregates the values. A target with no source
    gives 0 (and no gradient), as in :func:`dense_lam`. Without "distance" the radius must be given (the window is
    then a hard cut-off). ``sigma`` may be a tensor: the bias is then differentiable in it (the radius uses its
    value).

    Memory: the logits and the softmax have N * (tiles T_y T_x) * (T_y + 2 r_y)(T_x + 2 r_x) entries each, about
    N M (T + 2r)^2 against N M^2 for the dense form and never more than it (an axis is one tile when the halo
    would cost more); the forward peaks at two such tensors, the backward keeps one (the softmax). The gathered
    halos are (1 + 2r / T)^2 times the size of f and x (an im2col / ``F.unfold`` of the keys would be (2r + 1)^2
    times, and D (2r + 1)^2 M per image for the products). No chunking: the saved softmax dominates, and it is
    what the backward needs.
    """
    similarity = _check(similarity)
    if radius is None:
        if "distance" not in similarity:
            raise ValueError("local_lam without the distance term needs an explicit radius")
        radius = int(math.ceil(truncate * float(sigma.detach() if torch.is_tensor(sigma) else sigma)))
    n, c, h, w = x.shape
    ry, rx = min(radius, h - 1), min(radius, w - 1)                          # offsets beyond the grid: no source
    ty, cy, py, sy = _axis_tiles(h, ry)
    tx, cx, px, sx = _axis_tiles(w, rx)
    tiles, hp, wp = n * cy * cx, cy * ty, cx * tx                             # hp x wp: the padded target grid

    def targets(t):                                                           # (N, D, hp, wp) -> (tiles, T_y T_x, D)
        d = t.shape[1]
        return t.reshape(n, d, cy, ty, cx, tx).permute(0, 2, 4, 3, 5, 1).reshape(tiles, ty * tx, d)

    def sources(t):                                                           # (N, D, h, w) -> (tiles, S_y S_x, D)
        t = F.pad(t, (px, (cx - 1) * tx + sx - px - w, py, (cy - 1) * ty + sy - py - h))
        d = t.shape[1]
        t = t.unfold(2, sy, ty).unfold(3, sx, tx)                             # (N, D, c_y, c_x, S_y, S_x), a view
        return t.permute(0, 2, 3, 4, 5, 1).reshape(tiles, sy * sx, d)

    mask = x.new_ones(n, 1, h, w) if source_mask is None else source_mask[:, None].to(x.dtype)
    src_bias = torch.where(sources(mask) > 0.5, x.new_zeros(()), x.new_full((), float("-inf")))
    src_bias = src_bias.transpose(1, 2)                                       # (tiles, 1, S^2); padding: -inf
    # targets without any source in their window (source_mask, or padded targets): separable max-pool of the mask
    reach = F.pad(mask, (rx, rx + wp - w, ry, ry + hp - h))
    reach = F.max_pool2d(F.max_pool2d(reach, (2 * ry + 1, 1), 1), (1, 2 * rx + 1), 1)  # (N, 1, hp, wp)
    empty = targets(reach) < 0.5                                              # (tiles, T^2, 1)
    bias = _window_bias(ty, sy, py, tx, sx, px, ry, rx, sigma, x, "distance" in similarity)[None]
    feats = [f for f, k in ((f_low, "low"), (f_high, "high")) if k in similarity]
    if feats:
        f = feats[0] if len(feats) == 1 else torch.cat(feats, 1)              # f_low.f_low + f_high.f_high in one
        f_t = targets(F.pad(f, (0, wp - w, 0, hp - h)))
        logit = torch.bmm(f_t, sources(f).transpose(1, 2))                    # f_j . f_i, (tiles, T^2, S^2)
        logit += bias
        logit += src_bias
    else:
        logit = bias + src_bias
    any_empty = bool(empty.any())                                             # (a host sync on a GPU)
    if any_empty:
        logit.masked_fill_(empty, 0.0)                                        # finite row; its output is zeroed
    a = torch.softmax(logit, dim=2)                                           # (4) over the sources i
    out = torch.bmm(a, sources(x))                                            # (3), (tiles, T^2, C)
    if any_empty:
        out = out.masked_fill(empty, 0.0)                                     # a target with no source -> 0
    out = out.reshape(n, cy, cx, ty, tx, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, hp, wp)
    return out[:, :, :h, :w]
