"""Neighbourhood systems and affinities for the Potts term sum_{ij in N} w_ij P(y_i, y_j).

Potts relaxations and soft self-labeling (CVPR 2025), Eq. (4) and (6), Sec. 3.3 and App. C:

    w_ij = exp(-||I_i - I_j||^2 / (2 sigma_rgb^2))                              NN (4-neighbour grid)
    w_ij = exp(-||I_i - I_j||^2 / (2 sigma_rgb^2) - ||x_i - x_j||^2 / (2 sigma_xy^2))   DN (dense, bilateral)

with colours I on 0-255 (sigma_rgb = 9 on VOC) and positions x in input pixels (sigma_xy = 100 on
VOC, "bandwidth 100"). Each unordered pair {i, j} counts once.

Both work on the grid of the network's logits: a (H, W) grid at ``stride`` input pixels per cell,
whose colours are the input image average-pooled by ``stride``. At stride 4 of a 128 x 128 image,
M = 32 * 32 = 1024 cells and the dense M x M kernel is exact (4 MB per image). For VOC-size inputs
(M ~ 10^4) the dense kernel does not fit; the paper uses bilateral filtering (a permutohedral-lattice
approximation) there, which we do not implement: DN raises for M > ``MAX_DENSE``.

Written by hand (not with a library) because the pairwise sums must stay differentiable in y for
every relaxation of :mod:`scribbleseg.potts.relaxations`. ``grid_pairwise_grad`` and
``dense_pairwise_grad`` are their gradients in y written out (for the pseudo-label solver, which
would otherwise call autograd 200 times per batch): for P(y_i . y_j, ||y_i||^2, ||y_j||^2),

    d/dy_i sum_{ij} w_ij P_ij = sum_j w_ij dP_ij/d dot y_j + 2 y_i sum_j w_ij dP_ij/d ||y_i||^2,

with the partials of :func:`~scribbleseg.potts.relaxations.gram_partials`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scribbleseg.potts.relaxations import check_name, from_gram, gram_partials

MAX_DENSE = 4096


def pool_colours(rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Colours of the (h, w) grid: rgb (N, 3, H, W) on 0-255 average-pooled to (N, 3, h, w)."""
    if tuple(rgb.shape[-2:]) == tuple(size):
        return rgb
    return F.adaptive_avg_pool2d(rgb, size)


def grid_affinities(rgb: torch.Tensor, sigma_rgb: float) -> torch.Tensor:
    """4-neighbour (NN) affinities.

    Args:
        rgb: (N, 3, H, W) colours on 0-255.
        sigma_rgb: colour bandwidth.

    Returns:
        w (N, 2, H, W): w[:, 0, r, c] links (r, c)-(r, c+1), w[:, 1, r, c] links (r, c)-(r+1, c);
        the last column of channel 0 and the last row of channel 1 are 0 (no neighbour).
    """
    n, _, h, w = rgb.shape
    out = rgb.new_zeros(n, 2, h, w)
    dx = ((rgb[..., :, 1:] - rgb[..., :, :-1]) ** 2).sum(1)  # (N, H, W-1)
    dy = ((rgb[..., 1:, :] - rgb[..., :-1, :]) ** 2).sum(1)  # (N, H-1, W)
    out[:, 0, :, :-1] = torch.exp(-dx / (2 * sigma_rgb ** 2))  # w_ij = exp(-||I_i - I_j||^2 / 2 sigma^2)
    out[:, 1, :-1, :] = torch.exp(-dy / (2 * sigma_rgb ** 2))
    return out


def grid_pairwise(y: torch.Tensor, w: torch.Tensor, name: str) -> torch.Tensor:
    """sum_{ij in NN} w_ij P_name(y_i, y_j) per image.

    Args:
        y: (N, K, H, W) distributions. w: (N, 2, H, W) from :func:`grid_affinities`.
        name: relaxation (see :mod:`scribbleseg.potts.relaxations`).

    Returns:
        (N,) sums over the 2HW - H - W edges of each image.
    """
    check_name(name)
    pp = (y * y).sum(1)                                                      # (N, H, W)  ||y_i||^2, once
    dot_r = (y[..., :, :-1] * y[..., :, 1:]).sum(1)                          # (N, H, W-1)  y_i . y_right
    dot_d = (y[..., :-1, :] * y[..., 1:, :]).sum(1)                          # (N, H-1, W)  y_i . y_below
    right = from_gram(dot_r, pp[..., :, :-1], pp[..., :, 1:], name) * w[:, 0, :, :-1]
    down = from_gram(dot_d, pp[..., :-1, :], pp[..., 1:, :], name) * w[:, 1, :-1, :]
    return right.flatten(1).sum(1) + down.flatten(1).sum(1)


def grid_edge_weights(w: torch.Tensor) -> tuple[tuple[int, torch.Tensor], tuple[int, torch.Tensor]]:
    """The grid's edges on the flattened pixel index p = r * W + c: ((1, w_right), (W, w_down)), where
    w_right[:, p] links p and p + 1 and w_down[:, p] links p and p + W, (N, H W - offset) each.

    Pairs that are not edges (p in the last column and p + 1 at the start of the next row) get weight 0,
    so that :func:`grid_pairwise_grad` can shift the whole flattened y by an offset (contiguous runs)
    instead of slicing rows (the last column and row of ``w`` are ignored as in :func:`grid_pairwise`).
    """
    n, _, h, wd = w.shape
    right = w[:, 0].clone()
    right[..., -1] = 0                                                       # (r, W-1) has no right neighbour
    return (1, right.reshape(n, -1)[:, :-1]), (wd, w[:, 1, :-1, :].reshape(n, -1))


def grid_pairwise_grad(y: torch.Tensor, w: torch.Tensor, name: str, scale: float = 1.0,
                       out: torch.Tensor | None = None, edges=None) -> torch.Tensor:
    """``scale`` times the gradient in y of ``grid_pairwise(y, w, name).sum()``, added to ``out``.

    Args:
        y: (N, K, H, W) distributions. w: (N, 2, H, W) from :func:`grid_affinities`.
        name: relaxation. scale: factor of the gradient (the solver's lambda).
        out: contiguous (N, K, H, W) tensor the gradient is added to in place (default: a new zero tensor).
        edges: ``grid_edge_weights(w)`` if already computed (the solver does so once per solve).

    Returns:
        ``out``.
    """
    check_name(name)
    n, k = y.shape[:2]
    out = torch.zeros_like(y, memory_format=torch.contiguous_format) if out is None else out
    yf, acc = y.reshape(n, k, -1), out.view(n, k, -1)                        # (N, K, M), pixels p = r W + c
    pp = torch.linalg.vecdot(yf, yf, dim=1) if name in ("NQ", "CD", "LQ") else None  # (N, M)  ||y_p||^2
    norm_coef = None                                                         # sum_q w_pq dP_pq/d||y_p||^2
    for offset, wpq in grid_edge_weights(w) if edges is None else edges:
        yp, yq = yf[..., :-offset], yf[..., offset:]                         # (N, K, M - offset): p, q = p + offset
        dot = torch.linalg.vecdot(yp, yq, dim=1)                             # y_p . y_q
        pq = (pp[:, :-offset], pp[:, offset:]) if pp is not None else (None, None)
        d_dot, d_pp, d_pq = gram_partials(dot, *pq, name)
        coef = torch.mul(wpq, d_dot).mul_(scale)[:, None]                    # lambda w_pq dP/d(y_p . y_q)
        acc[..., :-offset].addcmul_(coef, yq)                                # d(y_p . y_q)/dy_p = y_q
        acc[..., offset:].addcmul_(coef, yp)
        if d_pp is not None:
            norm_coef = y.new_zeros(n, yf.shape[-1]) if norm_coef is None else norm_coef
            _add_product(norm_coef[:, :-offset], wpq, d_pp)
            _add_product(norm_coef[:, offset:], wpq, d_pq)
    if norm_coef is not None:
        acc.addcmul_(norm_coef[:, None], yf, value=2 * scale)                # d||y_p||^2/dy_p = 2 y_p
    return out


def _add_product(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor | float) -> None:
    """out += a * b in one pass, b a tensor or a constant (Q's partials are)."""
    out.add_(a, alpha=b) if isinstance(b, float) else out.addcmul_(a, b)


def dense_affinities(rgb: torch.Tensor, sigma_rgb: float, sigma_xy: float, stride: float = 1.0) -> torch.Tensor:
    """Dense bilateral (DN) affinities between all cells of the grid.

    Args:
        rgb: (N, 3, H, W) colours of the grid cells on 0-255.
        sigma_rgb, sigma_xy: colour and spatial bandwidths (sigma_xy in input pixels).
        stride: input pixels per grid cell (positions are cell centres times ``stride``).

    Returns:
        W (N, M, M), M = H * W, symmetric, zero diagonal.
    """
    n, _, h, w = rgb.shape
    m = h * w
    if m > MAX_DENSE:
        raise ValueError(f"dense neighbourhood on a {h}x{w} grid needs a {m}x{m} kernel per image; "
                         f"the limit is M = {MAX_DENSE}: use neighbourhood='grid' or a coarser grid")
    colour = rgb.flatten(2).transpose(1, 2)                                  # (N, M, 3)
    ys, xs = torch.meshgrid(torch.arange(h, device=rgb.device), torch.arange(w, device=rgb.device), indexing="ij")
    pos = torch.stack([ys, xs], -1).reshape(m, 2).to(rgb.dtype) * stride     # (M, 2)
    d_rgb = torch.cdist(colour, colour) ** 2                                 # (N, M, M)
    d_xy = torch.cdist(pos, pos) ** 2                                        # (M, M)
    k = torch.exp(-d_rgb / (2 * sigma_rgb ** 2) - d_xy / (2 * sigma_xy ** 2))  # bilateral w_ij
    return k * (1 - torch.eye(m, dtype=k.dtype, device=k.device))             # no self-pairs


def dense_pairwise(y: torch.Tensor, kernel: torch.Tensor, name: str) -> torch.Tensor:
    """sum_{i<j} W_ij P_name(y_i, y_j) per image over the dense neighbourhood.

    Bi-linear and quadratic take the fast path through W Y (no M x M x K work):
    sum_{i<j} W_ij (1 - y_i.y_j) = (sum W - tr Y^T W Y) / 2 and
    sum_{i<j} W_ij ||y_i - y_j||^2 / 2 = (sum_i d_i ||y_i||^2 - tr Y^T W Y) / 2, d = W 1.
    The other relaxations evaluate the Gram matrix Y Y^T (N, M, M).

    Args:
        y: (N, K, H, W) distributions. kernel: (N, M, M) from :func:`dense_affinities`.

    Returns:
        (N,) sums over unordered pairs.
    """
    check_name(name)
    flat = y.flatten(2).transpose(1, 2)                     # (N, M, K)
    pp = (flat * flat).sum(-1)                              # (N, M)  ||y_i||^2
    if name in ("BL", "Q"):
        wy = torch.bmm(kernel, flat)                        # (N, M, K)  W Y
        cross = (flat * wy).sum((1, 2))                     # tr Y^T W Y
        if name == "BL":
            return 0.5 * (kernel.sum((1, 2)) - cross)
        return 0.5 * ((kernel.sum(2) * pp).sum(1) - cross)
    gram = torch.bmm(flat, flat.transpose(1, 2))            # (N, M, M)  y_i . y_j
    pot = from_gram(gram, pp[:, :, None], pp[:, None, :], name)
    return 0.5 * (kernel * pot).sum((1, 2))


def dense_pairwise_grad(y: torch.Tensor, kernel: torch.Tensor, name: str, scale: float = 1.0,
                        out: torch.Tensor | None = None, sym: torch.Tensor | None = None,
                        degree: torch.Tensor | None = None) -> torch.Tensor:
    """``scale`` times the gradient in y of ``dense_pairwise(y, kernel, name).sum()``, added to ``out``.

    Every P here is symmetric, P(p, q) = P(q, p), so the sum over pairs of W equals that of its symmetric
    part S = (W + W^T) / 2 (``dense_affinities`` is symmetric only up to float noise: ``cdist``). The
    gradient is then A Y + 2 diag(S dP/d||y_i||^2 1) Y with A = S * dP/d(y_i . y_j) (N, M, M), evaluated
    as Y^T A (K rows). BL and Q take the fast path: -S Y and D Y - S Y, D = diag(W 1) (as in ``dense_pairwise``).

    Args:
        y: (N, K, H, W) distributions. kernel: (N, M, M). name: relaxation.
        scale: factor of the gradient (the solver's lambda).
        out: contiguous (N, K, H, W) tensor the gradient is added to in place (default: a new zero tensor).
        sym, degree: S and W 1 (N, M) if already computed (the solver does so once per solve).

    Returns:
        ``out``.
    """
    check_name(name)
    n, k = y.shape[:2]
    out = torch.zeros_like(y, memory_format=torch.contiguous_format) if out is None else out
    sym = 0.5 * (kernel + kernel.mT) if sym is None else sym
    acc, yk = out.view(n, k, -1), y.reshape(n, k, -1)        # (N, K, M)
    if name in ("BL", "Q"):
        acc.baddbmm_(yk, sym, alpha=-scale)                  # -Y^T S = -(S Y)^T
        if name == "Q":
            degree = kernel.sum(2) if degree is None else degree
            acc.addcmul_(degree[:, None], yk, value=scale)
        return out
    pp = torch.linalg.vecdot(yk, yk, dim=1)                  # (N, M)
    gram = torch.bmm(yk.transpose(1, 2), yk)                 # (N, M, M)  y_i . y_j
    d_dot, d_pi, _ = gram_partials(gram, pp[:, :, None], pp[:, None, :], name)
    acc.baddbmm_(yk, sym * d_dot, alpha=scale)               # Y^T A = (A Y)^T, A symmetric
    if d_pi is not None:                                     # the j-side partial gives the same sum (symmetry)
        acc.addcmul_((sym * d_pi).sum(2)[:, None], yk, value=2 * scale)
    return out
