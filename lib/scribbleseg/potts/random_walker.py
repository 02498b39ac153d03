"""Closed-form pseudo-labels for the quadratic case H_Q + P_Q (the "random walker" of Grady 2006),
the reference the paper's solver is checked against in App. B (soft Jaccard 99.2% over 100 images).

With H_Q(sigma_i, y_i) = ||sigma_i - y_i||^2 / 2 and P_Q on a graph with weights w, the energy
E(y) = eta sum_{i in U} ||sigma_i - y_i||^2 / 2 + lambda sum_{i<j} w_ij ||y_i - y_j||^2 / 2  (U = unseeded)
is a convex quadratic; setting its gradient on U to zero gives one sparse linear system for all K:

    (eta I + lambda L_UU) Y_U = eta Sigma_U + lambda W_US Y_S,     L = D - W  (graph Laplacian)

Its solution lies in the simplex (rows sum to 1 and (eta I + lambda L_UU) is an M-matrix), so it is
the optimum over Y_Omega as well. Solved with ``scipy.sparse.linalg.splu`` (one factorisation, K
right-hand sides). Works on one image of the grid (NN) neighbourhood.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from scribbleseg.constants import IGNORE_INDEX


def grid_graph(w: np.ndarray) -> sp.csr_matrix:
    """Symmetric sparse W (M, M) of a 4-neighbour grid from w (2, h, w) of ``grid_affinities``."""
    _, h, wd = w.shape
    idx = np.arange(h * wd).reshape(h, wd)
    rows = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    cols = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    vals = np.concatenate([w[0, :, :-1].ravel(), w[1, :-1, :].ravel()])
    half = sp.coo_matrix((vals, (rows, cols)), shape=(h * wd, h * wd))
    return (half + half.T).tocsr()


def quadratic_optimum(sigma: torch.Tensor, seeds: torch.Tensor, w: torch.Tensor, eta: float, lam: float) -> torch.Tensor:
    """Exact minimiser of H_Q + P_Q for one image.

    Args:
        sigma: (K, h, w) predictions. seeds: (h, w) long labels or IGNORE_INDEX. w: (2, h, w) grid affinities.
        eta, lam: weights of the unary and pairwise terms.

    Returns:
        y (K, h, w) float64, one-hot on the seeds.
    """
    k, h, wd = sigma.shape
    s = seeds.reshape(-1).cpu().numpy()
    sig = sigma.reshape(k, -1).T.double().cpu().numpy()           # (M, K)
    W = grid_graph(w.double().cpu().numpy())
    lap = sp.diags(np.asarray(W.sum(1)).ravel()) - W                # L = D - W
    seeded = s != IGNORE_INDEX
    U, S = np.flatnonzero(~seeded), np.flatnonzero(seeded)
    y = np.zeros((h * wd, k))
    y[S, s[S]] = 1.0
    A = eta * sp.identity(len(U)) + lam * lap[U][:, U]              # eta I + lambda L_UU
    b = eta * sig[U] + lam * (W[U][:, S] @ y[S])                    # eta Sigma_U + lambda W_US Y_S
    y[U] = spla.splu(A.tocsc()).solve(b)
    return torch.from_numpy(y.T.reshape(k, h, wd).copy())


def soft_jaccard(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Soft Jaccard index sum min(a, b) / sum max(a, b) over classes and (masked) positions.

    Args:
        a, b: (K, h, w) non-negative (soft labels). mask: optional (h, w) bool of the positions to count.
    """
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    if mask is not None:
        lo, hi = lo * mask, hi * mask
    return float(lo.sum() / hi.sum().clamp_min(1e-12))
